"""Where a run stands, from its directory alone: what ``oomguard status RUN_DIR`` shows.

    state     running              its training process (the last ``start``'s pid) runs
              waiting for memory   it stepped aside for other programs; its supervisor waits for memory
              restarting           it died; its supervisor is about to start the next attempt
              finished             the work finished
              stopped              nothing runs it: a stop (a diagnosis, Ctrl-C), or a kill of everything
    attempt, epoch and step        the last ``start``, the memory timeline's latest step
    plan                           the microbatches in force, what restarts changed
    memory                         the peak against the budget, and now
    time left                      the steps left at the pace of the last minute
    last events

Read-only and cheap: the memory timeline is read from its end only, so a
run of days answers at once. "Runs" means a process with the pid written in
the ``start`` event exists and was started before that event (not a later
process that was given the same pid).
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from oomguard import events as ev
from oomguard.errors import RunDirError
from oomguard.rundir import RunDir
from oomguard.supervise.history import child_report

_TAIL_BYTES = 256 * 1024  # the memory timeline's last rows: at 20 rows a second, over a minute
PACE_WINDOW = 60.0  # seconds of recent steps the pace is measured over
LAST_EVENTS = 8


@dataclass(frozen=True)
class RunStatus:
    root: Path
    state: str
    detail: str = ""  # one line: why it stopped, what it waits for
    attempt: int | None = None
    pid: int | None = None
    epoch: int | None = None  # the epoch in progress (from 1), or the last one done
    epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    pace: float | None = None  # steps per second, recently
    seconds_left: float | None = None
    seconds: float | None = None  # a finished run's time, from its first event to its finish
    microbatch: int | None = None
    eval_microbatch: int | None = None
    batch: int | None = None
    changes: dict[str, Any] = field(default_factory=dict)  # what restarts changed in the plan
    command: list[str] | None = None  # ``oomguard run``'s command
    peak: int | None = None
    budget: int | None = None
    used: int | None = None  # the latest sample
    available: int | None = None
    events: list[ev.Event] = field(default_factory=list)


def runs(pid: int | None, since: float) -> bool:
    """Whether ``pid`` runs and was started before ``since`` (unix seconds): the process that wrote it."""
    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= since + 1.0
    except psutil.Error:
        return False


@dataclass(frozen=True)
class _Row:
    time: float
    step: int
    used: int
    available: int


def _timeline_tail(path: Path, since: float) -> list[_Row]:
    """The memory timeline's rows of the current attempt (written at ``since`` or later), from its end."""
    try:
        with open(path, "rb") as handle:
            header = handle.readline().decode("utf-8", "replace").strip().split(",")
            size = handle.seek(0, io.SEEK_END)
            handle.seek(max(0, size - _TAIL_BYTES))
            lines = handle.read().decode("utf-8", "replace").splitlines()[1:]
    except OSError:
        return []
    wanted = ("time", "step", "used", "system_available")
    if any(name not in header for name in wanted):
        return []
    columns = [header.index(name) for name in wanted]
    rows = []
    for row in csv.reader(lines):
        if len(row) != len(header):
            continue  # a torn line, a repeated header
        try:
            at, step, used, available = (float(row[i]) for i in columns)
        except ValueError:
            continue
        if at >= since:
            rows.append(_Row(at, int(step), int(used), int(available)))
    return rows


def _pace(rows: list[_Row]) -> float | None:
    """Steps per second over the last minute of rows."""
    recent = [row for row in rows if row.time >= rows[-1].time - PACE_WINDOW] if rows else []
    if len(recent) < 2 or recent[-1].time <= recent[0].time or recent[-1].step <= recent[0].step:
        return None
    return (recent[-1].step - recent[0].step) / (recent[-1].time - recent[0].time)


def _state(events: list[ev.Event], start: ev.Start | None, now: float) -> tuple[str, str]:
    """The state and its one line of detail, from the lifecycle events and which processes run."""
    lifecycle = [e for e in events if isinstance(e, ev.Start | ev.Kill | ev.Restart | ev.Finish | ev.Stop)]
    last = lifecycle[-1] if lifecycle else None
    if start is not None and runs(start.pid, start.time) and not isinstance(last, ev.Finish):
        return "running", ""
    if isinstance(last, ev.Finish):
        return "finished", ""
    supervised = start is not None and runs(start.supervisor, start.time)
    if supervised and isinstance(last, ev.Stop) and last.cause == "pressure":
        need = f" (it needs {last.need / 1e9:.1f} GB available)" if last.need else ""
        return "waiting for memory", f"other programs hold the memory it needs{need}"
    if supervised and not isinstance(last, ev.Stop):
        if isinstance(last, ev.Restart) and last.wait and last.time + last.wait > now:
            return "restarting", f"attempt {last.attempt} starts in {last.time + last.wait - now:.0f}s"
        return "restarting", f"attempt {last.attempt} is starting" if isinstance(last, ev.Restart) else ""
    if isinstance(last, ev.Stop):
        return "stopped", last.reason or last.cause
    if last is None:
        return "stopped", "it never started"
    return "stopped", "no process runs it any more (it was killed with its supervisor); resume it"


def read_status(run_dir: str | Path, now: float | None = None) -> RunStatus:
    """Where the run in ``run_dir`` stands; RunDirError when it is not a run directory."""
    run = RunDir(Path(run_dir))
    if not run.events.is_file() and not run.memory.is_file():
        what = "does not exist" if not run.root.exists() else "has no events.jsonl and no memory.csv"
        raise RunDirError(f"not a run directory: {run.root} {what}; give the folder of a run, like runs/exp")
    now = time.time() if now is None else now
    events = ev.load_events(run.events)
    starts = ev.of_kind(events, ev.Start)
    start = starts[-1] if starts else None
    state, detail = _state(events, start, now)
    config = run.saved_config() or (dict(start.config) if start is not None and start.config else {})
    epochs = _epochs(config)
    since = start.time if start is not None else 0.0
    rows = _timeline_tail(run.memory, since)
    steps = [getattr(e, "step", None) for e in events if e.time >= since]  # this attempt's only
    step = max([s for s in steps if isinstance(s, int)] + [row.step for row in rows[-1:]], default=None)
    per_epoch = next((s.steps_per_epoch for s in reversed(starts) if s.steps_per_epoch), None)
    total = per_epoch * epochs if per_epoch and epochs else None
    pace = _pace(rows) if state == "running" else None
    left = (total - step) / pace if pace and total is not None and step is not None else None
    microbatch, eval_microbatch = _plan(events, config)
    restarts = ev.of_kind(events, ev.Restart)
    changes = restarts[-1].overrides if restarts and isinstance(restarts[-1].overrides, dict) else {}
    finish = next((e for e in reversed(events) if isinstance(e, ev.Finish)), None)
    epoch = None
    if state == "finished":
        epoch = epochs
    elif per_epoch and step is not None:
        epoch = min(epochs or step // per_epoch + 1, step // per_epoch + 1)
    return RunStatus(
        root=run.root, state=state, detail=detail,
        attempt=start.attempt if start is not None else None, pid=start.pid if start is not None else None,
        epoch=epoch, epochs=epochs, step=step, total_steps=total,
        pace=pace, seconds_left=max(0.0, left) if left is not None else None,
        seconds=finish.time - events[0].time if finish is not None and state == "finished" else None,
        microbatch=microbatch, eval_microbatch=eval_microbatch,
        batch=config.get("batch") if isinstance(config.get("batch"), int) else None,
        changes=dict(changes or {}),
        command=config.get("command") if isinstance(config.get("command"), list) else None,
        peak=_peak(run, rows), budget=_budget(events),
        used=rows[-1].used if rows else None, available=rows[-1].available if rows else None,
        events=events[-LAST_EVENTS:],
    )


def _plan(events: list[ev.Event], config: dict[str, Any]) -> tuple[int | None, int | None]:
    """The training and eval microbatches in force: the last planned or changed (a resume keeps its
    checkpoint's plan, so the events of earlier attempts count), else the config's."""
    state = child_report([], config, {}).state
    train, evaluate = state.microbatch, state.eval_microbatch
    for event in events:
        if isinstance(event, ev.Plan):
            train = event.microbatch or train
            evaluate = event.eval_microbatch or evaluate
        elif isinstance(event, ev.Shrink | ev.Grow) and isinstance(event.to, int):
            if event.phase == "eval":
                evaluate = event.to
            else:
                train = event.to
    return train, evaluate


def _epochs(config: dict[str, Any]) -> int | None:
    """The run's last epoch: its ``epochs``, or the sum of its stages' (each stage's own or the base's)."""
    base = config.get("epochs")
    stages = config.get("stages")
    if isinstance(stages, list) and stages:
        return sum(int(stage.get("epochs", base or 0)) for stage in stages if isinstance(stage, dict)) or None
    return base if isinstance(base, int) else None


def _peak(run: RunDir, rows: list[_Row]) -> int | None:
    """The highest memory on record: each epoch's peak (results.csv), and the current attempt's samples."""
    peaks = [row.used for row in rows]
    try:
        with open(run.results, newline="") as handle:
            for record in csv.DictReader(handle):
                try:
                    peaks.append(int(float(record.get("peak_memory_mb") or "") * 1e6))
                except ValueError:
                    continue
    except OSError:
        pass
    return max(peaks, default=None) or None


def _budget(events: list[ev.Event]) -> int | None:
    for event in reversed(events):
        budget = getattr(event, "budget", None) if isinstance(event, ev.Start | ev.Plan) else None
        if isinstance(budget, int) and budget > 0:
            return budget
    return None
