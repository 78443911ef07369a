"""Why a run stops before its last epoch, and what each reason means for the process's exit status.

A stop is asked for at any time (a signal handler, the memory guardian, the
checkpoint writer) and taken at the next step boundary, after a checkpoint.
It travels as a :class:`StopRequest`, never as loose strings, from whoever asks
to the ``stop`` event, the console and the exit status.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from oomguard.codes import EXIT_INTERRUPTED, EXIT_PRESSURE


class StopCause(enum.Enum):
    """What asked the run to stop; the value is the ``stop`` event's ``cause``."""

    SIGNAL = "signal"  # Ctrl-C, SIGTERM: someone asked
    PRESSURE = "pressure"  # other programs took the memory; the supervisor waits for it, then resumes
    CHECKPOINTS_FAILING = "checkpoints_failing"  # no checkpoint could be written for a long time
    REHEARSAL = "rehearsal"  # rehearse=true trained as far as it meant to
    PEER = "peer"  # another rank of the group stopped

    @property
    def exit_code(self) -> int:
        return EXIT_PRESSURE if self is StopCause.PRESSURE else EXIT_INTERRUPTED


@dataclass(frozen=True)
class StopRequest:
    """A stop asked for: its cause, one line for people and, for pressure, the memory to wait for."""

    cause: StopCause
    reason: str
    need: int | None = None

    @property
    def exit_code(self) -> int:
        return self.cause.exit_code
