"""Where the supervisor's words go: events for the run directory, lines for the person watching."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from oomguard.events import EventLog


class Console(Protocol):
    """Anything with ``print``: a rich Console, or the stderr one below."""

    def print(self, *objects: Any) -> None: ...


class StderrConsole:
    """Messages to stderr, where no console is given."""

    def print(self, *objects: Any) -> None:
        print(*objects, file=sys.stderr, flush=True)


class SupervisorLog:
    """The run's events; held back until ``ready()`` (the child must create the run directory first)."""

    def __init__(self, path: Path, ready: Callable[[], bool] = lambda: True) -> None:
        self._log = EventLog(None)
        self.path = path
        self._ready = ready
        self._pending: list[dict[str, Any]] = []

    def emit(self, event: str, **details: Any) -> dict[str, Any]:
        record = self._log.emit(event, **details)
        self._pending.append(record)
        self.flush()
        return record

    def flush(self) -> None:
        if not self._pending or not self._ready():
            return
        log = EventLog(self.path)
        for record in self._pending:
            log.emit(record["event"], **{k: v for k, v in record.items() if k != "event"})
        self._pending.clear()
