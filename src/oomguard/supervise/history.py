"""What the training child left in its run directory: its plan, budget and last step.

The supervisor never imports the training loop; this is all it knows of it.
Only what the child wrote since its last ``start`` counts, so a plan from an
earlier attempt is never mistaken for the current one.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from oomguard import events as ev
from oomguard.rundir import RunDir
from oomguard.supervise.ladder import RELEASE_KEY, PlanState

_TAIL_BYTES = 8192


@dataclass(frozen=True)
class ChildReport:
    """The child's last attempt as its run directory tells it."""

    state: PlanState
    budget: int | None = None
    config: dict[str, Any] = field(default_factory=dict)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def child_report(events: Iterable[ev.Event], fallback_config: Mapping[str, Any],
                 overrides: Mapping[str, Any]) -> ChildReport:
    """The plan of the last attempt: its ``start`` config, then its plan/shrink/grow events.

    ``overrides`` (what the supervisor passed) win over the config where the child
    wrote no ``start`` of its own.
    """
    start: ev.Start | None = None
    since: list[ev.Event] = []
    for event in events:
        if isinstance(event, ev.Start):
            start, since = event, []
        else:
            since.append(event)
    config = dict(start.config or {}) if start is not None else dict(fallback_config)
    config.update(overrides)
    # Killed before any plan (during the probe, or with memory_limit=off): the whole batch was tried.
    microbatch = _int(config.get("microbatch")) or _int(config.get("batch"))
    eval_microbatch = _int(config.get("val_batch"))
    for event in since:
        if isinstance(event, ev.Plan):
            microbatch = _int(event.microbatch) or microbatch
            eval_microbatch = _int(event.eval_microbatch) or eval_microbatch
        elif isinstance(event, ev.Shrink | ev.Grow):
            if event.phase == "eval":
                eval_microbatch = _int(event.to) or eval_microbatch
            else:
                microbatch = _int(event.to) or microbatch
    device = (start.device if start is not None else None) or config.get("device") or "auto"
    state = PlanState(
        microbatch=microbatch,
        eval_microbatch=eval_microbatch,
        val_every=_int(config.get("val_every")) or 1,
        workers=_int(config.get("workers")) or 0,
        cache=bool(config.get("cache")),
        imgsz=_int(config.get("imgsz")),
        device=str(device),
        release_every=_int(config.get(RELEASE_KEY)),
    )
    budget = _int(start.budget) if start is not None else None
    return ChildReport(state, budget, config)


def read_child_report(run_dir: RunDir, overrides: Mapping[str, Any]) -> ChildReport:
    return child_report(ev.load_events(run_dir.events), run_dir.saved_config() or {}, overrides)


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt as the run directory tells it, between the time it was started and its death."""

    started: bool  # it wrote its own ``start``: the resume (or the fresh start) completed
    step: int | None  # the step it reached; None when it never got past start-up
    lost_seconds: float | None  # training done since the checkpoint the next attempt resumes from
    progressed: bool = False  # it trained at least one step past where it started


def resumable_at(events: Iterable[ev.Event], until: float) -> float | None:
    """When the state of the newest checkpoint written before ``until`` was taken (unix seconds).

    A checkpoint event is written once the file is safe; its state was
    captured ``seconds`` earlier, when the write began.
    """
    taken = [event.time - (event.seconds or 0.0) for event in events
             if isinstance(event, ev.Checkpoint) and event.path is not None and event.error is None
             and event.time <= until]
    return max(taken, default=None)


def attempt_record(run_dir: RunDir, since: float, until: float) -> AttemptRecord:
    """What the attempt started at ``since`` and dead at ``until`` (unix seconds) did.

    Only what it wrote itself counts: its ``start`` (written once the
    checkpoint is loaded), then the steps of its events and of its memory
    timeline rows. An attempt without its own ``start`` died in start-up: it
    reached no step of its own and lost no training, only its start-up time.
    """
    events = ev.load_events(run_dir.events)
    start = next((event for event in reversed(events) if isinstance(event, ev.Start) and event.time >= since),
                 None)
    if start is None:
        return AttemptRecord(started=False, step=None, lost_seconds=0.0)
    first = _int(start.step) or 0
    steps = [_int(getattr(event, "step", None)) for event in events if event.time >= start.time]
    steps.append(_timeline_step(run_dir, start.time))
    step = max([first, *(s for s in steps if s is not None)])
    checkpoint = resumable_at(events, until)
    resumed = max(start.time, checkpoint) if checkpoint is not None else start.time
    return AttemptRecord(started=True, step=step, lost_seconds=round(max(0.0, until - resumed), 3),
                         progressed=step > first)


def _timeline_step(run_dir: RunDir, since: float) -> int | None:
    """The step of the last row of the memory timeline written at ``since`` or later."""
    try:
        with open(run_dir.memory, "rb") as handle:
            header = handle.readline().decode("utf-8", errors="replace").strip().split(",")
            size = handle.seek(0, io.SEEK_END)
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    if "step" not in header or "time" not in header:
        return None
    column, clock = header.index("step"), header.index("time")
    for row in csv.reader(reversed(tail[1:] if len(tail) > 1 else [])):
        if len(row) != len(header) or not row[column].isdigit():
            continue
        try:
            if float(row[clock]) < since:
                return None
        except ValueError:
            continue
        return int(row[column])
    return None
