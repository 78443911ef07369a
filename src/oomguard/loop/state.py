"""The one object every part of the loop and every callback sees."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from oomguard.config import Config
from oomguard.devices import Device
from oomguard.events import EventLog, PeakCheck
from oomguard.loop.stopping import StopCause, StopRequest
from oomguard.memory.sampler import MemorySampler
from oomguard.rundir import RunDir

if TYPE_CHECKING:
    from oomguard.data.loader import TrainBatches
    from oomguard.data.sampler import ResumableSampler
    from oomguard.distributed.group import Group
    from oomguard.engine.guard import Guard
    from oomguard.tasks.base import Task


@dataclass
class State:
    """Where the run is and everything it trains with.

    ``epoch`` counts from 0 and is the epoch in progress; ``position`` is the
    number of samples of that epoch already trained on, so a checkpoint taken
    between two steps resumes at exactly the next sample.
    """

    config: Config
    run: RunDir
    device: Device
    task: Task
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    guard: Guard
    sampler: ResumableSampler
    events: EventLog
    memory: MemorySampler
    train_loader: TrainBatches
    val_loader: Iterable[Any]
    steps_per_epoch: int
    scaler: torch.amp.GradScaler | None = None
    epoch: int = 0
    step: int = 0
    position: int = 0
    lr: float = 0.0
    loss_sum: float = 0.0  # over the epoch in progress, weighted by samples
    loss_samples: int = 0
    best: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    epoch_peak: int = 0
    epoch_started: float = field(default_factory=time.monotonic)
    epoch_seconds_before: float = 0.0  # time spent on this epoch before a resume
    #: The stop the loop takes at the next step boundary (None: train on).
    stop: StopRequest | None = None
    stage: int | None = None  # the index into ``stages:``; None for a run without stages
    epoch_offset: int = 0  # epochs of the stages before this one (results.csv numbers across stages)
    step_offset: int = 0  # the global step this stage started at (its lr schedule starts over)
    group: Group | None = None  # the data-parallel group this process is a rank of
    #: A rank's own stop request, until the group agrees on it (at the next step) and stops together.
    stop_requested: StopRequest | None = None
    #: The finished epoch's peak held against the plan's prediction (results.csv's predicted_peak_mb).
    peak_check: PeakCheck | None = None
    #: The epoch's peak memory is written by the sampler thread and read and reset by the loop.
    peak_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def is_main(self) -> bool:
        """The process that writes checkpoints, results.csv and the report (rank 0, or the only one)."""
        return self.group is None or self.group.is_main

    @property
    def train_loss(self) -> float:
        return self.loss_sum / self.loss_samples if self.loss_samples else float("nan")

    @property
    def finished(self) -> bool:
        return self.epoch >= self.config.epochs

    def request_stop(self, cause: StopCause, reason: str, need: int | None = None) -> None:
        """Ask the loop to stop at the next step boundary (after a checkpoint); a group, a step later."""
        request = StopRequest(cause, reason, need)
        if self.group is not None:
            self.stop_requested = self.stop_requested or request
        elif self.stop is None:
            self.stop = request

    def note_peak(self, used: int) -> None:
        """Raise the epoch's peak to ``used`` bytes (the sampler thread calls this)."""
        with self.peak_lock:
            if used > self.epoch_peak:
                self.epoch_peak = used

    def take_peak(self) -> int:
        """The epoch's peak so far, and a new epoch's peak starts at 0 (one atomic step)."""
        with self.peak_lock:
            peak, self.epoch_peak = self.epoch_peak, 0
        return peak
