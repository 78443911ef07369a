"""Memory pressure: the monitor's decisions, then a real trainer squeezed inside a cgroup by a balloon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cgroup_helpers import MB, join, memory_cgroup, start_balloon
from oomguard import Guard
from oomguard.codes import EXIT_PRESSURE
from oomguard.events import EventLog, read_events
from oomguard.memory.pressure import AUTO_FLOOR, Action, PressureMonitor, resolve_min_available

GB = 1024**3


def test_auto_min_available_is_a_share_with_a_floor() -> None:
    assert resolve_min_available("auto", 64 * GB) == int(0.05 * 64 * GB)
    assert resolve_min_available("auto", 2 * GB) == AUTO_FLOOR
    assert resolve_min_available(123, 64 * GB) == 123


def test_the_monitor_acts_at_once_then_every_few_checks_then_gives_up() -> None:
    monitor = PressureMonitor(min_available=500 * MB, patience=3, give_up=8)
    assert monitor.check(600 * MB) is Action.OK
    actions = [monitor.check(100 * MB) for _ in range(8)]
    assert actions == [Action.ACT, Action.WAIT, Action.WAIT, Action.ACT, Action.WAIT, Action.WAIT,
                       Action.ACT, Action.EXIT]
    assert monitor.check(700 * MB) is Action.OK and monitor.low == 0
    assert monitor.need(peak=1 * GB, total=16 * GB) == 1 * GB + 500 * MB


def test_growing_swap_while_memory_is_low_is_pressure() -> None:
    monitor = PressureMonitor(min_available=500 * MB)
    assert monitor.check(2 * GB, swap_used=0) is Action.OK  # the baseline, taken while memory is plentiful
    assert monitor.check(800 * MB, swap_used=100 * MB) is Action.OK
    assert monitor.check(800 * MB, swap_used=700 * MB) is Action.ACT


@pytest.fixture
def cgroup() -> Iterator[Path]:
    """A 1.5 GB memory cgroup."""
    with memory_cgroup(1536 * MB) as group:
        yield group


def test_pressure_checkpoints_shrinks_then_exits_75(cgroup: Path, tmp_path: Path) -> None:
    balloon = start_balloon(cgroup, 600 * MB)
    try:
        env = {**os.environ, "OOMGUARD_CACHE": str(tmp_path / "cache")}
        done = subprocess.run(
            [sys.executable, "-m", "oomguard", "train", "--no-supervise", "dev_samples=256", "epochs=3",
             "batch=16", "microbatch=4", "val_batch=16", "imgsz=16", "warmup_epochs=0", "workers=0",
             "memory_limit=1200MB", "min_available=1GB"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
            preexec_fn=lambda: join(cgroup))
    finally:
        balloon.kill()
        balloon.wait()
    assert done.returncode == EXIT_PRESSURE, done.stdout + done.stderr
    run = tmp_path / "runs" / "exp"
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events if e["event"] in ("pressure", "checkpoint", "shrink", "stop")]
    assert kinds[:6] == ["pressure", "checkpoint", "shrink", "pressure", "checkpoint", "shrink"]
    assert kinds[6:] == ["pressure", "checkpoint", "stop"]  # the last checkpoint, then the exit
    shrinks = [(e["from"], e["to"], e["reason"]) for e in events if e["event"] == "shrink"]
    assert shrinks == [(4, 2, "memory pressure"), (2, 1, "memory pressure")]
    last = [e for e in events if e["event"] == "pressure"][-1]
    assert last["action"] == "exit" and last["microbatch"] == 1
    assert isinstance(last["need"], int) and last["need"] > last["min_available"] == 10**9
    assert (run / "weights" / "last.pt").is_file()
    assert "memory pressure" in done.stdout and "--resume" in done.stdout


def test_guard_shrink_takes_one_rung_and_says_why(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 2)
    guard = Guard(model, torch.optim.SGD(model.parameters(), lr=0.1), memory_limit="auto", microbatch=4,
                  device="cpu", events=EventLog(tmp_path / "events.jsonl"))
    assert [guard.shrink("memory pressure") for _ in range(3)] == [2, 1, 1]
    shrinks = [(e["from"], e["to"], e["reason"]) for e in read_events(tmp_path / "events.jsonl")
               if e["event"] == "shrink"]
    assert shrinks == [(4, 2, "memory pressure"), (2, 1, "memory pressure")]
    assert guard.microbatch == 1
