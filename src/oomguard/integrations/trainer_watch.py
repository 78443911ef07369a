"""What an oomguard callback adds to another library's trainer (Hugging Face, Lightning).

The trainer keeps its own loop, checkpoints and resume; the callback gives it
what oomguard gives its own loops:

- a run directory with the memory timeline (``memory.csv``), the events
  (``events.jsonl``: start, pressure, leak, fragmentation, finish or stop) and
  the report at the end;
- the same memory watch as every oomguard loop (:mod:`oomguard.memory.watch`):
  a leak is an event and one console warning; memory pressure asks the trainer
  to checkpoint now (``save``), and when it persists to checkpoint and stop
  (``stop``); the process then exits with status 75 under a supervisor, which
  resumes it when the memory is back.

The run directory is the one ``oomguard run`` names for its command
(``OOMGUARD_RUN_DIR``) when there is one, else the callback's own. Under
``oomguard run`` the supervisor writes the timeline and the start, restart and
finish events; the callback adds its watch's events and the report.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oomguard import environment
from oomguard import events as ev
from oomguard.codes import EXIT_PRESSURE
from oomguard.devices import Device
from oomguard.events import EventLog
from oomguard.memory.budget import resolve_budget
from oomguard.memory.meter import MemoryMeter
from oomguard.memory.pressure import PressureDecision
from oomguard.memory.sampler import MemorySampler
from oomguard.memory.watch import MemoryWatch, to_stderr
from oomguard.report import write_final_report
from oomguard.units import parse_memory_limit


class Act(enum.Enum):
    """What the trainer should do after a step."""

    SAVE = "save"  # checkpoint now, then go on (caches were released)
    STOP = "stop"  # checkpoint now, then stop training: memory stayed low


def run_directory(given: str | Path | None, fallback: Path) -> Path:
    """``oomguard run``'s directory for this command when it set one, else ``given``, else ``fallback``."""
    named = os.environ.get(environment.RUN_DIR)
    return Path(named) if named else Path(given) if given is not None else fallback


class TrainerWatch:
    """The memory side of a trainer callback: sampler, events, watch, and the end of the run."""

    def __init__(self, run_dir: Path, device: Device, memory_limit: str | float | int = "auto",
                 min_available: str | int = "auto", console: Callable[[str], None] = to_stderr) -> None:
        self.run_dir, self.device, self.console = run_dir, device, console
        self.events = EventLog(run_dir / "events.jsonl")
        self.budget = resolve_budget(parse_memory_limit(memory_limit), device)
        #: Under oomguard run, the supervisor keeps the timeline and the lifecycle events.
        self.supervised = bool(os.environ.get(environment.RUN_DIR))
        self.sampler = MemorySampler(device, None if self.supervised else run_dir / "memory.csv",
                                     events=self.events)
        self.meter = MemoryMeter(device, self.sampler)
        self.watch = MemoryWatch(self.events, self.budget.limit, min_available, console)
        self.pressure: PressureDecision | None = None  # a stop for pressure, once asked
        self.started = time.monotonic()

    def begin(self, step: int, config: dict[str, Any]) -> None:
        """Training starts (or resumes at ``step``): the timeline and the ``start`` event."""
        self.sampler.start()
        self.started = time.monotonic()
        if self.supervised:
            return
        self.events.emit(ev.Start(pid=os.getpid(), attempt=environment.attempt(), resume=step > 0,
                                  device=str(self.device.torch_device), budget=self.budget.limit,
                                  config=config, step=step))

    def after_step(self, step: int) -> Act | None:
        """A training step finished: leaks, fragmentation, then pressure; what the trainer should do."""
        self.sampler.step = step
        used = self.meter.current(fresh=False)
        if self.watch.after_step(step, used, self.device.allocated(), self.device.reserved()):
            self.device.release_cache()
        latest = self.sampler.latest
        decision = self.watch.check_pressure(latest.system_available if latest is not None else None,
                                             used, can_shrink=False)
        if decision is None:
            return None
        self.events.emit(ev.Pressure(step=step, available=decision.available,
                                     min_available=decision.min_available, need=decision.need, microbatch=0,
                                     action="exit" if decision.exits else "checkpoint"))
        self.device.empty_cache()
        if not decision.exits:
            self.console(f"{decision.words()}; checkpointing now, caches released")
            return Act.SAVE
        self.pressure = decision
        self.console(f"{decision.words()}; checkpointing and stopping")
        return Act.STOP

    def end(self, step: int, epochs: int | None = None) -> None:
        """Training ended: ``finish`` or (pressure) ``stop``, the report; exit 75 under a supervisor."""
        self.sampler.stop()
        seconds = round(time.monotonic() - self.started, 2)
        decision = self.pressure
        if decision is None:
            if not self.supervised:
                self.events.emit(ev.Finish(seconds=seconds, epochs=epochs))
        else:
            self.events.emit(ev.Stop(cause="pressure", reason=decision.words(), exit_code=EXIT_PRESSURE,
                                     step=step, need=decision.need))
        if not self.supervised:  # under oomguard run the supervisor writes it once the command is done
            write_final_report(self.run_dir, self.console)
        if decision is not None and environment.SUPERVISED in os.environ:
            self.console(f"stopped for memory pressure at step {step}; the supervisor resumes when "
                         f"{decision.need:,} bytes are available")
            raise SystemExit(EXIT_PRESSURE)
