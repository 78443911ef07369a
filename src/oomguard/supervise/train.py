"""``oomguard train`` supervised: the training runs in a child, restarted from its last checkpoint.

The child is ``python -m oomguard train ARGS --no-supervise``, plus
``--resume`` whenever the run directory already has its ``config.yaml`` (the
command line may write it before supervising), plus on restarts the ladder's
overrides as ``key=value``, all of those taken so far: the child re-reads
``config.yaml`` and applies them on top. After an unexplained kill or
a bug the overrides stay as they were: a deterministic run stays bit-identical.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from oomguard import events as ev
from oomguard.rundir import RunDir
from oomguard.supervise.attribution import Cause
from oomguard.supervise.evidence import counts_host_memory, recent_used
from oomguard.supervise.history import attempt_record, read_child_report
from oomguard.supervise.ladder import next_rung
from oomguard.supervise.log import Console, SupervisorLog
from oomguard.supervise.policy import FIRST_WAIT
from oomguard.supervise.supervisor import Inspection, NextAttempt, Supervisor

MICROBATCH_HALVINGS = 3


def child_argv(user_args: Sequence[str]) -> list[str]:
    """The first attempt's command for ``oomguard train USER_ARGS``."""
    return [sys.executable, "-m", "oomguard", "train", *user_args, "--no-supervise"]


def format_override(key: str, value: Any) -> str:
    """``key=value`` as the command line reads it back (YAML scalars: true, false, null)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | tuple):
        text = "[" + ",".join(str(item) for item in value) + "]"
    elif value is None:
        text = "null"
    else:
        text = str(value)
    return f"{key}={text}"


class TrainStrategy:
    """Resume with ``--resume``; after a memory death, one rung down the ladder."""

    oomguard_child = True

    def __init__(self, argv_child: Sequence[str], run_dir: Path, allow_degrade: bool) -> None:
        self.argv_child = list(argv_child)
        self.run_dir = RunDir(Path(run_dir))
        self.allow_degrade = allow_degrade
        self.overrides: dict[str, Any] = {}
        self.rung = -1  # the last rung taken
        self.microbatch_halvings = 0

    def first_argv(self) -> list[str]:
        return self._argv()

    def _argv(self) -> list[str]:
        """The child's command: ``--resume`` once the run directory has its config, then the overrides."""
        argv = list(self.argv_child)
        if "--resume" not in argv and self.run_dir.config.exists():
            argv.append("--resume")
        return argv + [format_override(k, v) for k, v in self.overrides.items()]

    def started(self, attempt: int, pid: int, argv: list[str]) -> None:
        """The child writes its own ``start`` event."""

    def finished(self, attempts: int, seconds: float) -> None:
        """The child writes its own ``finish`` event."""

    def env(self) -> dict[str, str]:
        """Nothing: the child re-reads its config with the ladder's overrides on its command line."""
        return {}

    def inspect(self, since: float, until: float) -> Inspection:
        """The attempt started at ``since`` and dead at ``until``: its plan, budget, step and lost work."""
        report = read_child_report(self.run_dir, self.overrides)
        need = started = None
        for event in ev.load_events(self.run_dir.events):
            if isinstance(event, ev.Start):
                need, started = None, event.time
            elif isinstance(event, ev.Pressure | ev.Stop) and isinstance(event.need, int):
                need = event.need
        # A CUDA budget is GPU memory; the OS kills for host memory, which that budget says nothing about.
        # On CPU and MPS the child's own timeline counts all of it: Metal's memory is not in RSS.
        host = counts_host_memory(report.state.device)
        used = recent_used(self.run_dir.memory, since=started) if host else None
        record = attempt_record(self.run_dir, since, until)
        return Inspection(budget=report.budget if host else None, step=record.step, need=need,
                          started=record.started, progressed=record.progressed,
                          lost_seconds=record.lost_seconds, peak_used=used)

    def restart(self, cause: Cause, previous: list[str]) -> NextAttempt | None:
        report = read_child_report(self.run_dir, self.overrides)
        plan: dict[str, Any] = asdict(report.state)
        text, rung_name = "same plan", None
        if cause.memory:
            # The microbatch rung is taken again while it still can (down to 1/8 of where it started):
            # one halving rarely makes up for a whole batch that did not fit.
            again = self.rung == 0 and self.microbatch_halvings < MICROBATCH_HALVINGS
            rung = next_rung(report.state, -1 if again else self.rung, self.allow_degrade)
            if rung is None:
                return None
            self.rung = rung.index
            self.microbatch_halvings += rung.name == "microbatch"
            self.overrides.update(rung.overrides)
            changes = " ".join(format_override(k, v) for k, v in rung.overrides.items())
            text, rung_name = f"{rung.description}: {changes}", rung.name
            plan.update(rung.overrides)
        argv = self._argv()
        resumed = "from the last checkpoint" if "--resume" in argv else "from the start"
        return NextAttempt(argv, f"{resumed}, {text}", plan=plan, rung=rung_name,
                           overrides=dict(self.overrides))


def supervise_train(
    argv_child: Sequence[str],
    run_dir: Path,
    max_restarts: int,
    memory_cap: int | None,
    allow_degrade: bool,
    console: Console | None = None,
    *,
    use_cgroup: bool | None = None,
    restart_wait: float = FIRST_WAIT,
) -> int:
    """Run ``argv_child`` (see :func:`child_argv`) until it finishes; the exit status for the CLI.

    0: the training finished. 130: Ctrl-C (the child was stopped first and can
    be resumed). Otherwise the child's own status when the supervisor gives up
    (137 for a kill), after printing one line that says why and what to do.
    ``restart_wait``: the first wait after an unexplained kill (then 2x, 4x... 60 s).
    """
    strategy = TrainStrategy(argv_child, run_dir, allow_degrade)
    log = SupervisorLog(strategy.run_dir.events, ready=strategy.run_dir.config.exists)
    supervisor = Supervisor(strategy, log, max_restarts=max_restarts, cap=memory_cap, use_cgroup=use_cgroup,
                            console=console, restart_wait=restart_wait)
    return supervisor.run()
