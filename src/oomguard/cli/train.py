"""``oomguard train``: config -> run directory -> (supervisor ->) loop -> report."""

from __future__ import annotations

import contextlib
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
    from oomguard.distributed.group import Group
    from oomguard.loop.progress import ProgressPrinter
    from oomguard.loop.state import State

EXIT_INTERRUPTED = 130


def train_command(args: list[str], resume: bool, supervise: bool) -> int:
    config = resolve_config(args, resume)
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("tensorboard=true needs tensorboard: pip install tensorboard")
    if is_detect(config):
        check_detect_config(config)
        if config.world_size > 1:
            raise ConfigError("nproc/nnodes are not available with task=detect yet; train detection on one "
                              "process (ultralytics' own multi-GPU runs outside oomguard)")
    if config.stages:
        from oomguard.loop.stages import stage_configs

        stage_configs(config)  # a bad stage is refused before the run directory exists
    if config.rehearse:
        return rehearse_command(config)
    run = RunDir(config.run_dir)
    from oomguard.distributed.group import launched_rank

    if launched_rank():  # one rank of a group: the launcher prepared the run directory
        from oomguard.distributed.launch import GROUP_ENV

        if GROUP_ENV not in os.environ:
            raise ConfigError("start a data-parallel run with oomguard train nproc=N, not torchrun: "
                              "oomguard launches the ranks itself")
        return train_in_process(config, run, resume=True)
    run.prepare(resume)
    write_config(config, run)
    if config.world_size > 1 and not supervise:  # this process becomes the group's launcher
        from oomguard.checkpoint import RunLock
        from oomguard.distributed.launch import launch_group

        with RunLock(run.root):
            code = launch_group(config, args)
        if code == 0 and config.node_rank == 0:
            _write_report(run, print)
        return code
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
def stop_on_signals(request_stop: object, rank: int | None = None) -> Iterator[None]:
    """First Ctrl-C/SIGTERM: stop at the next step boundary, after a checkpoint; second: now.

    A ``rank`` of a group only ever stops at a step boundary (the launcher's own
    stop follows the terminal's Ctrl-C; the launcher kills it if it takes too
    long), and only rank 0 says so.
    """
    repeat_stops_now = rank is None
    seen: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if seen and repeat_stops_now:
            raise KeyboardInterrupt
        if seen:
            return
        seen.append(signum)
        if not rank:
            print("\noomguard: stopping after this step (checkpointing)"
                  + ("; Ctrl-C again to stop now" if repeat_stops_now else ""), file=sys.stderr)
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
    from oomguard.distributed.group import launched_rank

    if is_detect(config):  # ultralytics trains; oomguard plans, records and resumes
        from oomguard.detect import train_detect

        with RunLock(run.root):
            code = train_detect(config, run, resume)
        if code == 0:  # a pressure exit is resumed; the report comes at the end
            _write_report(run, print)
        return code
    started = time.monotonic()
    group = _join_group(config) if launched_rank() else None
    code = _train_stages(config, run, resume, group, started)
    if group is not None:  # a rank leaving with its process group alive can abort in gloo's teardown
        group.close()  # (not after an error: NCCL's teardown may wait on a peer's pending collective)
    return code


def _train_stages(config: Config, run: RunDir, resume: bool, group: Group | None, started: float) -> int:
    """The built-in loop over the config's stages, alone or as one rank of ``group``."""
    from oomguard.checkpoint import RunLock
    from oomguard.events import EventLog
    from oomguard.loop.progress import ProgressPrinter
    from oomguard.loop.stages import Stages, total_epochs

    main = group is None or group.is_main
    # A group's launcher holds the run's lock for all its ranks.
    with RunLock(run.root) if group is None else contextlib.nullcontext():
        events = EventLog(run.events, rank=group.rank if group is not None else 0)
        printer = ProgressPrinter(quiet=not main)
        stages = Stages(config, run, events, say=printer.print, group=group)
        state, resumed = stages.first(resume)
        ranks = {"ranks": group.world, "pids": [pid for (pid,) in group.gather_ints([os.getpid()])]} \
            if group is not None else {}
        if main:
            events.emit(
                "start", pid=os.getpid(), resume=resumed is not None, device=str(state.device.torch_device),
                budget=state.guard.budget.limit, epoch=state.epoch, step=state.step,
                attempt=int(os.environ.get("OOMGUARD_ATTEMPT", "1")), config=config.model_dump(mode="json"),
                **ranks,
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
            if main:
                events.emit("stop", reason=state.stop_reason, epoch=state.epoch, step=state.step)
            if "exit_code" in state.extra:  # memory pressure that shrinking did not relieve
                need = state.extra.get("need")
                printer.print(f"stopped: {state.stop_reason}, even at microbatch {state.guard.microbatch}; "
                              f"checkpointed at step {state.step}; resume when "
                              f"{format_bytes(need) if need else 'more memory'} is available (the supervisor "
                              f"waits for it): oomguard train --resume project={config.project} "
                              f"name={config.name}")
                return int(state.extra["exit_code"])
            printer.print(f"stopped ({state.stop_reason}); continue with: oomguard train --resume "
                          f"project={config.project} name={config.name}")
            return EXIT_INTERRUPTED
        if main:
            events.emit("finish", epochs=total_epochs(stages.configs), seconds=round(seconds, 2),
                        best=state.best, metrics=state.metrics)
    best = state.best if state.best is not None else float("nan")
    printer.print(f"finished in {seconds:.0f}s; best {state.task.primary_metric} {best:.4f}; "
                  f"results in {run.root}")
    if group is None:  # a group's launcher writes the report once every rank is done
        _write_report(run, printer.print)
    return 0


def _join_group(config: Config) -> Group:
    """This rank's place in the group the launcher started (the process group joined on its device)."""
    from oomguard.distributed.group import Group
    from oomguard.loop.setup import rank_device

    return Group.join(rank_device(config, int(os.environ.get("LOCAL_RANK", "0"))))


def _fit_stage(state: State, printer: ProgressPrinter) -> None:
    """Train one stage (the whole run without ``stages:``) from wherever ``state`` is."""
    from oomguard.loop.callbacks import CallbackList
    from oomguard.loop.checkpointing import Checkpointing
    from oomguard.loop.guardian import MemoryGuardian
    from oomguard.loop.results import ResultsWriter
    from oomguard.loop.train import fit

    checkpointing = Checkpointing(state, console=printer.print)
    guardian = MemoryGuardian(state, checkpointing, console=printer.print)
    chain = [printer, ResultsWriter(state.task.metric_names, staged=state.stage is not None), checkpointing,
             guardian] if state.is_main else [checkpointing, guardian]  # other ranks: memory only
    if state.config.tensorboard and state.is_main:
        from oomguard.loop.tensorboard import TensorBoardCallback

        chain.append(TensorBoardCallback(state))
    callbacks = CallbackList(chain)
    state.memory.start()
    try:
        with stop_on_signals(state.request_stop, rank=state.group.rank if state.group is not None else None):
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
