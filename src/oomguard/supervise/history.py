"""What the training child left in its run directory: its plan, budget and last step.

The supervisor never imports the training loop; this is all it knows of it.
Only what the child wrote since its last ``start`` counts, so a plan from an
earlier attempt is never mistaken for the current one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from oomguard import events as ev
from oomguard.rundir import RunDir
from oomguard.supervise.evidence import tail_rows
from oomguard.supervise.ladder import RELEASE_KEY, PlanState


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


def last_step(run_dir: RunDir) -> int | None:
    """The last training step the child reached: its memory timeline's ``step``, or its events'."""
    steps = [_int(getattr(event, "step", None)) for event in ev.load_events(run_dir.events)]
    best = max((step for step in steps if step is not None), default=None)
    header, rows = tail_rows(run_dir.memory)
    if "step" not in header:
        return best
    column = header.index("step")
    for row in reversed(rows):
        if row[column].isdigit():
            step = int(row[column])
            return step if best is None else max(best, step)
    return best
