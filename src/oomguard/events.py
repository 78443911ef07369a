"""The run's event log: ``events.jsonl``, one JSON object per line with ``time`` and ``event``.

Each line is flushed as it is written, so a process killed right after an
event still leaves it on disk for the supervisor and the report.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EVENT_KINDS = (
    "start", "plan", "oom", "shrink", "grow", "checkpoint", "pressure", "leak", "fragmentation",
    "kill", "restart", "fallback", "finish", "stop", "epoch", "error", "stage",
)


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


class EventLog:
    """Append events to ``path``; keep them in memory too when ``path`` is None."""

    def __init__(self, path: str | Path | None = None, rank: int = 0) -> None:
        self.path = Path(path) if path is not None else None
        self.rank = rank
        self.history: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event: str, **details: Any) -> dict[str, Any]:
        record = {"time": round(time.time(), 3), "event": event, **_plain(details)}
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
    """Events from an ``events.jsonl``, skipping a torn last line from a killed writer."""
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
