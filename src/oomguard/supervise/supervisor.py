"""The supervision loop: run the child, attribute its death, restart it safer or stop with a diagnosis.

    keeper = a process that ends the child's process group if this one dies
    attempt = 1, argv = strategy.first_argv()
    loop:
        start the child (bound to us; in the cap's cgroup, if any); sample its memory tree
        wait for it (Ctrl-C: forward SIGINT, wait, exit 130)
        cause = attribute(exit, last samples, budget/cap, stderr tail)
        success -> 0
        what it did = strategy.inspect(started, died): the step it reached (None: died in start-up),
                      the work lost since the checkpoint the next attempt resumes from
        emit kill; decide (policy) -> stop: emit stop, print the diagnosis, exit with the child's status
        pressure -> wait for memory
        next = strategy.restart(cause)   (ladder / preset; None: nothing safer left -> stop)
        emit restart (with the wait: unexplained kills in a row wait 1 s, 2 s, 4 s ... 60 s); wait
        attempt += 1

What differs between ``oomguard train`` and ``oomguard run`` (how to resume,
what to change after a memory kill, where the budget and step come from) is
the ``Strategy``; this loop only reads the run directory through it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from oomguard import events as ev
from oomguard import host
from oomguard.supervise.attempt import Attempts, Outcome, stdout_is_terminal
from oomguard.supervise.attribution import Cause, Evidence, attribute, low_available
from oomguard.supervise.child import Child, terminal_size
from oomguard.supervise.log import Console, StderrConsole, SupervisorLog
from oomguard.supervise.policy import FIRST_WAIT, LONGEST_WAIT, Failure, backoff, decide
from oomguard.units import format_bytes

GRACE_SECONDS = 120.0  # after a forwarded Ctrl-C, how long the child may take to checkpoint and exit
PRESSURE_WAIT = 600.0  # the longest wait for memory after a pressure exit
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill, the terminal closing


@dataclass(frozen=True)
class Inspection:
    """What the run directory says after a death."""

    budget: int | None = None
    step: int | None = None  # the step the attempt reached; None: start-up, or unknown (``started`` None)
    need: int | None = None  # available memory a pressure exit asked to wait for
    started: bool | None = None  # it got past start-up; None: unknown (a command)
    progressed: bool | None = None  # it trained past where it started; None: unknown (a command)
    lost_seconds: float | None = None  # work since the checkpoint the next attempt resumes from
    peak_used: int | None = None  # the child's last reported memory used, where the OS counts it all


@dataclass(frozen=True)
class NextAttempt:
    """How the next attempt runs: its command, what changes in words, and the ``restart`` event's details."""

    argv: list[str]
    text: str  # what changes, for people
    plan: dict[str, Any] | None = None  # oomguard train: the plan the child ran, with the rung's changes
    rung: str | None = None
    overrides: dict[str, Any] | list[str] | None = None
    preset: str | None = None  # oomguard run: the preset that built ``argv``
    command: bool = False  # the event records ``argv`` (a command's, not oomguard's own child)
    resume_from: str | None = None  # the checkpoint the next attempt resumes from, where known


class Strategy(Protocol):
    oomguard_child: bool

    def first_argv(self) -> list[str]: ...

    def env(self) -> dict[str, str]:
        """Environment variables for the next attempt, besides the supervisor's own."""
        ...

    def started(self, attempt: int, pid: int, argv: list[str]) -> None: ...

    def inspect(self, since: float, until: float) -> Inspection: ...

    def restart(self, cause: Cause, previous: list[str]) -> NextAttempt | None: ...

    def finished(self, attempts: int, seconds: float) -> None: ...


def _plan_key(overrides: dict[str, Any] | list[str] | None) -> str:
    """What an attempt ran with, comparable across attempts (no changes at all is the first attempt's)."""
    return json.dumps(overrides or None, sort_keys=True, default=str)


class Supervisor:
    """Supervise one command until it succeeds, is interrupted, or a stop rule says enough."""

    def __init__(
        self,
        strategy: Strategy,
        log: SupervisorLog,
        *,
        max_restarts: int,
        cap: int | None = None,
        use_cgroup: bool | None = None,
        timeline: Path | None = None,
        console: Console | None = None,
        interval: float = 0.05,
        grace: float = GRACE_SECONDS,
        pressure_wait: float = PRESSURE_WAIT,
        restart_wait: float = FIRST_WAIT,
        terminal: bool | None = None,
    ) -> None:
        self.strategy = strategy
        self.log = log
        self.max_restarts = max_restarts
        self.console = console or StderrConsole()
        self.grace = grace
        self.pressure_wait = pressure_wait
        self.restart_wait = restart_wait
        #: The child writes to a pseudo-terminal (its live progress) when our own stdout is a terminal.
        self.terminal = stdout_is_terminal() if terminal is None else terminal
        self.attempts = Attempts(cap, use_cgroup, timeline, interval, self.terminal, self.say)
        self._signals_seen: list[int] = []
        self._stopping = threading.Event()
        self._grace_timer: threading.Timer | None = None
        self._in_a_row = 0  # unexplained kills in a row without progress

    def say(self, text: str) -> None:
        self.console.print(f"oomguard: {text}")

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> int:
        """Supervise; the exit status for the command line."""
        began = time.monotonic()
        self.attempts.open()
        try:
            with self._forwarding_signals():
                return self._supervise(began)
        finally:
            self.attempts.close()

    def _supervise(self, began: float) -> int:
        argv = self.strategy.first_argv()
        plan = _plan_key(None)  # the first attempt's: no changes
        past: list[Failure] = []
        restarts = 0
        attempt = 1
        while True:
            outcome = self.attempts.run(argv, attempt, functools.partial(self._started, attempt, argv),
                                        self.strategy.env())
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            if self._signals_seen:
                return self._interrupted(attempt)
            inspection = self.strategy.inspect(outcome.began, outcome.ended)
            evidence = outcome.evidence
            if evidence.limit is None and inspection.budget is not None:
                evidence = replace(evidence, limit=inspection.budget)
            if inspection.peak_used is not None:
                evidence = replace(evidence, peak_used=inspection.peak_used)
            cause = attribute(outcome.returncode, evidence, outcome.stderr or outcome.tail,
                              self.strategy.oomguard_child)
            if cause.kind == "success":
                self.strategy.finished(attempt, time.monotonic() - began)
                self.log.flush()
                return 0
            if cause.kind != "pressure":
                self._emit_kill(cause, attempt, inspection, evidence, outcome)
            failure = Failure(cause.kind, inspection.step, plan, startup=inspection.started is False)
            decision = decide(cause, failure, past, restarts, self.max_restarts)
            if cause.kind != "pressure":
                past.append(failure)
            if not decision.restart:
                return self._give_up(cause, attempt, decision.why, outcome)
            if cause.kind == "pressure" and not self._wait_for_memory(inspection, evidence):
                return self._interrupted(attempt)
            following = self.strategy.restart(cause, argv)
            if following is None:
                why = f"{cause.reason}, and no safer plan is left"
                return self._give_up(cause, attempt, why, outcome)
            wait = self._wait_before_restart(cause, inspection, outcome)
            restarts += 1
            self.log.emit(ev.Restart(
                cause=cause.kind, attempt=attempt + 1, reason=cause.reason, plan=following.plan,
                rung=following.rung, overrides=following.overrides,
                argv=following.argv if following.command else None, preset=following.preset,
                resume_from=following.resume_from, wait=round(wait, 3) if wait else None))
            if following.rung == "device":  # the last rung: off the accelerator
                self.log.emit(ev.Fallback(attempt=attempt + 1, to="cpu", reason=cause.reason))
            when = f"restarting in {wait:.3g}s" if wait else "restarting"
            self.say(f"attempt {attempt} {self._where(cause, inspection)}; {when}: {following.text}")
            if wait and self._stopping.wait(wait):  # a Ctrl-C during the wait ends it
                return self._interrupted(attempt)
            argv = following.argv
            plan = _plan_key(following.overrides)
            attempt += 1

    def _wait_before_restart(self, cause: Cause, inspection: Inspection, outcome: Outcome) -> float:
        """Seconds to wait: after unexplained kills in a row that made no progress, 1 s, 2 s, 4 s... 60 s."""
        if cause.kind != "unexplained_kill":
            self._in_a_row = 0
            return 0.0
        progressed = inspection.progressed
        if progressed is None:  # a command: progress is running longer than the longest wait
            progressed = outcome.seconds >= LONGEST_WAIT
        self._in_a_row = 1 if progressed else self._in_a_row + 1
        return backoff(self._in_a_row, self.restart_wait)

    @staticmethod
    def _where(cause: Cause, inspection: Inspection) -> str:
        """The cause's words, with where the attempt got to when that is known."""
        if inspection.started is False:
            return f"{cause.reason}, in start-up (before its resume completed)"
        if inspection.step is not None:
            return f"{cause.reason}, at step {inspection.step}"
        return cause.reason

    def _started(self, attempt: int, argv: list[str], child: Child) -> None:
        if self._signals_seen:  # Ctrl-C came while it was starting
            child.send(self._signals_seen[0])
        self.strategy.started(attempt, child.pid, argv)

    # -- outcomes -----------------------------------------------------------------------------------
    def _emit_kill(self, cause: Cause, attempt: int, inspection: Inspection, evidence: Evidence,
                   outcome: Outcome) -> None:
        self.log.emit(ev.Kill(
            cause=cause.kind, signal=cause.signal, exit_code=cause.exit_code, attempt=attempt,
            step=inspection.step, reason=cause.reason, error=cause.error, peak=evidence.peak,
            available=evidence.min_available, limit=evidence.limit, seconds=round(outcome.seconds, 3),
            cap=self.attempts.cap_limit if self.attempts.cap is not None else None,
            killer=self.attempts.killer if evidence.cap_hit else None,
            tail=outcome.tail if cause.kind in ("bug", "error", "oom") else None,
            lost_seconds=inspection.lost_seconds, startup=True if inspection.started is False else None,
        ))

    def _give_up(self, cause: Cause, attempt: int, why: str, outcome: Outcome) -> int:
        self.log.emit(ev.Stop(cause=cause.kind, reason=why, exit_code=cause.status, attempts=attempt,
                              error=cause.error, tail=outcome.tail))
        self.log.flush()
        self.say(f"stopped after {attempt} attempt{'s' if attempt > 1 else ''}: {why}")
        if cause.error and cause.error not in why:
            self.say(f"last error: {cause.error}")
        return cause.status or 1

    def _interrupted(self, attempt: int) -> int:
        signum = self._signals_seen[0]
        name = signal.Signals(signum).name
        self.log.emit(ev.Stop(cause="interrupted", reason=f"{name}: the child was stopped first",
                              exit_code=128 + signum, attempts=attempt))
        self.log.flush()
        self.say(f"interrupted ({name}); the run can be resumed")
        return 128 + signum

    def _wait_for_memory(self, inspection: Inspection, evidence: Evidence) -> bool:
        """Wait (bounded) until the memory the child needs is available again; False if interrupted."""
        total = evidence.total
        need = inspection.need or min(int(0.9 * total), evidence.peak_rss + low_available(total))
        deadline = time.monotonic() + self.pressure_wait
        if host.available_memory() < need:
            self.say(f"waiting up to {self.pressure_wait:.0f}s for {format_bytes(need)} of memory "
                     f"to be available (now {format_bytes(host.available_memory())})")
        while host.available_memory() < need and time.monotonic() < deadline:
            if self._stopping.wait(1.0):  # polling the system's memory, woken early by Ctrl-C
                return False
        return not self._signals_seen

    # -- signals ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _forwarding_signals(self) -> Iterator[None]:
        """Ctrl-C (SIGTERM, SIGHUP): forward once to the child and let it checkpoint; again: kill it.

        A terminal's resize (SIGWINCH) resizes the child's pseudo-terminal.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous: dict[int, Any] = {
            signum: signal.signal(signum, self._on_signal) for signum in FORWARDED
        }
        if self.terminal and hasattr(signal, "SIGWINCH"):
            previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, self._on_resize)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_resize(self, _signum: int, _frame: object) -> None:
        child = self.attempts.child
        if child is not None:
            child.resize(terminal_size(sys.stdout))

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals_seen.append(signum)
        self._stopping.set()
        child = self.attempts.child
        if child is None:
            return
        if len(self._signals_seen) == 1:
            child.send(signum)
            self._grace_timer = threading.Timer(self.grace, child.kill_tree)
            self._grace_timer.daemon = True
            self._grace_timer.start()
        else:
            child.kill_tree()
