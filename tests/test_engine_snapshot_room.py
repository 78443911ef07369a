"""Room for the checkpointer's snapshot on memory shared with the host: kept once, not twice.

The loop hands the Guard each snapshot's size right after taking it, while the copy is held (it is being
written). The sizes are re-planned from what was held between steps, with the room kept for the copy; a
reading taken now would count the copy a second time.
"""

from __future__ import annotations

from engine_fakes import MB, FakeDevice
from oomguard.engine.phase import Phase
from oomguard.engine.recovery import MemoryModel
from oomguard.engine.sizing import Sizer
from oomguard.events import EventLog
from oomguard.memory.budget import Budget


class SharedMemory(FakeDevice):
    unified = True  # the budget counts host memory: the snapshot's copy lives in it


class Reading:
    """What the process holds now, as the meter reads it (a stand-in for the host's memory)."""

    def __init__(self, held: int) -> None:
        self.held = held

    def current(self, fresh: bool = True) -> int:
        return self.held


def sizer_at(microbatch: int, reading: Reading, events: EventLog) -> Sizer:
    train = Phase("train", microbatch, 64, MemoryModel(fixed=0, per_sample=10 * MB))
    sizer = Sizer(train, Phase("eval", 0, None), Budget(1300 * MB, "test"), SharedMemory(), reading,  # type: ignore[arg-type]
                  events, headroom=0.9, grow_after=100)
    sizer.reserve, sizer.batch = 50 * MB, 64  # the probe's estimate of the snapshot
    return sizer


def test_a_snapshot_being_written_is_not_counted_twice() -> None:
    reading, events = Reading(1000 * MB), EventLog(None)
    sizer = sizer_at(22, reading, events)  # 1000 + 22 x 10 MB under 1000 + 0.9 x (1300 - 50 - 1000)
    reading.held += 50 * MB + 30_000  # the copy, a little over the probe's estimate, held while written
    sizer.make_room(50 * MB + 30_000)
    assert sizer.train.size == 22 and not events.history
    assert sizer.reserve == 50 * MB + 30_000


def test_a_snapshot_larger_than_the_room_kept_shrinks_the_step() -> None:
    reading, events = Reading(1000 * MB), EventLog(None)
    sizer = sizer_at(22, reading, events)
    reading.held += 150 * MB
    sizer.make_room(150 * MB)
    assert sizer.train.size == 13  # 1000 + 13 x 10 MB under 1000 + 0.9 x (1300 - 150 - 1000)
    [shrink] = events.history
    assert (shrink["event"], shrink["from"], shrink["to"]) == ("shrink", 22, 13)
    assert shrink["reason"] == "room for a 150.0 MB checkpoint snapshot"
