"""Restart or stop, and how long to wait first? A pure decision from a death and the deaths before it.

- a usage ``error`` (bad config, data, run directory) is never retried, nor
  a child that was ``interrupted`` (someone asked it to stop);
- a ``bug`` is retried once (it may have been transient) and never again:
  crash loops are pointless;
- a deterministic failure (a bug, an out-of-memory error, a memory kill)
  that happens again at the same step with the same plan stops the run at
  the third time: nothing will change the fourth. The ladder changes the plan
  after each memory death, so this stops a run only where the plan can no
  longer change (the bottom of the ladder, or a command restarted as it was);
- an ``unexplained_kill`` (someone or something outside killed it: a
  scheduler, a user, the chaos of a shared machine) is never "the same
  failure": it is restarted after a wait that doubles with each one in a row
  that made no progress (1 s, 2 s, 4 s ... at most 60 s), so a kill loop
  does not spin while a run that keeps moving forward is not slowed down;
- ``max_restarts`` bounds everything, ``pressure`` pauses included.

"At step N" means the attempt reached step N. One that died before its
resume completed (``step`` None) failed in start-up, which is reported so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from oomguard.supervise.attribution import Cause

SAME_FAILURE_LIMIT = 3
DETERMINISTIC = ("bug", "oom", "memory_kill")
FIRST_WAIT = 1.0  # seconds before restarting after a first unexplained kill
LONGEST_WAIT = 60.0

ADVICE = {
    "memory_kill": "give it more memory (close other programs, raise memory_cap), or allow_degrade=true",
    "oom": "give it more memory (close other programs, raise memory_cap), or allow_degrade=true",
    "unexplained_kill": "something outside oomguard kills it (a scheduler, a user, the system log says who)",
    "bug": "its last lines above show the error; fix it, then resume",
    "error": "fix what the message says, then run again",
    "pressure": "other programs hold the memory it needs; close some and resume",
    "interrupted": "resume it when you want it to go on",
}


@dataclass(frozen=True)
class Failure:
    """One death as the policy remembers it."""

    kind: str
    step: int | None  # the step the attempt reached; None: in start-up, or unknown (a command)
    plan: str = ""  # what the attempt ran with (its overrides, its command): a new plan is a new try
    startup: bool = False  # it died before its resume completed

    @property
    def where(self) -> str:
        if self.step is not None:
            return f"step {self.step}"
        return "start-up (before its resume completed)" if self.startup else "the same point"


@dataclass(frozen=True)
class Decision:
    restart: bool
    why: str = ""  # for a stop: the diagnosis, one line


def decide(cause: Cause, failure: Failure, past: Sequence[Failure], restarts: int,
           max_restarts: int) -> Decision:
    """Whether to restart after ``cause`` (remembered as ``failure``) given the ``past`` ones and restarts."""
    advice = ADVICE.get(cause.kind, "")
    if cause.kind in ("error", "interrupted"):
        return Decision(False, f"{cause.reason}; {advice}")
    if cause.kind == "bug" and any(earlier.kind == "bug" for earlier in past):
        error = cause.error or cause.reason
        return Decision(False, f"failed again with an error that is not about memory ({error}); "
                        f"not retried further: {advice}")
    if cause.kind in DETERMINISTIC:
        repeats = 1 + sum(1 for earlier in past if earlier == failure)
        if repeats >= SAME_FAILURE_LIMIT:
            return Decision(False, f"the same failure ({cause.kind}: {cause.reason}) at "
                            f"{failure.where} {repeats} times with the same plan; {advice}")
    if restarts >= max_restarts:
        return Decision(False, f"{cause.reason}; no restarts left (max_restarts={max_restarts}); {advice}")
    return Decision(True)


def backoff(in_a_row: int, first: float = FIRST_WAIT, longest: float = LONGEST_WAIT) -> float:
    """Seconds to wait before the restart after the ``in_a_row``-th unexplained kill in a row (from 1)."""
    if in_a_row < 1 or first <= 0:
        return 0.0
    return min(longest, first * 2.0 ** min(in_a_row - 1, 32))
