"""``oomguard run``: the same supervision for any command.

    oomguard run [--memory-limit SIZE] [--max-restarts N] [--resume-args "ARGS"] [--run-dir DIR] -- CMD ...

- The command runs as a child; its output passes through live.
- ``--memory-limit SIZE`` is a cap, as if the machine had SIZE of memory: when
  the command's memory, children included, goes over SIZE it is SIGKILLed (by
  the kernel's OOM killer in a cgroup of its own where one can be made: a
  delegated cgroup v2 subtree or a writable cgroup v1 memory controller; else
  by oomguard, which polls the tree's RSS every 50 ms and says why), which
  counts as a memory kill, and it is restarted. Without it, a SIGKILL counts
  as a memory kill only when the system was nearly out of memory (or the
  kernel's OOM killer acted); any other kill is restarted after a wait that
  doubles with each one in a row (1 s, 2 s, 4 s ... 60 s).
- The command and its whole process group never outlive oomguard: killed
  with it, however oomguard dies (a keeper process ends them).
- Restarts follow a preset (see :mod:`oomguard.supervise.presets`: Ultralytics
  YOLO, Hugging Face Trainer, Lightning) or append ``--resume-args`` (split like
  a shell) to the original command. ``--resume-args`` wins over a preset. Each
  restart says which checkpoint the command resumes from (or that it starts
  over, and why), and the ``restart`` event records it as ``resume_from``.
- The command is told ``DIR`` (``OOMGUARD_RUN_DIR``): a Guard or a trainer
  callback inside writes its events and a Guard its checkpoints there (the
  timeline stays the supervisor's), and after a memory kill the next attempt's
  Guard runs at half its last microbatch (``OOMGUARD_MICROBATCH``).
- ``DIR`` (default ``runs/run``) receives ``events.jsonl`` (start, kill,
  restart, finish or stop) and ``memory.csv`` (the command's process tree:
  ``process_rss`` is the command, ``children_rss`` its descendants), so
  ``oomguard report DIR`` works. A DIR that exists is reused: both files are
  appended to, so one directory can hold the history of several runs of a
  command (unlike ``oomguard train``, which refuses an existing run directory).
- Exit status: 0 once the command succeeds; 130 on Ctrl-C (the command gets
  the SIGINT and is waited for); when oomguard gives up (a bug that failed
  twice, the same memory failure three times with the same command, max
  restarts) the command's
  own status (128 + N for a signal, 137 for a kill), after a one-line summary;
  127 when the command cannot be started.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from oomguard import environment
from oomguard import events as ev
from oomguard.report import write_final_report
from oomguard.rundir import RunDir
from oomguard.supervise.attribution import Cause
from oomguard.supervise.history import child_report, resumable_at
from oomguard.supervise.log import Console, SupervisorLog
from oomguard.supervise.policy import FIRST_WAIT
from oomguard.supervise.presets import Preset, preset_for
from oomguard.supervise.supervisor import Inspection, NextAttempt, Supervisor

DEFAULT_RUN_DIR = Path("runs/run")


class CommandStrategy:
    """Restart a command per its preset; the supervisor writes the lifecycle events itself.

    The command learns the run directory (``OOMGUARD_RUN_DIR``): a Guard or a
    trainer callback inside writes its events and checkpoints there, so the
    run's story is one. After a memory kill of a command whose Guard wrote its
    plan there, the next attempt's Guard gets half that microbatch
    (``OOMGUARD_MICROBATCH``), whatever the preset changes on the command line.
    """

    oomguard_child = False

    def __init__(self, command: list[str], preset: Preset, log: SupervisorLog, cap: int | None,
                 run_dir: RunDir) -> None:
        self.command = command
        self.preset = preset
        self.log = log
        self.cap = cap
        self.run_dir = run_dir
        self.microbatch: int | None = None  # the Guard's microbatch for the next attempt, once halved
        self._since = 0.0  # when the last attempt began (unix seconds)

    def first_argv(self) -> list[str]:
        return list(self.command)

    def env(self) -> dict[str, str]:
        env = {environment.RUN_DIR: str(self.run_dir.root.resolve())}
        if self.microbatch is not None:
            env[environment.MICROBATCH] = str(self.microbatch)
        return env

    def started(self, attempt: int, pid: int, argv: list[str]) -> None:
        config = {"command": argv, "memory_limit": self.cap, "preset": self.preset.name}
        self.log.emit(ev.Start(pid=pid, attempt=attempt, resume=attempt > 1, device=None, budget=self.cap,
                               config=config, supervisor=os.getpid()))

    def finished(self, attempts: int, seconds: float) -> None:
        self.log.emit(ev.Finish(attempts=attempts, seconds=round(seconds, 3)))

    def inspect(self, since: float, until: float) -> Inspection:
        """What a Guard inside the command wrote (its host budget, its checkpoints' lost work), if any."""
        self._since = since
        events = ev.load_events(self.log.path)
        checkpoint = resumable_at(events, until)
        lost = None if checkpoint is None else round(max(0.0, until - max(since, checkpoint)), 3)
        budgets = [e.budget for e in events if isinstance(e, ev.Plan) and e.time >= since]
        return Inspection(budget=budgets[-1] if budgets else None, lost_seconds=lost)

    def restart(self, cause: Cause, previous: list[str]) -> NextAttempt:
        following = self.preset.restart(previous, cause.memory)
        argv = following.argv
        same = next((i for i, (a, b) in enumerate(zip(argv, self.command, strict=False)) if a != b),
                    min(len(argv), len(self.command)))
        added = argv[same:]  # what differs from the original command, from the first change on
        text = f"{self.preset.name} preset {following.note}; {' '.join(added) or 'the same command'}"
        if cause.memory:
            text += self._halve_guard_microbatch()
        return NextAttempt(argv, text, overrides=added, preset=self.preset.name, command=True,
                           resume_from=following.resume_from)


    def _halve_guard_microbatch(self) -> str:
        """After a memory kill: half the microbatch a Guard inside last ran with (its events say)."""
        events = [e for e in ev.load_events(self.log.path) if e.time >= self._since]
        report = child_report(events, {}, {})
        if not any(isinstance(e, ev.Plan) for e in events) or not report.state.microbatch:
            return ""
        self.microbatch = max(1, report.state.microbatch // 2)
        return f"; its Guard's microbatch {report.state.microbatch} -> {self.microbatch}"


def run_command(
    command: Sequence[str],
    run_dir: Path = DEFAULT_RUN_DIR,
    memory_limit: int | None = None,
    max_restarts: int = 10,
    resume_args: str | None = None,
    console: Console | None = None,
    *,
    use_cgroup: bool | None = None,
    cwd: Path | None = None,
    restart_wait: float = FIRST_WAIT,
) -> int:
    """Supervise ``command`` (``oomguard run``); the exit status for the CLI.

    ``memory_limit`` is bytes (the CLI parses ``SIZE`` with ``units.parse_size``);
    ``resume_args`` the raw ``--resume-args`` string. Raises ``CommandNotFound``
    (an ``OomguardError``, exit code 127) when the command cannot be started.
    """
    command = list(command)
    directory = RunDir(Path(run_dir))
    directory.root.mkdir(parents=True, exist_ok=True)
    log = SupervisorLog(directory.events)
    strategy = CommandStrategy(command, preset_for(command, resume_args, cwd), log, memory_limit, directory)
    supervisor = Supervisor(strategy, log, max_restarts=max_restarts, cap=memory_limit, use_cgroup=use_cgroup,
                            timeline=directory.memory, console=console, restart_wait=restart_wait)
    code = supervisor.run()
    # The whole story (every attempt, the events of a Guard inside) in DIR/report.html; the last line
    # the command printed stays the supervisor's summary.
    write_final_report(directory.root, supervisor.say, announce=False)
    return code
