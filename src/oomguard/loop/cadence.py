"""How often the loop checkpoints by time, besides at every epoch's end: ``checkpoint_every``.

A duration is taken as given. ``auto`` (the default) follows what a
checkpoint costs the training: the time the loop waits for the in-memory
snapshot, plus the background write, which competes with training for the
cores (an upper bound: on an idle core it costs nothing). Checkpointing every
``cost / 1%`` keeps that cost under 1% of the training time; the interval is
held between 30 s (a cheap model gains nothing from more) and 2 minutes (the
most work a kill may lose). Until a checkpoint has been measured, the
shortest interval, so the first measurement comes early.
"""

from __future__ import annotations

from typing import Literal

SHARE = 0.01  # of the training time, at most, spent on timed checkpoints
SHORTEST = 30.0
LONGEST = 120.0


def auto_interval(cost: float) -> float:
    """Seconds between checkpoints that each cost ``cost`` seconds of training."""
    return min(LONGEST, max(SHORTEST, cost / SHARE))


class Cadence:
    """The current interval between timed checkpoints; ``auto`` learns it from each one measured."""

    def __init__(self, every: float | Literal["auto"]) -> None:
        self.auto = every == "auto"
        self.interval = SHORTEST if every == "auto" else float(every)
        self.cost: float | None = None  # seconds the last measured checkpoint cost

    def measured(self, snapshot_seconds: float, write_seconds: float) -> float:
        """Learn from one checkpoint (its snapshot and its write); the interval from now on."""
        self.cost = snapshot_seconds + write_seconds
        if self.auto:
            self.interval = auto_interval(self.cost)
        return self.interval
