"""Near a host-memory budget the Guard trims the C heap only before the steps it must judge afresh.

Real CPU steps, real RSS, in a child process whose large blocks glibc maps
on their own (``MALLOC_MMAP_THRESHOLD_`` fixed), so that no step's peak holds
pages an earlier one freed and the count of trims is the policy's alone.
Trimming before every step made the CPU re-fault the pages each step reuses
(12-15% of a step in ``benchmarks/budget.py``); the Guard trims after a plan
or an evaluation, and, once an untrimmed step peaked over its target, before
every step until the next plan.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from oomguard.devices.cpu import CPUDevice
from wide_model import squared_error, wide_setup

MB = 1_000_000
BATCH = 32
STEPS = 12


class CountingCPU(CPUDevice):
    """The CPU, counting the heap trims asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.trims = 0

    def release_host_heap(self) -> None:
        self.trims += 1
        super().release_host_heap()


def child(out: Path) -> None:
    from oomguard import Guard, host
    from oomguard.devices import release_host_memory

    torch.set_num_threads(1)
    model, batch = wide_setup(BATCH)
    device = CountingCPU()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    release_host_memory()
    start = host.tree_memory(precise=True).total
    guard = Guard(model, optimizer, memory_limit=start + 120 * MB, device=device)
    guard.plan(batch, squared_error)
    near = guard.last_step_peak > 0.75 * (guard.budget.limit or 0)  # where trims are considered at all
    for _ in range(STEPS):
        guard.step(batch, squared_error)
    after_steps = device.trims
    with torch.no_grad():
        guard.evaluate(batch, lambda net, part: net(part[0]))
    guard.step(batch, squared_error)
    kinds = [event["event"] for event in guard.events.history]
    report = {"near": near, "after_steps": after_steps, "after_evaluation": device.trims, "events": kinds}
    (out / "report.json").write_text(json.dumps(report))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap")
def test_near_a_host_budget_the_heap_is_trimmed_after_a_plan_and_an_evaluation_not_every_step(
        tmp_path: Path) -> None:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    subprocess.run([sys.executable, __file__, str(tmp_path)], check=True, timeout=120, env=env)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["near"]
    assert report["after_steps"] == 1  # the first step after the plan (the old Guard: all 12)
    assert report["after_evaluation"] == 2  # validation's freed pages are not the next step's peak
    assert "oom" not in report["events"] and "shrink" not in report["events"]


if __name__ == "__main__":
    child(Path(sys.argv[1]))
