"""End to end on the CPU with real memory: a batch whose activations need ~300 MB under a ~150 MB budget.

The Guard runs in a child process inside a memory cgroup of its own, so that
the kernel's charge watermark there (``memory.max_usage_in_bytes``) is the
proof that the budget held: the Guard resets the process's own RSS high-water
mark before each measured step (``/proc/self/clear_refs``), and ``ru_maxrss``
is reset with it. The parent computes the whole-batch update to compare with.

glibc's heap makes RSS depend on history: freed large blocks stay resident
and are reused, and the size above which a block is mapped on its own moves
with what was freed. With ``MALLOC_MMAP_THRESHOLD_`` fixed, every large tensor
is mapped and given back when freed, so a step's peak is its live tensors and
the plan must keep the budget exactly; with the default heap it keeps it within
the heap's scatter (measured here: up to 28% of the room over), and a step over
it is redone smaller.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from cgroup_helpers import join, memory_cgroup
from wide_model import squared_error, wide_setup

BATCH = 64
MB = 1_000_000
ROOM = 200 * MB
#: The malloc settings the child runs under: glibc's default (a threshold that moves), or a fixed one.
HEAPS = {"default": {}, "fixed-mmap-threshold": {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}}


def setup() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    return wide_setup(BATCH, torch.float64)


loss_fn = squared_error


def child(out: Path) -> None:
    from oomguard import Guard, host
    from oomguard.devices import release_host_memory

    group, _ = host.own_cgroup_dirs()
    assert group is not None
    # One intra-op thread: with two, glibc opens an arena per contending thread and heap layout (so RSS)
    # varies with machine load by tens of MB, a good share of this test's 200 MB room.
    torch.set_num_threads(1)
    model, batch = setup()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)  # the first optimizer imports ~70 MB of torch
    release_host_memory()
    # The budget counts each page once: of the pages this process shares with others (torch's
    # libraries), only its share. The cgroup is charged for the pages this process brought in: its own.
    start = host.tree_memory(precise=True)
    budget = start.total + ROOM
    (group / "memory.max_usage_in_bytes").write_text("0")  # the watermark starts again from the usage now
    charged = int((group / "memory.usage_in_bytes").read_text())
    guard = Guard(model, optimizer, memory_limit=budget)
    guard.step(batch, loss_fn)
    grew = int((group / "memory.max_usage_in_bytes").read_text()) - charged
    torch.save(model.state_dict(), out / "auto.pt")
    auto_events = guard.events.history

    # The same step with the whole batch asked for: over budget, measured, shrunk, redone.
    model, batch = setup()
    release_host_memory()
    guard = Guard(model, torch.optim.SGD(model.parameters(), lr=0.5), memory_limit=budget, microbatch=BATCH)
    guard.step(batch, loss_fn)
    torch.save(model.state_dict(), out / "fixed.pt")
    report = {"budget": budget, "room": budget - start.total, "grew": grew, "auto": auto_events,
              "fixed": guard.events.history}
    (out / "report.json").write_text(json.dumps(report))


def whole_batch_update() -> dict[str, torch.Tensor]:
    model, batch = setup()
    loss_fn(model, batch).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.5 * p.grad
    return model.state_dict()


def whole_batch_extra() -> int:
    from oomguard import host
    from oomguard.devices import release_host_memory

    model, batch = setup()
    release_host_memory()
    host.reset_peak_rss()
    start = host.process_rss()
    loss_fn(model, batch).backward()
    return (host.own_peak_rss() or 0) - start


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="real RSS accounting is checked on Linux")
@pytest.mark.parametrize("heap", sorted(HEAPS))
def test_guard_splits_to_stay_in_a_real_rss_budget(tmp_path: Path, heap: str) -> None:
    assert whole_batch_extra() > 2 * ROOM  # the premise: the whole batch cannot fit in one piece
    with memory_cgroup(8 * 1024 * MB) as group:
        subprocess.run([sys.executable, __file__, str(tmp_path)], check=True, timeout=240,
                       env={**os.environ, **HEAPS[heap]}, preexec_fn=lambda: join(group))
    report = json.loads((tmp_path / "report.json").read_text())
    reference = whole_batch_update()

    plan = next(e for e in report["auto"] if e["event"] == "plan")
    assert 1 < plan["microbatch"] < BATCH
    overs = [e for e in report["auto"] if e["event"] == "oom"]
    if heap == "default":
        # What the heap kept resident from earlier steps moves the peak of the same size by tens of MB
        # from run to run, beyond what the probe's scatter shows, and the probe itself measures one size
        # past its target: the charge stays within half the room over it (without the split it would be
        # twice the room), and a step that goes over is measured and redone smaller.
        assert report["grew"] <= 1.5 * report["room"]
        assert len(overs) <= 2
        assert len([e for e in report["auto"] if e["event"] == "shrink"]) >= len(overs)  # each one redone
    else:
        assert not overs
        assert report["grew"] <= report["room"]

    oom, shrink = (next(e for e in report["fixed"] if e["event"] == kind) for kind in ("oom", "shrink"))
    assert oom["microbatch"] == BATCH and oom["peak"] > report["budget"]
    assert shrink["from"] == BATCH and 1 < shrink["to"] < BATCH
    assert shrink["predicted"] < report["budget"]

    for name in ("auto", "fixed"):
        state = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        for key, value in reference.items():
            assert float((state[key] - value).norm() / value.norm()) < 1e-10, (name, key)


if __name__ == "__main__":
    child(Path(sys.argv[1]))
