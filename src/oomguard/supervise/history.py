"""What the training child left in its run directory: its plan, budget, last step and loader workers' memory.

The supervisor never imports the training loop; this is all it knows of it.
Only what the child wrote since its last ``start`` counts, so a plan from an
earlier attempt is never mistaken for the current one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from oomguard import events as ev
from oomguard.rundir import RunDir
from oomguard.supervise.attempt import WINDOW_SECONDS
from oomguard.supervise.evidence import tail_rows
from oomguard.supervise.ladder import RELEASE_KEY, LoaderMemory, PlanState

#: Enough of the memory timeline's end to hold its last WINDOW_SECONDS of samples, for a few ranks.
_LOADER_TAIL_BYTES = 65536


@dataclass(frozen=True)
class ChildReport:
    """The child's last attempt as its run directory tells it."""

    state: PlanState
    budget: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    started: float | None = None  # the time of its ``start`` event


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
    listed = start.savers if start is not None and isinstance(start.savers, list) else config.get("savers")
    savers = tuple(ev.savers_in_force(since, listed if isinstance(listed, list) else ()))
    usable = start.savers_usable if start is not None else None
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
        savers=savers,
        savers_usable=tuple(str(name) for name in usable) if isinstance(usable, list) else None,
    )
    budget = _int(start.budget) if start is not None else None
    return ChildReport(state, budget, config, start.time if start is not None else None)


def read_child_report(run_dir: RunDir, overrides: Mapping[str, Any]) -> ChildReport:
    report = child_report(ev.load_events(run_dir.events), run_dir.saved_config() or {}, overrides)
    host_budget = None if report.state.device.startswith("cuda") else report.budget
    loader = loader_memory(run_dir.memory, report.started, host_budget)
    return replace(report, state=replace(report.state, loader=loader))


def loader_memory(path: Path, since: float | None, budget: int | None) -> LoaderMemory | None:
    """What the loader workers held in the last samples (``WINDOW_SECONDS``) of the attempt that
    started at ``since``.

    Per rank, the most its children held alone and the highest tree memory in
    those rows, summed over the ranks (their budget, ``budget`` each). None
    where the timeline does not say (no rows of that attempt, or written before
    the ``children_private`` column).
    """
    header, lines = tail_rows(path, _LOADER_TAIL_BYTES)
    names = ("time", "rank", "tree_memory", "children_private")
    if not set(names) <= set(header):
        return None
    columns = [header.index(name) for name in names]
    rows: list[tuple[float, str, int, int]] = []
    for row in lines:  # whole rows only: a row torn by the kill is dropped
        cells = [row[i] for i in columns]
        try:
            rows.append((float(cells[0]), cells[1], int(cells[2]), int(cells[3])))
        except ValueError:
            continue
    rows = [row for row in rows if since is None or row[0] >= since]
    if not rows:
        return None
    end = max(row[0] for row in rows)
    private: dict[str, int] = {}
    peak: dict[str, int] = {}
    for at, rank, tree, alone in rows:
        if at >= end - WINDOW_SECONDS:
            private[rank] = max(private.get(rank, 0), alone)
            peak[rank] = max(peak.get(rank, 0), tree)
    return LoaderMemory(private=sum(private.values()), peak=sum(peak.values()),
                        limit=budget * len(peak) if budget else None)


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
    header, rows = tail_rows(run_dir.memory)
    if "step" not in header or "time" not in header:
        return None
    column, clock = header.index("step"), header.index("time")
    for row in reversed(rows):
        if not row[column].isdigit():
            continue
        try:
            if float(row[clock]) < since:
                return None
        except ValueError:
            continue
        return int(row[column])
    return None
