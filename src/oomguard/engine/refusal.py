"""A refusal that explains itself: not even one sample fits the budget.

It says what was already in use before the step (this process, its loader
workers, other child processes, each page counted once), what one sample
added, and the changes that the numbers say would make it fit: fewer loader
workers when their own memory covers the excess, less data held in memory when
the tensors and arrays this process holds besides its model do, a smaller input
or model when one sample's own memory does, and the limit that would do. The same words go to the run's events
(``no_fit``) and to the error the user sees.
"""

from __future__ import annotations

import math

from oomguard import events as ev
from oomguard.errors import MemoryBudgetError
from oomguard.memory.in_use import InUse
from oomguard.units import format_bytes

#: A suggested limit leaves this share of room above what microbatch 1 needed.
LIMIT_MARGIN = 1.1
_ROUND_TO = 100 * 1000**2


class NoFitError(MemoryBudgetError):
    """Microbatch 1 does not fit; ``event`` says why in numbers (the Guard writes it to the run's events)."""

    def __init__(self, message: str, event: ev.NoFit) -> None:
        super().__init__(message)
        self.event = event


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def advice(needed: int, budget: int, before: InUse | None) -> list[str]:
    """What would make microbatch 1 fit, from the numbers: each change that covers the excess, and the limit
    that would do."""
    over = needed - budget
    out: list[str] = []
    if before is not None:
        if before.worker_count and before.workers_private >= over:
            out.append(f"use fewer loader workers (workers=0 / num_workers=0 gives back the "
                       f"{format_bytes(before.workers_private)} they hold of their own)")
        if before.data >= over:
            out.append(f"hold less data in memory: this process holds {format_bytes(before.data)} in "
                       f"tensors and arrays besides the model and optimizer state (a dataset loaded into "
                       f"memory? read it from disk, or a smaller part of it)")
        both = before.workers_private + before.data
        if not out and before.worker_count and before.data and both >= over:
            out.append(f"use fewer loader workers and hold less data in memory (together "
                       f"{format_bytes(both)})")
        sample = needed - before.total
        if sample >= over:
            out.append(f"lower imgsz (or the input size) or use a smaller model: one sample adds "
                       f"{format_bytes(sample)}")
    else:
        out.append("lower imgsz (or the input size) or use a smaller model")
    limit = math.ceil(needed * LIMIT_MARGIN / _ROUND_TO) * _ROUND_TO
    out.append(f"raise memory_limit to at least {format_bytes(limit)}")
    return out


def _held(before: InUse) -> str:
    parts = [f"this process {format_bytes(before.process)}"]
    if before.worker_count:
        workers = _count(before.worker_count, "loader worker", "loader workers")
        parts.append(f"{workers} {format_bytes(before.workers)} "
                     f"({format_bytes(before.workers_private)} of it their own)")
    if before.other_count:
        parts.append(f"{_count(before.other_count, 'other child process', 'other child processes')} "
                     f"{format_bytes(before.others)}")
    return ", ".join(parts)


def refuse(phase: str, needed: int, budget: int | None, before: InUse | None,
           head: str | None = None) -> NoFitError:
    """The error (and its ``no_fit`` event) for ``phase`` whose microbatch 1 needed ``needed`` bytes.

    ``before`` is what was in use when the step began (None on a discrete GPU). ``head`` replaces
    the first sentence (what failed).
    """
    words = "training" if phase == "train" else "evaluation"
    head = head or (f"one sample does not fit the memory budget in {words}: it needs at least "
                    f"{format_bytes(needed)} against a budget of {format_bytes(budget)}")
    if before is not None:
        sample = needed - before.total
        head += (f"; already in use before the step: {format_bytes(before.total)} "
                 f"({_held(before)}), and one sample adds {format_bytes(sample)}")
    options = advice(needed, budget, before) if budget is not None else []
    message = head if not options else f"{head}\nto make it fit: {'; or '.join(options)}"
    event = ev.NoFit(
        phase=phase, needed=needed, budget=budget, advice=options,
        in_use=before.total if before else None, process=before.process if before else None,
        data=before.data if before else None, workers=before.workers if before else None,
        workers_private=before.workers_private if before else None,
        worker_count=before.worker_count if before else None, others=before.others if before else None,
        other_count=before.other_count if before else None,
        sample=needed - before.total if before else None, counted_as=before.counted_as if before else None,
    )
    return NoFitError(message, event)
