"""Everything the report needs from a run directory, read tolerantly.

A report is most wanted after a run went wrong, so nothing here assumes the
run finished: any file may be missing (``oomguard run`` writes no results.csv
or config.yaml), and the last line of any log may be torn by a kill.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oomguard import events as ev
from oomguard.errors import RunDirError
from oomguard.events import read_events
from oomguard.report.timeline import Timeline, parse_number, read_timeline
from oomguard.rundir import RunDir


@dataclass(frozen=True)
class RunData:
    root: Path
    events: list[ev.Event]
    timeline: Timeline | None
    results: list[dict[str, float | None]]
    config: dict[str, Any] | None

    @property
    def name(self) -> str:
        return self.root.resolve().name

    @property
    def start(self) -> float | None:
        """The earliest time on record (first sample or first event)."""
        times = [e.time for e in self.events[:1]]
        if self.timeline is not None and self.timeline.summary.start is not None:
            times.append(self.timeline.summary.start)
        return min(times) if times else None

    @property
    def end(self) -> float | None:
        times = [e.time for e in self.events[-1:]]
        if self.timeline is not None and self.timeline.summary.end is not None:
            times.append(self.timeline.summary.end)
        return max(times) if times else None


def read_results(path: Path) -> list[dict[str, float | None]]:
    """One row per epoch from results.csv (numbers; blank or bad cells are None).

    Rows with the wrong number of cells (a torn last line) are skipped, and when
    an epoch appears twice (a resumed run) the later row wins.
    """
    if not path.is_file():
        return []
    by_epoch: dict[float, dict[str, float | None]] = {}
    with open(path, newline="", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or "epoch" not in header:
            return []
        for row in reader:
            if len(row) != len(header):
                continue
            values = {name: parse_number(cell) for name, cell in zip(header, row, strict=True)}
            epoch = values.get("epoch")
            if epoch is not None:
                by_epoch[epoch] = values
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _valid_time(event: dict[str, Any]) -> bool:
    value = event.get("time")
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def load_run(run_dir: str | Path, max_points: int = 1500) -> RunData:
    """Read ``run_dir``; a RunDirError when it has neither memory.csv nor events.jsonl."""
    root = Path(run_dir)
    memory, events_path = root / "memory.csv", root / "events.jsonl"
    if not memory.is_file() and not events_path.is_file():
        what = "does not exist" if not root.exists() else "has no memory.csv and no events.jsonl"
        raise RunDirError(
            f"not a run directory: {root} {what}; give the folder of a run, like runs/exp"
        )
    records = (record for record in read_events(events_path) if _valid_time(record))
    events = sorted((ev.parse_event(record) for record in records), key=lambda e: e.time)
    return RunData(
        root=root,
        events=events,
        timeline=read_timeline(memory, max_points=max_points),
        results=read_results(root / "results.csv"),
        config=RunDir(root).saved_config(),
    )
