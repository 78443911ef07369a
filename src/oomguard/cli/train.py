"""``oomguard train``: config -> run directory -> (supervisor ->) loop -> report."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

from rich.console import Console

from oomguard.cli.args import resolve_config, write_config
from oomguard.config import Config
from oomguard.detect import check_detect_config, is_detect
from oomguard.errors import ConfigError
from oomguard.rundir import RunDir
from oomguard.units import format_bytes

if TYPE_CHECKING:
    from oomguard.loop.progress import ProgressPrinter
    from oomguard.loop.state import State

EXIT_INTERRUPTED = 130


def train_command(args: list[str], resume: bool, supervise: bool) -> int:
    config = resolve_config(args, resume)
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("tensorboard=true needs tensorboard: pip install tensorboard")
    if is_detect(config):
        check_detect_config(config)
    if config.stages:
        from oomguard.loop.stages import stage_configs

        stage_configs(config)  # a bad stage is refused before the run directory exists
    if config.rehearse:
        return rehearse_command(config)
    run = RunDir(config.run_dir)
    run.prepare(resume)
    write_config(config, run)
    if supervise:
        from oomguard.supervise.train import child_argv, supervise_train

        return supervise_train(child_argv(args), run.root, config.max_restarts, config.memory_cap,
                               config.allow_degrade, Console(highlight=False, markup=False))
    return train_in_process(config, run, resume)


def rehearse_command(config: Config) -> int:
    """``rehearse=true``: a short run in a temporary directory; 0 when the full run is projected to fit."""
    from oomguard.loop.rehearsal import rehearse
    from oomguard.loop.setup import build_state

    say = Console(highlight=False, markup=False).print
    projection = rehearse(config, build_state, say=say)
    say(projection.words())
    return 0 if projection.fits else 1


@contextmanager
def stop_on_signals(request_stop: object) -> Iterator[None]:
    """First Ctrl-C/SIGTERM: stop at the next step boundary, after a checkpoint; second: now."""
    seen: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if seen:
            raise KeyboardInterrupt
        seen.append(signum)
        print("\noomguard: stopping after this step (checkpointing); Ctrl-C again to stop now",
              file=sys.stderr)
        request_stop(f"signal {signal.Signals(signum).name}")  # type: ignore[operator]

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def train_in_process(config: Config, run: RunDir, resume: bool) -> int:
    """Train in this process; the exit code says how it ended."""
    from oomguard.checkpoint import RunLock

    if is_detect(config):  # ultralytics trains; oomguard plans, records and resumes
        from oomguard.detect import train_detect

        with RunLock(run.root):
            code = train_detect(config, run, resume)
        _write_report(run, print)
        return code
    from oomguard.events import EventLog
    from oomguard.loop.progress import ProgressPrinter
    from oomguard.loop.stages import Stages, total_epochs

    started = time.monotonic()
    with RunLock(run.root):
        events = EventLog(run.events)
        printer = ProgressPrinter()
        stages = Stages(config, run, events, say=printer.print)
        state, resumed = stages.first(resume)
        events.emit(
            "start", pid=os.getpid(), resume=resumed is not None, device=str(state.device.torch_device),
            budget=state.guard.budget.limit, epoch=state.epoch, step=state.step,
            attempt=int(os.environ.get("OOMGUARD_ATTEMPT", "1")), config=config.model_dump(mode="json"),
        )
        if resumed is not None:
            printer.print(f"resuming {run.root} from {resumed.name}: epoch {state.epoch + 1}, "
                          f"sample {state.position}, step {state.step}")
        current: State | None = state
        while current is not None:
            state = current
            stages.announce(state, resumed=resumed is not None and state.step > state.step_offset)
            _fit_stage(state, printer)
            if state.stop_reason is not None:
                break
            current = stages.next(state)
        seconds = time.monotonic() - started
        if state.stop_reason is not None:
            events.emit("stop", reason=state.stop_reason, epoch=state.epoch, step=state.step)
            if "exit_code" in state.extra:  # memory pressure that shrinking did not relieve
                printer.print(f"stopped: {state.stop_reason}, even at microbatch {state.guard.microbatch}; "
                              f"checkpointed at step {state.step}; resume when "
                              f"{format_bytes(state.extra['need'])} is available (the supervisor waits "
                              f"for it): oomguard train --resume project={config.project} name={config.name}")
                return int(state.extra["exit_code"])
            printer.print(f"stopped ({state.stop_reason}); continue with: oomguard train --resume "
                          f"project={config.project} name={config.name}")
            return EXIT_INTERRUPTED
        events.emit("finish", epochs=total_epochs(stages.configs), seconds=round(seconds, 2), best=state.best,
                    metrics=state.metrics)
    best = state.best if state.best is not None else float("nan")
    printer.print(f"finished in {seconds:.0f}s; best {state.task.primary_metric} {best:.4f}; "
                  f"results in {run.root}")
    _write_report(run, printer.print)
    return 0


def _fit_stage(state: State, printer: ProgressPrinter) -> None:
    """Train one stage (the whole run without ``stages:``) from wherever ``state`` is."""
    from oomguard.loop.callbacks import CallbackList
    from oomguard.loop.checkpointing import Checkpointing
    from oomguard.loop.guardian import MemoryGuardian
    from oomguard.loop.results import ResultsWriter
    from oomguard.loop.train import fit

    checkpointing = Checkpointing(state, console=printer.print)
    chain = [printer, ResultsWriter(state.task.metric_names, staged=state.stage is not None), checkpointing,
             MemoryGuardian(state, checkpointing, console=printer.print)]
    if state.config.tensorboard:
        from oomguard.loop.tensorboard import TensorBoardCallback

        chain.append(TensorBoardCallback(state))
    callbacks = CallbackList(chain)
    state.memory.start()
    try:
        with stop_on_signals(state.request_stop):
            fit(state, callbacks)
    finally:
        state.memory.stop()


def _write_report(run: RunDir, say: Callable[[str], None]) -> None:
    """The report at the end of a run; a plotting failure must not fail a finished training."""
    from oomguard.report import write_report

    try:
        paths = write_report(run.root)
    except Exception as err:  # the run itself succeeded
        say(f"report not written ({type(err).__name__}: {err}); try: oomguard report {run.root}")
        return
    say(f"report: {paths.html}")
