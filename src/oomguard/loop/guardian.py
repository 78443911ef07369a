"""The built-in loop under the Guard's memory watch: what a checkpoint and a stop mean in this loop.

The Guard checks pressure, leaks and fragmentation at every step
(:mod:`oomguard.memory.watch`, one implementation for every loop). Here the
built-in loop tells it how to act: an emergency checkpoint is the loop's own
(:class:`~oomguard.loop.checkpointing.Checkpointing`), and pressure that
persists asks the loop to stop at this step with exit status 75 (the stop's
checkpoint follows); the supervisor waits for memory, then resumes.
"""

from __future__ import annotations

from collections.abc import Callable

from oomguard.loop.callbacks import Callback
from oomguard.loop.checkpointing import Checkpointing
from oomguard.loop.state import State
from oomguard.loop.stopping import StopCause
from oomguard.memory.pressure import PressureDecision


class LoopProtection:
    """The Guard's :class:`~oomguard.engine.protection.Protection` for the built-in loop."""

    def __init__(self, state: State, checkpointing: Checkpointing) -> None:
        self.state, self.checkpointing = state, checkpointing

    def step_number(self) -> int:
        return self.state.step

    def before_step(self) -> None:
        """Timed checkpoints are the loop's own callback's (at each step's end)."""

    def after_step(self) -> None:
        pass

    def save_now(self) -> None:
        self.checkpointing.save_now(self.state)

    def stop_for_pressure(self, decision: PressureDecision) -> None:
        self.state.request_stop(StopCause.PRESSURE, decision.words(), need=decision.need)


class MemoryGuardian(Callback):
    """Hands the Guard this loop's protection for the stage that starts."""

    def __init__(self, state: State, checkpointing: Checkpointing,
                 console: Callable[[str], None] | None = None) -> None:
        self.protection = LoopProtection(state, checkpointing)
        self.console = console

    def on_start(self, state: State) -> None:
        state.guard.protect(self.protection, self.console)
