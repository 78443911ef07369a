"""One training run of the built-in loop, from a config and a run directory to an :class:`Outcome`.

::

    outcome = run_training(config, RunDir(config.run_dir), resume=True)

    lock the run directory (a group's launcher holds it for its ranks)
    stages.first(resume)          -> the State to train: stage 0, or where the newest checkpoint left off
    start event; the data event and its console lines (layout, split, images left out)
    for each stage from there:    stage event; fit(state, callbacks) under Ctrl-C handling
        a stop request ends the loop (a signal, memory pressure, failing checkpoints)
    finish or stop event, the console line that says what comes next

This is what ``oomguard train`` runs in its training process and in every
rank of a group; a Python program can call it the same way.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING

from oomguard.checkpoint import RunLock
from oomguard.config import Config
from oomguard.events import EventLog
from oomguard.loop.callbacks import Callback, CallbackList
from oomguard.loop.checkpointing import Checkpointing
from oomguard.loop.guardian import MemoryGuardian
from oomguard.loop.lifecycle import Outcome, announce_end, announce_start
from oomguard.loop.progress import ProgressPrinter
from oomguard.loop.results import ResultsWriter
from oomguard.loop.signals import stop_on_signals
from oomguard.loop.stages import Stages, total_epochs
from oomguard.loop.state import State
from oomguard.loop.train import fit
from oomguard.rundir import RunDir

if TYPE_CHECKING:
    from oomguard.distributed.group import Group


def run_training(config: Config, run: RunDir, resume: bool, group: Group | None = None,
                 printer: ProgressPrinter | None = None) -> Outcome:
    """Train ``config`` into ``run`` (from its newest checkpoint with ``resume``), alone or as a rank."""
    started = time.monotonic()
    main = group is None or group.is_main
    printer = printer or ProgressPrinter(quiet=not main)
    # A group's launcher holds the run's lock for all its ranks.
    with RunLock(run.root) if group is None else contextlib.nullcontext():
        events = EventLog(run.events, rank=group.rank if group is not None else 0)
        stages = Stages(config, run, events, say=printer.print, group=group)
        state, resumed = stages.first(resume)
        pids = [pid for (pid,) in group.gather_ints([os.getpid()])] if group is not None else None
        if main:
            announce_start(events, config, resume=resumed is not None, device=str(state.device.torch_device),
                           budget=state.guard.budget.limit, epoch=state.epoch, step=state.step,
                           ranks=group.world if group is not None else None, pids=pids,
                           steps_per_epoch=state.steps_per_epoch,
                           savers=list(state.guard.savers.possible()),
                           savers_on=list(state.guard.savers.in_force))
            note = state.device.mixed_precision().note if config.amp is True else None
            if note is not None:
                printer.print(note)  # once per run, not once per stage
        if main and state.task.data is not None:
            state.task.data.announce(events, printer.print)  # the layout, the split, images left out
        if resumed is not None:
            printer.print(f"resuming {run.root} from {resumed.name}: epoch {state.epoch + 1}, "
                          f"sample {state.position}, step {state.step}")
        current: State | None = state
        while current is not None:
            state = current
            stages.announce(state, resumed=resumed is not None and state.step > state.step_offset)
            fit_stage(state, printer)
            if state.stop is not None:
                break
            current = stages.next(state)
        outcome = Outcome(stop=state.stop, seconds=time.monotonic() - started,
                          epochs=total_epochs(stages.configs), epoch=state.epoch_offset + state.epoch,
                          step=state.step, best=state.best, metric=state.task.primary_metric,
                          metrics=dict(state.metrics), microbatch=state.guard.microbatch)
        if main:
            announce_end(events, outcome, config, printer.print, run.root)
    return outcome


def stage_callbacks(state: State, printer: ProgressPrinter) -> list[Callback]:
    """The callbacks of one stage: rank 0 (or the only process) records; other ranks watch memory only."""
    checkpointing = Checkpointing(state, console=printer.print)
    guardian = MemoryGuardian(state, checkpointing, console=printer.print)
    if not state.is_main:
        return [checkpointing, guardian]
    chain: list[Callback] = [printer, ResultsWriter(state.task.metric_names, staged=state.stage is not None),
                             checkpointing, guardian]
    if state.config.tensorboard:
        from oomguard.loop.tensorboard import TensorBoardCallback

        chain.append(TensorBoardCallback(state))
    return chain


def fit_stage(state: State, printer: ProgressPrinter) -> None:
    """Train one stage (the whole run without ``stages:``) from wherever ``state`` is."""
    chain = CallbackList(stage_callbacks(state, printer))
    state.memory.start()
    try:
        with stop_on_signals(state.request_stop, rank=state.group.rank if state.group is not None else None):
            fit(state, chain)
    finally:
        state.memory.stop()
