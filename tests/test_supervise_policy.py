"""The restart-or-stop policy and the wait before a restart: pure functions, every rule."""

from __future__ import annotations

import signal

from oomguard.codes import EXIT_PRESSURE
from oomguard.supervise.attribution import Cause
from oomguard.supervise.policy import LONGEST_WAIT, SAME_FAILURE_LIMIT, Failure, backoff, decide

KILL = -signal.SIGKILL


def _cause(kind: str) -> Cause:
    return Cause(kind, KILL if kind.endswith("kill") else 1, f"{kind} reason", f"{kind} error")


def _decide(kind: str, step: int | None, past: list[Failure], restarts: int = 2, max_restarts: int = 10,
            plan: str = "") -> bool:
    return decide(_cause(kind), Failure(kind, step, plan), past, restarts, max_restarts).restart


def test_a_bug_is_retried_once_only() -> None:
    assert decide(_cause("bug"), Failure("bug", None), [], restarts=0, max_restarts=10).restart
    again = decide(_cause("bug"), Failure("bug", None), [Failure("memory_kill", 5), Failure("bug", 7)],
                   restarts=2, max_restarts=10)
    assert not again.restart
    assert "bug error" in again.why


def test_a_usage_error_is_never_retried() -> None:
    assert not _decide("error", None, [], restarts=0)


def test_same_failure_at_same_step_with_the_same_plan_three_times_stops() -> None:
    past = [Failure("memory_kill", 40)] * (SAME_FAILURE_LIMIT - 1)
    stop = decide(_cause("memory_kill"), Failure("memory_kill", 40), past, restarts=2, max_restarts=10)
    assert not stop.restart
    assert "at step 40 3 times with the same plan" in stop.why
    assert _decide("memory_kill", 41, past)
    assert _decide("memory_kill", 40, past, plan='{"microbatch": 8}')  # the ladder changed the plan


def test_unexplained_kills_are_never_the_same_failure() -> None:
    # The measured case of issue 16: killed from outside at random moments, three times "at step 92".
    past = [Failure("unexplained_kill", 92)] * 10
    assert _decide("unexplained_kill", 92, past, restarts=10, max_restarts=20)
    assert not _decide("unexplained_kill", 92, past, restarts=20, max_restarts=20)  # only the budget ends it


def test_a_start_up_death_is_not_a_death_at_the_last_step() -> None:
    stop = decide(_cause("bug"), Failure("bug", None), [Failure("bug", 88)], restarts=1, max_restarts=10)
    assert not stop.restart
    early = Failure("memory_kill", None, startup=True)
    same = decide(_cause("memory_kill"), early, [early] * 2, restarts=2, max_restarts=10)
    assert "at start-up (before its resume completed) 3 times" in same.why
    assert _decide("memory_kill", 88, [early] * 2)  # reaching step 88 is not dying in start-up
    unknown = decide(_cause("memory_kill"), Failure("memory_kill", None), [Failure("memory_kill", None)] * 2,
                     restarts=2, max_restarts=10)  # a command: its step is not known
    assert "at the same point 3 times" in unknown.why


def test_max_restarts_bounds_everything() -> None:
    assert not _decide("unexplained_kill", 1, [], restarts=3, max_restarts=3)
    pressure = Cause("pressure", EXIT_PRESSURE, "pressure reason")
    assert decide(pressure, Failure("pressure", 1), [Failure("pressure", 1)] * 5, restarts=2,
                  max_restarts=3).restart
    assert not decide(pressure, Failure("pressure", 1), [], restarts=3, max_restarts=3).restart


def test_the_wait_doubles_from_one_second_up_to_a_minute() -> None:
    assert [backoff(n) for n in range(0, 9)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, LONGEST_WAIT, 60.0]
    assert backoff(1000) == LONGEST_WAIT
    assert [backoff(n, first=0.05) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]
    assert backoff(3, first=0.0) == 0.0
