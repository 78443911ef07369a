"""Checkpoints from the loop: at every epoch end, every ``checkpoint_every`` seconds, and on a stop.

``checkpoint_every=auto`` (the default) adapts the interval to what each
checkpoint costs (:mod:`oomguard.loop.cadence`): under 1% of the training
time, every 30 s to 2 minutes.

A checkpoint is taken at a step boundary: a fast in-memory snapshot on the
training thread, then written by a background thread. It holds everything a
resumed run needs to continue as if it had never stopped: weights, optimizer,
the position inside the epoch (``epoch_step`` counts samples here), data
order, RNG states and the memory plan.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from oomguard.checkpoint import AsyncCheckpointer, CheckpointStore, SaveResult, capture_state, restore_state
from oomguard.loop.cadence import Cadence
from oomguard.loop.callbacks import Callback
from oomguard.loop.state import State
from oomguard.loop.stopping import StopCause


def capture(state: State, *, epoch_done: bool = False) -> dict[str, Any]:
    """Live references to everything needed to resume; at an epoch end, the next epoch's start."""
    epoch, position = (state.epoch + 1, 0) if epoch_done else (state.epoch, state.position)
    elapsed = state.epoch_seconds_before + time.monotonic() - state.epoch_started
    loop = {
        "lr": state.lr,
        "metrics": dict(state.metrics),
        "loss_sum": 0.0 if epoch_done else state.loss_sum,
        "loss_samples": 0 if epoch_done else state.loss_samples,
        "epoch_seconds": 0.0 if epoch_done else elapsed,
        "epoch_peak": 0 if epoch_done else state.epoch_peak,
    }
    if state.stage is not None:
        loop.update(stage=state.stage, epoch_offset=state.epoch_offset, step_offset=state.step_offset)
    return capture_state(
        model=state.model, optimizer=state.optimizer, epoch=epoch, step=state.step, epoch_step=position,
        scaler=state.scaler, sampler=state.sampler.state_dict(), plan=state.guard.state_dict(),
        best_metric=state.best, config=state.config, device=state.device, extra=loop,
    )


def restore(state: State, checkpoint: dict[str, Any]) -> None:
    """Load a checkpoint from :func:`capture` into a freshly built ``state``."""
    point = restore_state(checkpoint, model=state.model, optimizer=state.optimizer, scaler=state.scaler,
                          device=state.device)
    state.epoch, state.step, state.position = point.epoch, point.step, point.epoch_step
    if point.sampler is not None:
        state.sampler.load_state_dict(point.sampler)
    state.guard.load_state_dict(point.plan)
    state.best = point.best_metric
    loop = point.extra
    state.lr = float(loop.get("lr", 0.0))
    state.metrics = dict(loop.get("metrics") or {})
    state.loss_sum = float(loop.get("loss_sum", 0.0))
    state.loss_samples = int(loop.get("loss_samples", 0))
    state.epoch_seconds_before = float(loop.get("epoch_seconds", 0.0))
    state.epoch_peak = int(loop.get("epoch_peak", 0))
    if "stage" in loop:
        state.stage = int(loop["stage"])
        state.epoch_offset = int(loop.get("epoch_offset", 0))
        state.step_offset = int(loop.get("step_offset", 0))


class Checkpointing(Callback):
    """Saves at epoch ends, on a timer and when the loop stops early (resuming: loop/stages.py)."""

    def __init__(self, state: State, console: Callable[[str], None] | None = None) -> None:
        self.store = CheckpointStore(state.run.weights, keep=state.config.keep, events=state.events,
                                     console=console)
        self.cadence = Cadence(state.config.checkpoint_every)
        self.writer = AsyncCheckpointer(self.store, every=self.cadence.interval)
        self._measured: SaveResult | None = None
        self._best_this_epoch = False
        #: Only rank 0 of a group writes: every rank holds the same weights, optimizer and data position.
        self.writes = state.is_main

    def _save(self, state: State, *, epoch_done: bool, best: bool = False) -> None:
        if not self.writes:
            return
        self.writer.submit(capture(state, epoch_done=epoch_done), step=state.step, best=best)
        # The copy lives in host memory while it is written: on CPU and unified memory the plan keeps
        # room for it (the probe measured one; a given microbatch has no probe), and the epoch it is
        # written in predicts its peak with it.
        state.guard.add_snapshot_bytes(self.writer.snapshot_bytes)

    def save_now(self, state: State) -> None:
        """An emergency checkpoint at this step boundary, written before this returns."""
        self._save(state, epoch_done=False)
        self.writer.wait()

    def _adapt(self) -> None:
        """Once a write is done, learn its cost: the interval until the next timed checkpoint."""
        result = self.writer.last_result
        if result is None or result is self._measured or not result.ok or self.writer.busy:
            return
        self._measured = result
        self.writer.every = self.cadence.measured(self.writer.submit_seconds, result.seconds)

    def on_step_end(self, state: State) -> None:
        self._adapt()
        if self.writes and self.writer.due():
            self._save(state, epoch_done=False)
        if self.writer.should_stop:
            state.request_stop(StopCause.CHECKPOINTS_FAILING, self.writer.stop_reason)

    def on_validation_end(self, state: State) -> None:
        value = state.metrics.get(state.task.primary_metric)
        self._best_this_epoch = value is not None and (state.best is None or value > state.best)
        if self._best_this_epoch:
            state.best = value

    def on_epoch_end(self, state: State) -> None:
        self._save(state, epoch_done=True, best=self._best_this_epoch)
        self._best_this_epoch = False

    def on_end(self, state: State) -> None:
        if state.stop is not None:
            self._save(state, epoch_done=False)
        self.writer.close()
