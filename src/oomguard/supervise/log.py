"""Where the supervisor's words go: events for the run directory, lines for the person watching."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from oomguard.events import Event, EventLog


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
        self.path = path
        self._ready = ready
        self._pending: list[Event] = []

    def emit(self, event: Event) -> None:
        self._pending.append(replace(event, time=round(time.time(), 3)))
        self.flush()

    def flush(self) -> None:
        if not self._pending or not self._ready():
            return
        log = EventLog(self.path)
        for event in self._pending:
            log.emit(event, at=event.time)
        self._pending.clear()
