"""``oomguard train``: read the config, prepare the run directory, then hand the run to whoever trains it.

    supervised (the default)  -> supervise.supervise_train: a child process `oomguard train --no-supervise`
    nproc/nnodes > 1          -> distributed.launch: the group's ranks (`python -m oomguard.cli.rank`)
    task=detect               -> integrations.ultralytics.train_detect
    otherwise                 -> loop.run.run_training
"""

from __future__ import annotations

import importlib.util

from rich.console import Console

from oomguard.cli.args import resolve_config, write_config
from oomguard.config import Config
from oomguard.environment import launched_rank
from oomguard.errors import ConfigError
from oomguard.integrations.ultralytics import check_detect_config, is_detect
from oomguard.rundir import RunDir
from oomguard.supervise.lifeline import bind_to_supervisor


def check_run_config(config: Config) -> None:
    """Refuse, before any run directory exists, what only shows once training starts."""
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("tensorboard=true needs tensorboard: pip install tensorboard")
    if is_detect(config):
        check_detect_config(config)
    if config.stages:
        from oomguard.loop.stages import stage_configs

        stage_configs(config)
    if config.nproc > 1 and config.device == "auto":
        from oomguard.devices import get_device

        if get_device("auto").kind == "mps":
            raise ConfigError(f"nproc={config.nproc} on a Mac: device=auto is its one MPS GPU, which one "
                              "process already uses whole; use nproc=1 (or device=cpu for CPU ranks)")


def train_command(args: list[str], resume: bool, supervise: bool) -> int:
    if not supervise:
        bind_to_supervisor()  # a supervised child never outlives its supervisor
    if launched_rank():
        raise ConfigError("start a data-parallel run with oomguard train nproc=N, not torchrun: "
                          "oomguard launches the ranks itself")
    config = resolve_config(args, resume)
    check_run_config(config)
    if config.rehearse:
        return rehearse_command(config)
    run = RunDir(config.run_dir)
    run.prepare(resume)
    write_config(config, run)
    if supervise:
        from oomguard.supervise.train import child_argv, supervise_train

        return supervise_train(child_argv(args), run.root, config.max_restarts, config.memory_cap,
                               config.allow_degrade, Console(highlight=False, markup=False),
                               restart_wait=config.restart_wait)
    if config.world_size > 1:  # this process becomes the group's launcher
        from oomguard.checkpoint import RunLock
        from oomguard.distributed.launch import launch_group

        with RunLock(run.root):
            code = launch_group(config, args)
        if code == 0 and config.node_rank == 0:
            from oomguard.report import write_final_report

            write_final_report(run.root, print)
        return code
    if is_detect(config):
        from oomguard.checkpoint import RunLock
        from oomguard.integrations.ultralytics.train import train_detect
        from oomguard.loop.lifecycle import Outcome

        with RunLock(run.root):
            outcome: Outcome = train_detect(config, run, resume)
    else:
        from oomguard.loop.run import run_training

        outcome = run_training(config, run, resume)
    if outcome.finished:  # a stopped run is resumed; the report comes at its end
        from oomguard.report import write_final_report

        write_final_report(run.root, print)
    return outcome.exit_code


def rehearse_command(config: Config) -> int:
    """``rehearse=true``: a short run in a temporary directory; 0 when the full run is projected to fit."""
    from oomguard.loop.rehearsal import rehearse
    from oomguard.loop.setup import build_state

    say = Console(highlight=False, markup=False).print
    projection = rehearse(config, build_state, say=say)
    say(projection.words())
    return 0 if projection.fits else 1
