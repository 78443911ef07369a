"""The training loop, top to bottom.

::

    callbacks.on_start(state)
    while state.epoch < epochs:
        sampler starts at (epoch, position)        # mid-epoch after a resume
        callbacks.on_epoch_start(state)
        for batch in train_loader:
            set lr for this step
            loss = guard.step(batch, task.loss)    # fits the memory budget, never loses the step
            state.step += 1; state.position += len(batch) + unreadable images it passed over
            callbacks.on_step_end(state)           # progress, timed checkpoints, pressure
            stop here if a callback or a signal asked to
        every val_every epochs and at the last: state.metrics = validate(state)
            callbacks.on_validation_end(state)
        guard.epoch_end(epoch, peak)               # the peak against the prediction: the caution follows
        callbacks.on_epoch_end(state)              # results.csv row, checkpoint, best.pt
        state.epoch += 1; state.position = 0
    callbacks.on_end(state)
"""

from __future__ import annotations

import time

import torch

from oomguard.data.sampler import mix_seed
from oomguard.engine.split import batch_size
from oomguard.loop.callbacks import Callback
from oomguard.loop.schedule import lr_at
from oomguard.loop.state import State
from oomguard.loop.stopping import StopCause, StopRequest


def should_validate(state: State) -> bool:
    epoch = state.epoch + 1
    return epoch % state.config.val_every == 0 or epoch == state.config.epochs


def validate(state: State) -> dict[str, float]:
    """Metrics over the validation set; the Guard fits each batch to the eval microbatch."""
    metrics = state.task.new_metrics()
    state.model.eval()
    state.device.release_cache()  # a validation starts from what is held, not on the heap training left
    try:
        for batch in state.val_loader:
            outputs = state.guard.evaluate(batch, state.task.predict)
            metrics.update(outputs, batch)
    finally:
        state.model.train()
    if state.group is not None:  # each rank saw its slice of the validation set
        metrics.set_totals(state.group.sum(metrics.totals()))
    return metrics.compute()


def set_lr(state: State) -> None:
    state.lr = lr_at(state.config, state.step - state.step_offset, state.steps_per_epoch)
    for group in state.optimizer.param_groups:
        group["lr"] = state.lr


def train_epoch(state: State, callbacks: Callback) -> None:
    """Train from ``state.position`` to the end of ``state.epoch`` or to a stop request."""
    state.sampler.set_epoch(state.epoch)
    state.sampler.set_start(state.position)
    state.model.train()
    for batch in state.train_loader:
        set_lr(state)
        if state.group is not None:
            # Every rank's generators are a function of (seed, step, rank): exact after any resume.
            torch.manual_seed(mix_seed(state.config.seed, state.step, state.group.rank))
        loss = state.guard.step(batch, state.task.loss)
        size = batch_size(batch)
        loss_sum = float(loss) * size
        if state.group is not None:
            loss_sum, size = agree_step(state, loss_sum, size)
        state.loss_sum += loss_sum
        state.loss_samples += size
        state.step += 1
        # Unreadable images the batch passed over are positions of the order too: a resume starts after them.
        state.position += size + state.train_loader.skipped
        state.memory.step = state.step
        if state.config.release_every and state.step % state.config.release_every == 0:
            state.device.empty_cache()  # a safer plan chosen after a memory kill
        callbacks.on_step_end(state)
        if state.stop is not None:
            return


def agree_step(state: State, loss_sum: float, size: int) -> tuple[float, int]:
    """A group's step: the summed loss and samples of all ranks, and a stop when any rank asked for one.

    One all-reduce per step. A stop asked on one rank (a signal, memory
    pressure) is taken by every rank at this same step, so rank 0's checkpoint
    is where all of them stopped; pressure anywhere makes the group's exit a pressure exit.
    """
    assert state.group is not None
    asked = state.stop_requested
    pressure = asked is not None and asked.cause is StopCause.PRESSURE
    total, samples, stops, pressed = state.group.sum(
        [loss_sum, float(size), float(asked is not None), float(pressure)])
    if stops and state.stop is None:
        if asked is not None and (pressure or not pressed):
            state.stop = asked
        elif pressed:
            state.stop = StopRequest(StopCause.PRESSURE, "memory pressure on another rank of the group")
        else:
            state.stop = StopRequest(StopCause.PEER, "another rank of the group stopped")
    return total, int(samples)


def fit(state: State, callbacks: Callback) -> State:
    """Run the loop from wherever ``state`` is until the last epoch or a stop request."""
    callbacks.on_start(state)
    try:
        if not (state.guard.microbatch and state.guard.eval_microbatch):
            # Plan train and eval together on a real batch, before the first step (a resume skips it).
            # The evaluation loader's workers, like the training loader's running now, join later.
            state.guard.plan(next(iter(state.train_loader)), state.task.loss, state.task.predict,
                             worker_sets=2.0)
            state.take_peak()  # the probe's sizes are not the plan's: the first epoch's peak starts here
        while not state.finished and state.stop is None:
            state.epoch_started = time.monotonic()
            callbacks.on_epoch_start(state)
            train_epoch(state, callbacks)
            if state.stop is not None:
                break
            if should_validate(state):
                with torch.no_grad():
                    state.metrics = validate(state)
                callbacks.on_validation_end(state)
            else:
                state.metrics = {}
            if state.group is not None:  # the epoch's peak is the largest rank's
                state.note_peak(state.group.max(state.epoch_peak))
            # The peak held against the prediction: the margin, and the sizes, follow the evidence.
            state.peak_check = state.guard.epoch_end(state.epoch_offset + state.epoch + 1, state.epoch_peak)
            callbacks.on_epoch_end(state)
            state.take_peak()  # the next epoch's peak starts now (atomically: the sampler writes it too)
            state.epoch += 1
            state.position = 0
            state.loss_sum, state.loss_samples = 0.0, 0
            state.epoch_seconds_before = 0.0
    finally:
        callbacks.on_end(state)
    return state
