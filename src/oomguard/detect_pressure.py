"""Pressure checkpoints for ``task=detect``: oomguard's pressure watch inside ultralytics' batch loop.

Ultralytics checkpoints only at epoch ends and knows nothing of other programs
taking the machine's memory. :class:`PressureWatch` is an ``on_train_batch_end``
callback that runs :class:`~oomguard.memory.pressure.PressureMonitor` on every
batch, as the built-in loop's guardian does:

- First time under ``min_available``: a ``pressure`` event (``action:
  "checkpoint"``), an emergency checkpoint (its ``checkpoint`` event) and the
  caches released; training goes on. Ultralytics cannot change its batch size
  inside an epoch, so there is no microbatch rung to go down.
- Pressure that persists (acted on before and still low after ``patience``
  batches, or ``give_up`` batches in a row): a ``pressure`` event (``action:
  "exit"``, ``need``: the memory the supervisor waits for), a fresh checkpoint,
  and :class:`PressureExit` out of ultralytics' loop; the run exits with
  ``EXIT_PRESSURE`` (75) and the supervisor restarts it with ``--resume``.

The checkpoint is ultralytics' own ``last.pt``, so that ``resume=True`` takes
it. Ultralytics stores the last *finished* epoch and resumes at the next one,
so a save in the middle of epoch ``e`` stores ``e - 1``: the resume redoes
epoch ``e`` from the current weights, optimizer and EMA (the batches already
seen in it are seen again). In a first epoch (of a run or of a stage) no
resumable save exists (ultralytics refuses to resume "before" epoch 1): no
``checkpoint`` event follows the ``pressure`` event, the console says so, and a
restart begins that epoch again from the start weights. Raising instead of
``trainer.stop = True`` matters: a stop would let ultralytics validate and save
the half epoch as a finished one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oomguard import host
from oomguard.devices import Device
from oomguard.events import EventLog
from oomguard.memory.pressure import Action, PressureMonitor, resolve_min_available
from oomguard.memory.sampler import MemorySampler
from oomguard.units import format_bytes


class PressureExit(Exception):
    """Memory pressure persisted: leave ultralytics' loop; the run exits ``EXIT_PRESSURE``."""

    def __init__(self, reason: str, need: int, epoch: int, step: int) -> None:
        super().__init__(reason)
        self.reason, self.need, self.epoch, self.step = reason, need, epoch, step


def save_resumable(trainer: Any) -> Path | None:
    """Ultralytics' ``last.pt`` from inside an epoch, for ``resume=True``; None in a first epoch.

    Written to a temporary file and renamed, so a kill never leaves half a
    ``last.pt``; ``fitness`` is hidden meanwhile so that ``best.pt`` (the best
    finished epoch) is not replaced by half an epoch.
    """
    if trainer.epoch < 1:
        return None
    epoch, fitness, last = trainer.epoch, trainer.fitness, Path(trainer.last)
    tmp = last.with_name(last.name + ".tmp")
    trainer.epoch, trainer.fitness, trainer.last = epoch - 1, None, tmp
    try:
        trainer.save_model()
    finally:
        trainer.epoch, trainer.fitness, trainer.last = epoch, fitness, last
    os.replace(tmp, last)
    return last


class PressureWatch:
    """The ``on_train_batch_end`` callback described in the module docstring."""

    def __init__(self, min_available: str | int, device: Device, events: EventLog, sampler: MemorySampler,
                 peak: Callable[[], int], say: Callable[[str], None]) -> None:
        self.total = host.total_memory()
        self.min_available = resolve_min_available(min_available, self.total)
        self.monitor = PressureMonitor(self.min_available)
        self.device, self.events, self.sampler, self.peak, self.say = device, events, sampler, peak, say
        self.epoch_offset, self.microbatch, self.step = 0, 0, 0

    def stage(self, epoch_offset: int, microbatch: int) -> None:
        """A stage (the whole run without ``stages:``) starts: its epoch numbering and microbatch."""
        self.epoch_offset, self.microbatch = epoch_offset, microbatch

    def on_train_batch_end(self, trainer: Any) -> None:
        self.step += 1
        latest = self.sampler.latest  # the sampler's reading: no /proc read on the training thread
        available = latest.system_available if latest is not None else host.available_memory()
        swap = host.swap_used() if available < 2 * self.min_available else None
        action = self.monitor.check(available, swap)
        if action in (Action.OK, Action.WAIT):
            return
        exiting = action is Action.EXIT or self.monitor.low > 1
        need = self.monitor.need(max(self.peak(), host.tree_rss()), self.total)
        epoch = self.epoch_offset + trainer.epoch + 1  # the epoch being trained, numbered across stages
        self.events.emit("pressure", step=self.step, epoch=epoch, available=available,
                         min_available=self.min_available, need=need, microbatch=self.microbatch,
                         action="exit" if exiting else "checkpoint")
        saved = self._checkpoint(trainer)
        self.device.empty_cache()
        low = (f"memory pressure: {format_bytes(available)} available, under min_available "
               f"{format_bytes(self.min_available)}")
        kept = ("checkpointed" if saved else
                f"no resumable checkpoint inside a first epoch (epoch {epoch} starts over on resume)")
        if exiting:
            raise PressureExit(f"{low}; {kept}", need, epoch, self.step)
        self.say(f"{low}; {kept}, caches released")

    def _checkpoint(self, trainer: Any) -> Path | None:
        started = time.monotonic()
        path = save_resumable(trainer)
        if path is not None:
            self.events.emit("checkpoint", path=str(path), epoch=self.epoch_offset + trainer.epoch,
                             step=self.step, seconds=round(time.monotonic() - started, 3),
                             bytes=path.stat().st_size)
        return path
