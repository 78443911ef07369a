"""Checkpoints under memory pressure inside ultralytics' loops: training batches and validation.

Ultralytics checkpoints only at epoch ends and knows nothing of other programs
taking the machine's memory. :class:`PressureCallbacks` runs the same pressure
decision as every oomguard loop (:class:`~oomguard.memory.pressure.PressureWatch`)
after every training batch and every validation batch:

- First time under ``min_available``: a ``pressure`` event (``action:
  "checkpoint"``), an emergency checkpoint (its ``checkpoint`` event) and the
  caches released; training goes on. Ultralytics cannot change its batch size
  inside a training, so there is no smaller step to go to here (the supervisor's
  restart applies a smaller ``batch``).
- Pressure that persists: a ``pressure`` event (``action: "exit"``, ``need``:
  the memory the supervisor waits for), a fresh checkpoint, and
  :class:`PressureExit` out of ultralytics' loop; the run exits with status 75
  and the supervisor restarts it with ``--resume``.

The checkpoint is ultralytics' own ``last.pt``, so that ``resume=True`` takes
it. Ultralytics stores the last *finished* epoch and resumes at the next one:

- during training of epoch ``e`` it stores ``e - 1``, and the resume redoes
  epoch ``e`` from the current weights, optimizer and EMA (the batches already
  seen in it are seen again). In a first epoch (of a run or of a stage) no
  resumable save exists (ultralytics refuses to resume "before" epoch 1): the
  console says so, and a restart begins that epoch again.
- during validation, epoch ``e``'s training is complete. A first low reading
  only releases the caches (the epoch's own save follows the validation).
  Pressure that persists records epoch ``e``'s row with its training losses
  and no validation metrics, stores ``e`` and exits: the resume starts at ``e + 1``.

Raising instead of ``trainer.stop = True`` matters: a stop would let
ultralytics validate and save the half epoch as a finished one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oomguard import events as ev
from oomguard.atomic import temp_path
from oomguard.devices import Device
from oomguard.events import EventLog
from oomguard.memory.pressure import PressureDecision, PressureWatch
from oomguard.memory.sampler import MemorySampler


class PressureExit(Exception):
    """Memory pressure persisted: leave ultralytics' loop; the run exits with status 75."""

    def __init__(self, decision: PressureDecision, kept: str, done: int, step: int) -> None:
        super().__init__(f"{decision.words()}; {kept}")
        #: Epochs (across stages) finished and saved where the run resumes from.
        self.decision, self.done, self.step = decision, done, step


def save_resumable(trainer: Any, finished: int) -> Path | None:
    """Ultralytics' ``last.pt`` as if epoch ``finished`` (0-based, -1: none) were the last one done.

    None when no epoch is finished: ultralytics cannot resume inside a first
    epoch. Written under a temporary name and renamed (ultralytics' own
    ``save_model`` writes in place), and with ``fitness`` hidden meanwhile so
    that ``best.pt`` (the best finished epoch) is not replaced by half an epoch.
    """
    if finished < 0:
        return None
    epoch, fitness, last = trainer.epoch, trainer.fitness, Path(trainer.last)
    tmp = temp_path(last)
    trainer.epoch, trainer.fitness, trainer.last = finished, None, tmp
    try:
        trainer.save_model()
    finally:
        trainer.epoch, trainer.fitness, trainer.last = epoch, fitness, last
    tmp.replace(last)
    return last


class PressureCallbacks:
    """``on_train_batch_end`` and ``on_val_batch_end``, as described in the module docstring."""

    def __init__(self, min_available: str | int, device: Device, events: EventLog, sampler: MemorySampler,
                 peak: Callable[[], int], say: Callable[[str], None],
                 record_unvalidated: Callable[[Any], None]) -> None:
        self.watch = PressureWatch(min_available)
        self.device, self.events, self.sampler, self.peak, self.say = device, events, sampler, peak, say
        #: Writes the row and weights of an epoch whose validation pressure cut short.
        self.record_unvalidated = record_unvalidated
        self.epoch_offset, self.batch, self.step = 0, 0, 0
        self.trainer: Any = None

    def stage(self, epoch_offset: int, batch: int) -> None:
        """A stage (the whole run without ``stages:``) starts: its epoch numbering and images per step."""
        self.epoch_offset, self.batch = epoch_offset, batch

    def on_train_epoch_start(self, trainer: Any) -> None:
        self.trainer = trainer  # the validator's callbacks get the validator; the save needs the trainer

    def on_train_batch_end(self, trainer: Any) -> None:
        self.step += 1
        self._check(trainer, validating=False)

    def on_val_batch_end(self, validator: Any) -> None:
        trainer = self.trainer
        if trainer is not None and getattr(validator, "training", False):
            self._check(trainer, validating=True)

    def _check(self, trainer: Any, validating: bool) -> None:
        latest = self.sampler.latest  # the sampler's reading: no /proc read on the training thread
        decision = self.watch.check(latest.system_available if latest is not None else None, self.peak(),
                                    can_shrink=False)
        if decision is None:
            return
        epoch = self.epoch_offset + trainer.epoch + 1  # the epoch being trained, numbered across stages
        action = "exit" if decision.exits else "checkpoint"
        self.events.emit(ev.Pressure(step=self.step, epoch=epoch, available=decision.available,
                                     min_available=decision.min_available, need=decision.need,
                                     microbatch=self.batch, action=action))
        if validating and not decision.exits:
            self.device.empty_cache()  # the epoch's own checkpoint follows its validation
            self.say(f"{decision.words()} during validation; caches released")
            return
        if validating:
            self.record_unvalidated(trainer)
        path = self._checkpoint(trainer, trainer.epoch if validating else trainer.epoch - 1)
        self.device.empty_cache()
        if path is not None:
            kept = "checkpointed"
        else:
            kept = f"no resumable checkpoint inside a first epoch (epoch {epoch} starts over on resume)"
        if decision.exits:
            raise PressureExit(decision, kept, epoch if validating else epoch - 1, self.step)
        self.say(f"{decision.words()}; {kept}, caches released")

    def _checkpoint(self, trainer: Any, finished: int) -> Path | None:
        started = time.monotonic()
        path = save_resumable(trainer, finished)
        if path is not None:
            self.events.emit(ev.Checkpoint(path=str(path), epoch=self.epoch_offset + finished + 1,
                                           step=self.step, seconds=round(time.monotonic() - started, 3),
                                           bytes=path.stat().st_size))
        return path
