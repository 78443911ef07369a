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

import yaml

from oomguard.events import read_events
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


def read_config(run_dir: RunDir) -> dict[str, Any]:
    """``config.yaml`` as a plain dict ({} when missing or unreadable)."""
    try:
        loaded = yaml.safe_load(run_dir.config.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def child_report(events: Iterable[Mapping[str, Any]], fallback_config: Mapping[str, Any],
                 overrides: Mapping[str, Any]) -> ChildReport:
    """The plan of the last attempt: its ``start`` config, then its plan/shrink/grow events.

    ``overrides`` (what the supervisor passed) win over the config where the child
    wrote no ``start`` of its own.
    """
    start: Mapping[str, Any] | None = None
    since: list[Mapping[str, Any]] = []
    for event in events:
        if event.get("event") == "start":
            start, since = event, []
        else:
            since.append(event)
    config = dict(start.get("config") or {}) if start else dict(fallback_config)
    config.update(overrides)
    # Killed before any plan (during the probe, or with memory_limit=off): the whole batch was tried.
    microbatch = _int(config.get("microbatch")) or _int(config.get("batch"))
    eval_microbatch = _int(config.get("val_batch"))
    for event in since:
        kind = event.get("event")
        if kind == "plan":
            microbatch = _int(event.get("microbatch")) or microbatch
            eval_microbatch = _int(event.get("eval_microbatch")) or eval_microbatch
        elif kind in ("shrink", "grow"):
            if event.get("phase") == "eval":
                eval_microbatch = _int(event.get("to")) or eval_microbatch
            else:
                microbatch = _int(event.get("to")) or microbatch
    device = (start or {}).get("device") or config.get("device") or "auto"
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
    budget = _int((start or {}).get("budget"))
    return ChildReport(state, budget, config)


def read_child_report(run_dir: RunDir, overrides: Mapping[str, Any]) -> ChildReport:
    return child_report(read_events(run_dir.events), read_config(run_dir), overrides)


def last_step(run_dir: RunDir) -> int | None:
    """The last training step the child reached: its memory timeline's ``step``, or its events'."""
    steps = [_int(event.get("step")) for event in read_events(run_dir.events)]
    best = max((step for step in steps if step is not None), default=None)
    try:
        with open(run_dir.memory, "rb") as handle:
            size = handle.seek(0, io.SEEK_END)
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return best
    for row in csv.reader(reversed(tail[1:] if len(tail) > 1 else [])):
        if len(row) >= 7 and row[6].isdigit():
            step = int(row[6])
            return step if best is None else max(best, step)
    return best
