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

from rich.console import Console

from oomguard.cli.args import resolve_config, write_config
from oomguard.config import Config
from oomguard.errors import ConfigError
from oomguard.rundir import RunDir

EXIT_INTERRUPTED = 130


def train_command(args: list[str], resume: bool, supervise: bool) -> int:
    config = resolve_config(args, resume)
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("tensorboard=true needs tensorboard: pip install tensorboard")
    run = RunDir(config.run_dir)
    run.prepare(resume)
    write_config(config, run)
    if supervise:
        from oomguard.supervise.train import child_argv, supervise_train

        return supervise_train(child_argv(args), run.root, config.max_restarts, config.memory_cap,
                               config.allow_degrade, Console(highlight=False, markup=False))
    return train_in_process(config, run, resume)


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
    from oomguard.events import EventLog
    from oomguard.loop.callbacks import CallbackList
    from oomguard.loop.checkpointing import Checkpointing
    from oomguard.loop.progress import ProgressPrinter
    from oomguard.loop.results import ResultsWriter
    from oomguard.loop.setup import build_state
    from oomguard.loop.train import fit

    started = time.monotonic()
    with RunLock(run.root):
        events = EventLog(run.events)
        state = build_state(config, run, events)
        printer = ProgressPrinter()
        checkpointing = Checkpointing(state, console=printer.print)
        resumed = checkpointing.restore_latest() if resume else None
        events.emit(
            "start", pid=os.getpid(), resume=resumed is not None, device=str(state.device.torch_device),
            budget=state.guard.budget.limit, epoch=state.epoch, step=state.step,
            attempt=int(os.environ.get("OOMGUARD_ATTEMPT", "1")), config=config.model_dump(mode="json"),
        )
        if resumed is not None:
            printer.print(f"resuming {run.root} from {resumed.name}: epoch {state.epoch + 1}, "
                          f"sample {state.position}, step {state.step}")
        chain = [printer, ResultsWriter(state.task.metric_names), checkpointing]
        if config.tensorboard:
            from oomguard.loop.tensorboard import TensorBoardCallback

            chain.append(TensorBoardCallback(state))
        callbacks = CallbackList(chain)
        state.memory.start()
        try:
            with stop_on_signals(state.request_stop):
                fit(state, callbacks)
        finally:
            state.memory.stop()
        seconds = time.monotonic() - started
        if state.stop_reason is not None:
            events.emit("stop", reason=state.stop_reason, epoch=state.epoch, step=state.step)
            printer.print(f"stopped ({state.stop_reason}); continue with: oomguard train --resume "
                          f"project={config.project} name={config.name}")
            return EXIT_INTERRUPTED
        events.emit("finish", epochs=config.epochs, seconds=round(seconds, 2), best=state.best,
                    metrics=state.metrics)
    best = state.best if state.best is not None else float("nan")
    printer.print(f"finished in {seconds:.0f}s; best {state.task.primary_metric} {best:.4f}; "
                  f"results in {run.root}")
    _write_report(run, printer.print)
    return 0


def _write_report(run: RunDir, say: Callable[[str], None]) -> None:
    """The report at the end of a run; a plotting failure must not fail a finished training."""
    from oomguard.report import write_report

    try:
        paths = write_report(run.root)
    except Exception as err:  # the run itself succeeded
        say(f"report not written ({type(err).__name__}: {err}); try: oomguard report {run.root}")
        return
    say(f"report: {paths.html}")
