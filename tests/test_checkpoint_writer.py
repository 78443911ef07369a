"""AsyncCheckpointer: the copy is taken at submit, writes happen aside, a failing disk stops the run late."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from oomguard.checkpoint import AsyncCheckpointer, CheckpointStore, SaveResult, capture_state, snapshot_bytes
from oomguard.events import EventLog, read_events


class GatedStore(CheckpointStore):
    """A store whose writes start only when the test opens the gate."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()

    def save(self, state: Any, step: int, best: bool = False) -> SaveResult:
        self.gate.wait()
        return super().save(state, step, best)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_submitted_state_is_unaffected_by_later_optimizer_steps(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    model(torch.randn(3, 5)).sum().backward()
    optimizer.step()
    at_submit = {key: value.clone() for key, value in model.state_dict().items()}
    store = GatedStore(tmp_path / "weights", console=lambda message: None)
    writer = AsyncCheckpointer(store)
    state = capture_state(model=model, optimizer=optimizer, epoch=0, step=1)
    writer.submit(state, step=1)
    assert writer.busy and writer.pending_bytes == snapshot_bytes(state) > 0
    for _ in range(3):  # in-place updates while the write has not even started
        optimizer.zero_grad()
        model(torch.randn(3, 5)).sum().backward()
        optimizer.step()
    assert not torch.equal(model.weight, at_submit["weight"])
    store.gate.set()
    result = writer.close()
    assert result is not None and result.ok and writer.pending_bytes == 0
    saved = torch.load(store.last, weights_only=True)
    for key, value in at_submit.items():
        assert torch.equal(saved["model"][key], value)


def test_failing_disk_is_reported_and_stops_the_run_only_after_a_long_time(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where the run directory should be")
    events = EventLog(tmp_path / "events.jsonl")
    store = CheckpointStore(tmp_path / "blocker" / "weights", events=events, console=lambda message: None)
    clock = Clock()
    writer = AsyncCheckpointer(store, stop_after=1800.0, min_failures=3, clock=clock)
    state = {"model": {"w": torch.ones(3)}, "epoch": 0}
    for step in range(1, 6):  # five quick failures: not yet a reason to stop
        writer.submit(state, step)
        clock.now += 10
    writer.wait()
    assert writer.failures == 5 and "ENOTDIR" in (writer.last_error or "") and not writer.should_stop
    clock.now += 1800
    assert writer.should_stop
    assert writer.stop_reason.startswith("no checkpoint could be saved for ")
    assert "(5 attempts failed, last: Not a directory [ENOTDIR]); training stops" in writer.stop_reason
    errors = [e["step"] for e in read_events(tmp_path / "events.jsonl") if "error" in e]
    assert errors == [1, 2, 3, 4, 5]

    (tmp_path / "blocker").unlink()  # the disk recovers
    writer.submit(state, 6)
    assert writer.wait().ok and writer.failures == 0 and writer.last_error is None
    assert not writer.should_stop


def test_a_bug_in_the_writer_is_raised_on_the_training_thread(tmp_path: Path) -> None:
    class BrokenStore(CheckpointStore):
        def save(self, state: Any, step: int, best: bool = False) -> SaveResult:
            raise ValueError("bug in the store")

    writer = AsyncCheckpointer(BrokenStore(tmp_path / "weights"))
    writer.submit({"model": {}}, step=1)
    with pytest.raises(ValueError, match="bug in the store"):
        writer.wait()
    assert writer.wait() is None  # raised once, not forever


def test_due_follows_checkpoint_every_from_the_last_submit(tmp_path: Path) -> None:
    clock = Clock()
    writer = AsyncCheckpointer(CheckpointStore(tmp_path / "weights"), every=60.0, clock=clock)
    assert not writer.due()
    clock.now += 60
    assert writer.due()
    writer.submit({"model": {"w": torch.zeros(1)}}, step=1)
    writer.wait()
    assert not writer.due()
    assert not AsyncCheckpointer(CheckpointStore(tmp_path / "weights"), every=None, clock=clock).due()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_writer_thread_yields_the_cpu_to_training_threads(tmp_path: Path) -> None:
    seen: list[int] = []

    class PriorityStore(CheckpointStore):
        def save(self, state: Any, step: int, best: bool = False) -> SaveResult:
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return super().save(state, step, best)

    before = os.getpriority(os.PRIO_PROCESS, 0)
    writer = AsyncCheckpointer(PriorityStore(tmp_path / "weights"), nice=10)
    writer.submit({"model": {"w": torch.zeros(1)}}, step=1)
    assert writer.wait().ok
    assert seen == [min(19, before + 10)] and os.getpriority(os.PRIO_PROCESS, 0) == before
