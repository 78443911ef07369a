"""The run's event log (``events.jsonl``) and the one definition of every event kind.

Each kind is a frozen dataclass: its class attribute ``kind`` is the name
written in the ``event`` field, its fields are the details. Writers build
them (so a misspelt or missing field is a type error, not a silent gap in a
report) and :meth:`EventLog.emit` writes one JSON object per line::

    {"time": 1764241200.123, "event": "shrink", "phase": "train", "from": 32, "to": 16, ...}

Readers (the supervisor's history, the report, ``oomguard status``) turn lines
back into the same classes with :func:`load_events` / :func:`parse_event`
(:func:`read_events` gives the raw lines as dicts). A file is read
tolerantly: it may come from an older version or be torn by a kill, so any
field read back may be None, and a kind this version does not know becomes an
:class:`OtherEvent` that keeps its details.

Optional fields (those with a default of None) are left out of a line while
they are None; every other field is always written.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar


def _plain(value: Any) -> Any:
    """JSON-safe version of ``value`` (numbers from numpy/torch become Python numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _json_name(name: str) -> str:
    return name[:-1] if name.endswith("_") else name  # ``from_`` is written as ``from``


@dataclass(frozen=True, kw_only=True)
class Event:
    """What every event has: when (unix seconds) and which rank of a group wrote it (0: not written)."""

    kind: ClassVar[str] = ""
    time: float = field(default=0.0, compare=False)
    rank: int = field(default=0, compare=False)

    def details(self) -> dict[str, Any]:
        """The event's own fields as written to the log (JSON names, optional ones only when set)."""
        out: dict[str, Any] = {}
        for item in fields(self):
            if item.name in ("time", "rank"):
                continue
            value = getattr(self, item.name)
            if value is None and item.default is None:
                continue
            out[_json_name(item.name)] = _plain(value)
        return out

    def record(self) -> dict[str, Any]:
        """The whole line: ``time``, ``event``, the details, and ``rank`` for ranks other than 0."""
        line = {"time": self.time, "event": self.kind, **self.details()}
        if self.rank:
            line["rank"] = self.rank
        return line


# -- a run's life -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Start(Event):
    """A process began (or resumed) the run: the training child, or a command under ``oomguard run``."""

    kind: ClassVar[str] = "start"
    pid: int
    attempt: int
    resume: bool
    device: str | None
    budget: int | None
    config: dict[str, Any]
    epoch: int | None = None
    step: int | None = None
    ranks: int | None = None
    pids: list[int] | None = None
    #: The checkpoint a resume starts from, and how much time it lost against the previous attempt's end.
    resumed_from: str | None = None
    #: The pid of the supervisor the process runs under (``oomguard status`` asks whether it still runs).
    supervisor: int | None = None
    #: Optimizer steps in one epoch (``oomguard status`` estimates the time left from it).
    steps_per_epoch: int | None = None
    #: The memory savers this attempt may switch on (the restart ladder's ``savers`` rung forces them), and
    #: those in force as it starts (a resume's, from its checkpoint).
    savers_usable: list[str] | None = None
    savers: list[str] | None = None


@dataclass(frozen=True, kw_only=True)
class Stage(Event):
    """A stage of ``stages:`` starts or resumes (``stage`` counts from 1)."""

    kind: ClassVar[str] = "stage"
    stage: int
    stages: int
    epochs: int
    first_epoch: int
    last_epoch: int
    overrides: dict[str, Any]
    resume: bool
    epoch: int
    step: int | None


@dataclass(frozen=True, kw_only=True)
class Epoch(Event):
    """An epoch finished (numbered from 1 across stages): its row of ``results.csv``."""

    kind: ClassVar[str] = "epoch"
    epoch: int
    row: dict[str, Any]
    stage: int | None = None


@dataclass(frozen=True, kw_only=True)
class Finish(Event):
    """The work finished. A training writes ``epochs``; ``oomguard run`` writes ``attempts``."""

    kind: ClassVar[str] = "finish"
    seconds: float
    epochs: int | None = None
    best: float | None = None
    metrics: dict[str, float] | None = None
    attempts: int | None = None


@dataclass(frozen=True, kw_only=True)
class Stop(Event):
    """The run stopped before the end; one schema for the training child and the supervisor.

    ``cause`` is a word a program can act on (``signal``, ``pressure``,
    ``checkpoint_failure``, ``rehearsal`` from the child; a death's cause from
    the supervisor), ``exit_code`` the status the process exits with.
    """

    kind: ClassVar[str] = "stop"
    cause: str
    reason: str
    exit_code: int
    epoch: int | None = None
    step: int | None = None
    attempts: int | None = None
    need: int | None = None
    error: str | None = None
    tail: list[str] | None = None


# -- the memory plan and its changes ------------------------------------------------------------------

#: Parts of a predicted epoch peak (a ``plan``'s ``components``) that are there all epoch long ...
HELD_PARTS = ("process", "model", "optimizer", "ema", "cache", "snapshot", "workers")
#: ... and those that happen one at a time: only the largest of them counts in the peak.
PHASE_PARTS = ("activations", "evaluation", "optimizer_step")
#: A measured epoch peak that parts from its prediction by more than this share says so, and why.
PARTED = 0.10
#: How each part reads (``oomguard probe``, ``rehearse=true``, the report); ``held`` is a ``peak_check``'s
#: measured memory between steps.
PART_WORDS = {
    "process": "the process (libraries, data)",
    "model": "model weights and buffers",
    "optimizer": "optimizer state",
    "ema": "EMA copy of the model",
    "cache": "decoded images kept by the dataset",
    "snapshot": "checkpoint snapshot in flight",
    "workers": "loader workers",
    "activations": "training step at the microbatch",
    "evaluation": "evaluation at the eval microbatch",
    "optimizer_step": "optimizer step",
    "held": "memory held between steps",
}


@dataclass(frozen=True, kw_only=True)
class Plan(Event):
    """The probe's measurements and the plan in force (both phases, whatever was planned earlier)."""

    kind: ClassVar[str] = "plan"
    microbatch: int
    eval_microbatch: int | None
    ceiling: int
    budget: int | None
    fit: dict[str, float]
    table: list[dict[str, Any]]
    eval_fit: dict[str, float] | None
    eval_table: list[dict[str, Any]]
    optimizer_peak: int
    snapshot_bytes: int
    start: int
    seconds: float
    #: The peak the whole epoch is predicted to reach with this plan (bytes), and its parts.
    predicted_peak: int | None = None
    components: dict[str, int] | None = None
    #: The memory savers in force with this plan (activation_checkpointing, amp, optimizer_offload).
    savers: list[str] | None = None
    #: Each combination of savers the probe measured: ``savers``, ``fits``, microbatch 1's ``peak``, the
    #: ``microbatch`` it would take and the samples per second (``rate``) measured there.
    trials: list[dict[str, Any]] | None = None
    #: Share of the room between what is held and the budget that the plan left free (its caution).
    margin: float | None = None


@dataclass(frozen=True, kw_only=True)
class PeakCheck(Event):
    """An epoch's measured peak held against the prediction of the plan in force, and the caution after.

    ``measured_parts`` are what the Guard saw of the same parts (``held``: the
    least memory between steps; ``activations``/``evaluation``: the largest step
    or evaluation peak over it); ``grew`` names the part that went furthest over
    its prediction when the peaks parted by more than a tenth.
    """

    kind: ClassVar[str] = "peak_check"
    epoch: int
    predicted: int
    measured: int
    microbatch: int
    eval_microbatch: int | None
    margin: float
    parts: dict[str, int]
    measured_parts: dict[str, int]
    grew: str | None = None
    grew_by: int | None = None


@dataclass(frozen=True, kw_only=True)
class Oom(Event):
    """A step or an evaluation ran out of memory (or over the budget) and is redone smaller."""

    kind: ClassVar[str] = "oom"
    phase: str
    microbatch: int
    peak: int | None
    budget: int | None
    error: str


@dataclass(frozen=True, kw_only=True)
class Shrink(Event):
    """A phase's microbatch went down (``from_`` is written as ``from``)."""

    kind: ClassVar[str] = "shrink"
    phase: str
    from_: int
    to: int
    reason: str
    predicted: int | None


@dataclass(frozen=True, kw_only=True)
class Grow(Event):
    """A phase's microbatch went up after quiet steps."""

    kind: ClassVar[str] = "grow"
    phase: str
    from_: int
    to: int
    reason: str
    predicted: int | None


@dataclass(frozen=True, kw_only=True)
class NoFit(Event):
    """Not even one sample fits the memory budget: the run stops. What was in use before the step (each
    page once, split by who held it), what one sample added, and what would make it fit."""

    kind: ClassVar[str] = "no_fit"
    phase: str
    needed: int | None
    budget: int | None
    advice: list[str]
    in_use: int | None = None
    process: int | None = None
    data: int | None = None
    workers: int | None = None
    workers_private: int | None = None
    worker_count: int | None = None
    others: int | None = None
    other_count: int | None = None
    sample: int | None = None
    counted_as: str | None = None
    #: The memory savers tried before refusing: each combination's ``savers`` and microbatch 1's ``peak``.
    savers_tried: list[dict[str, Any]] | None = None


@dataclass(frozen=True, kw_only=True)
class Saver(Event):
    """A memory saver went on or off: ``activation_checkpointing``, ``amp`` or ``optimizer_offload``.

    ``peak``: microbatch 1's peak measured with the savers now in force, ``before`` without this change
    (None: not measured); ``microbatch``: the training microbatch the plan takes with them.
    """

    kind: ClassVar[str] = "saver"
    name: str
    on: bool
    reason: str
    peak: int | None = None
    before: int | None = None
    microbatch: int | None = None


# -- checkpoints --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Checkpoint(Event):
    """A checkpoint was written (``path``), failed to be (``error``) or was found corrupt (``corrupt``)."""

    kind: ClassVar[str] = "checkpoint"
    path: str | None = None
    epoch: int | None = None
    step: int | None = None
    seconds: float | None = None
    bytes: int | None = None
    best: bool | None = None
    error: str | None = None
    corrupt: str | None = None
    reason: str | None = None


# -- memory watch -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Pressure(Event):
    """Available memory fell under ``min_available``; ``action`` is what the run did about it."""

    kind: ClassVar[str] = "pressure"
    step: int
    available: int
    min_available: int
    need: int
    microbatch: int
    action: str
    epoch: int | None = None


@dataclass(frozen=True, kw_only=True)
class Leak(Event):
    """Live memory climbs steadily, step after step."""

    kind: ClassVar[str] = "leak"
    step: int
    mb_per_step: float
    budget_step: int | None
    growth: int
    diagnosis: str
    #: The growth at the run's pace of steps, for people (None before the pace is known).
    bytes_per_hour: int | None = None


@dataclass(frozen=True, kw_only=True)
class Fragmentation(Event):
    """The allocator's cache climbs while live memory does not; it is released every ``release_every``."""

    kind: ClassVar[str] = "fragmentation"
    step: int
    mb_per_step: float
    cache: int
    release_every: int


@dataclass(frozen=True, kw_only=True)
class SamplerTrouble(Event):
    """The memory sampler's readings or listeners kept failing (it goes on sampling)."""

    kind: ClassVar[str] = "sampler"
    failures: int
    error: str


@dataclass(frozen=True, kw_only=True)
class Data(Event):
    """The dataset: what indexing found (``action`` ``index``) or an image skipped in a loader (``skip``).

    ``index``: the layout and where validation comes from, the images of each
    split, those left out because they cannot be read (``skipped``, the first
    of them named in ``skipped_files``, all in ``listed_in``) and the files in
    class folders that are not images (``ignored``); ``recorded`` when a
    resume read the run's ``dataset.json`` instead. ``skip``: an image that
    could not be read when a batch was loaded (``phase`` train or val), left
    out of it at ``epoch``/``step`` (numbered from 1) for ``reason``.
    """

    kind: ClassVar[str] = "data"
    action: str
    layout: str | None = None
    validation: str | None = None
    classes: int | None = None
    train: int | None = None
    val: int | None = None
    skipped: int | None = None
    skipped_files: list[str] | None = None
    listed_in: str | None = None
    ignored: int | None = None
    recorded: bool | None = None
    phase: str | None = None
    epoch: int | None = None
    step: int | None = None
    path: str | None = None
    reason: str | None = None


# -- the supervisor -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Kill(Event):
    """The supervised process died; ``cause`` is the attribution, ``lost_seconds`` the work lost.

    ``step`` is the step the attempt reached (None: it died in start-up, before
    its resume completed, and ``startup`` says so); ``lost_seconds`` the
    training it did since the checkpoint the next attempt resumes from.
    """

    kind: ClassVar[str] = "kill"
    cause: str
    signal: str | None
    exit_code: int | None
    attempt: int
    step: int | None
    reason: str
    error: str | None
    peak: int
    available: int | None
    limit: int | None
    seconds: float
    cap: int | None = None
    killer: str | None = None
    tail: list[str] | None = None
    lost_seconds: float | None = None
    startup: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Restart(Event):
    """The supervisor starts the next attempt; what it changed, where it resumes from, and after what wait.

    ``wait``: seconds the supervisor waits before starting it (after unexplained kills).
    """

    kind: ClassVar[str] = "restart"
    cause: str
    attempt: int
    reason: str
    plan: dict[str, Any] | None = None
    rung: str | None = None
    overrides: dict[str, Any] | list[str] | None = None
    argv: list[str] | None = None
    preset: str | None = None
    resume_from: str | None = None
    wait: float | None = None


@dataclass(frozen=True, kw_only=True)
class Fallback(Event):
    """The next attempt leaves the accelerator (the ladder's last rung)."""

    kind: ClassVar[str] = "fallback"
    attempt: int
    to: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class OtherEvent(Event):
    """An event of a kind this version does not define (read back from a newer or foreign log)."""

    name: str
    fields_: dict[str, Any]

    def details(self) -> dict[str, Any]:
        return dict(self.fields_)

    def record(self) -> dict[str, Any]:
        line = {"time": self.time, "event": self.name, **self.fields_}
        if self.rank:
            line["rank"] = self.rank
        return line


KINDS: dict[str, type[Event]] = {cls.kind: cls for cls in (
    Start, Stage, Epoch, Finish, Stop, Plan, PeakCheck, Oom, Shrink, Grow, NoFit, Saver, Checkpoint, Pressure,
    Leak, Fragmentation, SamplerTrouble, Data, Kill, Restart, Fallback,
)}

E = TypeVar("E", bound=Event)


def name_of(event: Event) -> str:
    """The ``event`` field of ``event`` (an :class:`OtherEvent` keeps the name it was read with)."""
    return event.name if isinstance(event, OtherEvent) else event.kind


def parse_event(record: Mapping[str, Any]) -> Event:
    """One line of the log as its typed event; fields the line lacks are None."""
    name = str(record.get("event"))
    time_value = record.get("time")
    stamp = float(time_value) if isinstance(time_value, int | float) and time_value is not True else 0.0
    rank_value = record.get("rank")
    rank = rank_value if isinstance(rank_value, int) and not isinstance(rank_value, bool) else 0
    cls = KINDS.get(name)
    if cls is None:
        others = {k: v for k, v in record.items() if k not in ("time", "event", "rank")}
        return OtherEvent(time=stamp, rank=rank, name=name, fields_=others)
    values: dict[str, Any] = {}
    for item in fields(cls):
        if item.name in ("time", "rank"):
            continue
        key = _json_name(item.name)
        if key in record:
            values[item.name] = record[key]
        elif item.default is MISSING and item.default_factory is MISSING:
            values[item.name] = None  # a required field an older or torn line lacks
    return cls(time=stamp, rank=rank, **values)


def savers_in_force(events: Iterable[Event], listed: Iterable[str] = ()) -> list[str]:
    """The memory savers in force after ``events`` (those ``listed`` in the config first, then each plan's
    and each ``saver`` switch), sorted by name."""
    names = {str(name) for name in listed}
    for event in events:
        if isinstance(event, Plan) and isinstance(event.savers, list):
            names = {str(name) for name in event.savers}
        elif isinstance(event, Saver) and isinstance(event.name, str):
            if event.on:
                names.add(event.name)
            else:
                names.discard(event.name)
    return sorted(names)


def of_kind(events: Iterator[Event] | list[Event], cls: type[E]) -> list[E]:
    """The events of one kind, in order."""
    return [event for event in events if isinstance(event, cls)]


class EventLog:
    """Append events to ``path``; keep them in memory too (``history``), also when ``path`` is None.

    Each line is written and flushed as it is emitted, so a process killed right
    after an event still leaves it on disk for the supervisor and the report.
    """

    def __init__(self, path: str | Path | None = None, rank: int = 0) -> None:
        self.path = Path(path) if path is not None else None
        self.rank = rank
        self.history: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event: Event, at: float | None = None) -> dict[str, Any]:
        """Write ``event`` stamped with the time now (or ``at``) and this log's rank; its line as a dict."""
        stamp = round(time.time(), 3) if at is None else at
        record = {"time": stamp, "event": name_of(event), **event.details()}
        if self.rank:
            record["rank"] = self.rank
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self.history.append(record)
            if self.path is not None:
                with open(self.path, "a") as file:
                    file.write(line + "\n")
        return record


def read_events(path: str | Path) -> Iterator[dict[str, Any]]:
    """The lines of an ``events.jsonl`` as dicts, skipping a torn last line from a killed writer."""
    file = Path(path)
    if not file.exists():
        return
    with open(file) as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "event" in record:
                yield record


def load_events(path: str | Path) -> list[Event]:
    """The typed events of an ``events.jsonl`` (see :func:`parse_event`), in file order."""
    return [parse_event(record) for record in read_events(path)]
