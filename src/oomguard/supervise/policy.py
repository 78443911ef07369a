"""Restart or stop? A pure decision from the cause of a death and the deaths before it.

- a usage ``error`` (bad config, data, run directory) is never retried, nor
  a child that was ``interrupted`` (someone asked it to stop);
- a ``bug`` is retried once (it may have been transient) and never again:
  crash loops are pointless;
- the same failure at the same step three times stops the run: the plan
  cannot get past that point (a step that is unknown counts as the same);
- ``max_restarts`` bounds everything, ``pressure`` pauses included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from oomguard.supervise.attribution import Cause

SAME_FAILURE_LIMIT = 3

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
class Decision:
    restart: bool
    why: str = ""  # for a stop: the diagnosis, one line


Failure = tuple[str, int | None]  # (cause kind, step)


def decide(
    cause: Cause, step: int | None, past: Sequence[Failure], restarts: int, max_restarts: int
) -> Decision:
    """Whether to restart after ``cause`` at ``step``, given the ``past`` failures and restarts so far."""
    advice = ADVICE.get(cause.kind, "")
    if cause.kind in ("error", "interrupted"):
        return Decision(False, f"{cause.reason}; {advice}")
    if cause.kind == "bug" and any(kind == "bug" for kind, _ in past):
        error = cause.error or cause.reason
        return Decision(False, f"failed again with an error that is not about memory ({error}); "
                        f"not retried further: {advice}")
    if cause.kind != "pressure":
        repeats = 1 + sum(1 for failure in past if failure == (cause.kind, step))
        if repeats >= SAME_FAILURE_LIMIT:
            where = f"step {step}" if step is not None else "the same point"
            return Decision(False, f"the same failure ({cause.kind}: {cause.reason}) at {where} "
                            f"{repeats} times; {advice}")
    if restarts >= max_restarts:
        return Decision(False, f"{cause.reason}; no restarts left (max_restarts={max_restarts}); {advice}")
    return Decision(True)
