"""The supervision loop: run the child, attribute its death, restart it safer or stop with a diagnosis.

    attempt = 1, argv = strategy.first_argv()
    loop:
        start the child (in the cap's cgroup, if any); sample its memory tree
        wait for it (Ctrl-C: forward SIGINT, wait, exit 130)
        cause = attribute(exit, last samples, budget/cap, stderr tail)
        success -> 0
        emit kill; decide (policy) -> stop: emit stop, print the diagnosis, exit with the child's status
        pressure -> wait for memory
        next = strategy.restart(cause)   (ladder / preset; None: nothing safer left -> stop)
        emit restart; attempt += 1

What differs between ``oomguard train`` and ``oomguard run`` (how to resume,
what to change after a memory kill, where the budget and step come from) is
the ``Strategy``; this loop only reads the run directory through it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from oomguard import environment, host
from oomguard import events as ev
from oomguard.memory.sampler import MemorySampler, Sample
from oomguard.supervise.attribution import Cause, Evidence, attribute, low_available
from oomguard.supervise.cap import CgroupCap, PollCap, make_cap
from oomguard.supervise.child import Child
from oomguard.supervise.log import Console, StderrConsole, SupervisorLog
from oomguard.supervise.policy import Failure, decide
from oomguard.units import format_bytes

WINDOW_SECONDS = 2.0  # "the last samples": what attribution looks at
GRACE_SECONDS = 120.0  # after a forwarded Ctrl-C, how long the child may take to checkpoint and exit
PRESSURE_WAIT = 600.0  # the longest wait for memory after a pressure exit
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill, the terminal closing


@dataclass(frozen=True)
class Inspection:
    """What the run directory says after a death."""

    budget: int | None = None
    step: int | None = None
    need: int | None = None  # available memory a pressure exit asked to wait for
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


class Strategy(Protocol):
    oomguard_child: bool

    def first_argv(self) -> list[str]: ...

    def started(self, attempt: int, pid: int, argv: list[str]) -> None: ...

    def inspect(self) -> Inspection: ...

    def restart(self, cause: Cause, previous: list[str]) -> NextAttempt | None: ...

    def finished(self, attempts: int, seconds: float) -> None: ...


@dataclass
class Outcome:
    returncode: int
    evidence: Evidence
    stderr: list[str]
    tail: list[str]
    seconds: float


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
    ) -> None:
        self.strategy = strategy
        self.log = log
        self.max_restarts = max_restarts
        self.cap_limit = cap
        self.cap = make_cap(cap, use_cgroup)
        self.timeline = timeline
        self.console = console or StderrConsole()
        self.interval = interval
        self.grace = grace
        self.pressure_wait = pressure_wait
        self._child: Child | None = None
        self._signals_seen: list[int] = []
        self._stopping = threading.Event()
        self._grace_timer: threading.Timer | None = None

    def say(self, text: str) -> None:
        self.console.print(f"oomguard: {text}")

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> int:
        """Supervise; the exit status for the command line."""
        began = time.monotonic()
        with self._forwarding_signals():
            argv = self.strategy.first_argv()
            past: list[Failure] = []
            restarts = 0
            attempt = 1
            while True:
                outcome = self._attempt(argv, attempt)
                if self._signals_seen:
                    return self._interrupted(attempt)
                inspection = self.strategy.inspect()
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
                    self._emit_kill(cause, attempt, inspection.step, evidence, outcome)
                decision = decide(cause, inspection.step, past, restarts, self.max_restarts)
                if cause.kind != "pressure":
                    past.append((cause.kind, inspection.step))
                if not decision.restart:
                    return self._give_up(cause, attempt, decision.why, outcome)
                if cause.kind == "pressure" and not self._wait_for_memory(inspection, evidence):
                    return self._interrupted(attempt)
                following = self.strategy.restart(cause, argv)
                if following is None:
                    why = f"{cause.reason}, and no safer plan is left"
                    return self._give_up(cause, attempt, why, outcome)
                restarts += 1
                self.log.emit(ev.Restart(
                    cause=cause.kind, attempt=attempt + 1, reason=cause.reason, plan=following.plan,
                    rung=following.rung, overrides=following.overrides,
                    argv=following.argv if following.command else None, preset=following.preset))
                if following.rung == "device":  # the last rung: off the accelerator
                    self.log.emit(ev.Fallback(attempt=attempt + 1, to="cpu", reason=cause.reason))
                self.say(f"attempt {attempt} {cause.reason}; restarting: {following.text}")
                argv = following.argv
                attempt += 1

    def _attempt(self, argv: list[str], number: int) -> Outcome:
        procs = self._prepare_cap(number)
        kills_before = host.own_oom_kills()
        started = time.monotonic()
        window: deque[Sample] = deque(maxlen=max(1, int(WINDOW_SECONDS / self.interval)))
        try:
            child = Child.start(argv, cgroup_procs=procs, env={environment.SUPERVISED: "1",
                                                                environment.ATTEMPT: str(number)})
        except BaseException:
            if self.cap is not None:
                self.cap.release()
            raise
        self._child = child
        if self._signals_seen:  # Ctrl-C came while it was starting
            child.send(self._signals_seen[0])
        sampler = MemorySampler(csv_path=self.timeline, interval=self.interval, pid=child.pid)
        sampler.add_listener(lambda sample: self._on_sample(sample, window, child))
        sampler.start()
        self.strategy.started(number, child.pid, argv)
        returncode = child.wait()
        assert returncode is not None
        sampler.stop()
        if returncode != 0:
            child.kill_group()  # workers it left behind would hold memory the next attempt needs
        child.finish_output()
        self._child = None
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        cap_hit = self.cap.hit() if self.cap is not None else False
        if self.cap is not None:
            self.cap.release()
        evidence = Evidence(
            peak_rss=max((s.tree_rss for s in window), default=0),
            min_available=min((s.system_available for s in window), default=None),
            total=host.total_memory(),
            limit=self.cap_limit,
            cap_hit=cap_hit,
            kernel_oom_kills=host.own_oom_kills() - kills_before,
        )
        seconds = time.monotonic() - started
        return Outcome(returncode, evidence, child.stderr_tail.lines(), child.tail.lines(), seconds)

    def _prepare_cap(self, number: int) -> Path | None:
        if self.cap is None:
            return None
        try:
            return self.cap.prepare(number)
        except OSError as exc:
            assert isinstance(self.cap, CgroupCap)
            self.say(f"cannot use a cgroup for the memory cap ({exc}); polling memory instead")
            self.cap = PollCap(self.cap.limit)
            return None

    def _on_sample(self, sample: Sample, window: deque[Sample], child: Child) -> None:
        window.append(sample)
        if self.cap is not None and not self.cap.hit() and self.cap.over(sample.tree_rss):
            child.kill_tree()

    # -- outcomes -----------------------------------------------------------------------------------
    def _emit_kill(self, cause: Cause, attempt: int, step: int | None, evidence: Evidence,
                   outcome: Outcome) -> None:
        self.log.emit(ev.Kill(
            cause=cause.kind, signal=cause.signal, exit_code=cause.exit_code, attempt=attempt, step=step,
            reason=cause.reason, error=cause.error, peak=evidence.peak, available=evidence.min_available,
            limit=evidence.limit, seconds=round(outcome.seconds, 3),
            cap=self.cap_limit if self.cap is not None else None,
            killer=self.cap.kind if self.cap is not None and evidence.cap_hit else None,
            tail=outcome.tail if cause.kind in ("bug", "error", "oom") else None,
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
        """Ctrl-C (SIGTERM, SIGHUP): forward once to the child and let it checkpoint; again: kill it."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous: Mapping[int, Any] = {
            signum: signal.signal(signum, self._on_signal) for signum in FORWARDED
        }
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals_seen.append(signum)
        self._stopping.set()
        child = self._child
        if child is None:
            return
        if len(self._signals_seen) == 1:
            child.send(signum)
            self._grace_timer = threading.Timer(self.grace, child.kill_tree)
            self._grace_timer.daemon = True
            self._grace_timer.start()
        else:
            child.kill_tree()
