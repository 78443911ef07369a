"""What the Guard asks of whoever checkpoints the run it trains, when memory runs low.

The Guard watches memory at every step (pressure, leaks, fragmentation:
:mod:`oomguard.memory.watch`). What a checkpoint is and what stopping means
belongs to the loop around it: a hand-written loop's own checkpoints
(:class:`~oomguard.engine.resumable.LoopCheckpoints`), the built-in loop's
(:mod:`oomguard.loop.guardian`), or none (:class:`Unprotected`).
"""

from __future__ import annotations

from typing import Protocol

from oomguard.errors import MemoryPressureError
from oomguard.memory.pressure import PressureDecision


class Protection(Protocol):
    def step_number(self) -> int:
        """The run's step count now (for events), across resumes."""
        ...

    def before_step(self) -> None:
        """At the start of a step, before anything changes: a timed checkpoint when one is due."""

    def after_step(self) -> None:
        """A step finished (its optimizer step is done)."""

    def save_now(self) -> None:
        """An emergency checkpoint at this step boundary, written before this returns."""

    def stop_for_pressure(self, decision: PressureDecision) -> None:
        """Pressure persisted where no smaller microbatch is left: stop (after a checkpoint)."""


class Unprotected:
    """No checkpoints (a Guard without ``run_dir``): persisting pressure raises MemoryPressureError."""

    def __init__(self) -> None:
        self.steps = 0

    def step_number(self) -> int:
        return self.steps

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        self.steps += 1

    def save_now(self) -> None:
        pass

    def stop_for_pressure(self, decision: PressureDecision) -> None:
        raise MemoryPressureError(f"{decision.words()}, even at microbatch 1; no checkpoint was written "
                                  f"(give the Guard a run_dir); continue when {decision.need:,} bytes are "
                                  "available")
