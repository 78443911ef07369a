"""Attribution of deaths: a pure function, every cause (the policy: test_supervise_policy.py)."""

from __future__ import annotations

import signal

import pytest

from oomguard.codes import EXIT_PRESSURE
from oomguard.supervise.attribution import Evidence, attribute, last_error

GB = 1000**3
MB = 1000**2
KILL = -signal.SIGKILL
CALM = Evidence(peak_rss=300 * MB, min_available=10 * GB, total=16 * GB, limit=8 * GB)

TRACEBACK = [
    "epoch 3/10",
    "Traceback (most recent call last):",
    '  File "train.py", line 9, in <module>',
    "    main()",
    "ValueError: boom 42",
]


def test_success_and_pressure() -> None:
    assert attribute(0, CALM).kind == "success"
    assert attribute(EXIT_PRESSURE, CALM).kind == "pressure"


@pytest.mark.parametrize("returncode", [KILL, 137])
def test_kill_near_the_budget_is_a_memory_kill(returncode: int) -> None:
    evidence = Evidence(peak_rss=int(7.5 * GB), min_available=6 * GB, total=16 * GB, limit=8 * GB)
    cause = attribute(returncode, evidence)
    assert cause.kind == "memory_kill"
    assert cause.memory
    assert cause.signal == "SIGKILL"
    assert cause.status == 137
    assert "94% of the limit 8.0 GB" in cause.reason


def test_kill_with_the_system_nearly_out_is_a_memory_kill() -> None:
    evidence = Evidence(peak_rss=2 * GB, min_available=200 * MB, total=16 * GB, limit=None)
    cause = attribute(KILL, evidence)
    assert cause.kind == "memory_kill"
    assert "nearly out of memory (200.0 MB available" in cause.reason


def test_kill_far_from_the_budget_while_another_program_took_the_memory_is_a_memory_kill() -> None:
    # Unified memory (a 16 GB laptop): the run used 1 GB of its 8 GB budget, something else the rest.
    evidence = Evidence(peak_rss=1 * GB, min_available=150 * MB, total=16 * GB, limit=8 * GB)
    cause = attribute(KILL, evidence)
    assert cause.kind == "memory_kill"  # one rung down, not "unexplained"
    assert cause.reason == ("killed (SIGKILL): the system was nearly out of memory (150.0 MB available) with "
                            "the run far from its limit (peak 1.0 GB of 8.0 GB): another program took it")
    assert attribute(KILL, Evidence(peak_rss=1 * GB, min_available=3 * GB, total=16 * GB,
                                    limit=8 * GB)).kind == "unexplained_kill"


def test_kill_by_the_cap_or_the_kernel_is_a_memory_kill() -> None:
    capped = Evidence(peak_rss=150 * MB, min_available=10 * GB, total=16 * GB, limit=200 * MB, cap_hit=True)
    expected = "killed (SIGKILL): over the memory cap of 200.0 MB (peak 150.0 MB)"
    assert attribute(KILL, capped).reason == expected
    kernel = Evidence(peak_rss=100 * MB, min_available=10 * GB, total=16 * GB, kernel_oom_kills=1)
    assert attribute(KILL, kernel).kind == "memory_kill"


def test_kill_far_from_limits_is_unexplained() -> None:
    cause = attribute(KILL, CALM)
    assert cause.kind == "unexplained_kill"
    assert not cause.memory
    assert "far from any memory limit" in cause.reason


def test_sigterm_from_outside_is_unexplained_and_a_segfault_is_a_bug() -> None:
    assert attribute(-signal.SIGTERM, CALM).kind == "unexplained_kill"
    segfault = attribute(-signal.SIGSEGV, CALM)
    assert (segfault.kind, segfault.reason, segfault.status) == ("bug", "crashed with SIGSEGV", 139)


def test_oom_traceback_is_a_memory_failure() -> None:
    lines = [*TRACEBACK[:-1], "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"]
    cause = attribute(1, CALM, lines)
    assert cause.kind == "oom"
    assert cause.error == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert attribute(1, CALM, [*TRACEBACK[:-1], "MemoryError"]).kind == "oom"


def test_other_exception_is_a_bug_with_its_last_line() -> None:
    cause = attribute(1, CALM, TRACEBACK)
    assert (cause.kind, cause.error, cause.exit_code) == ("bug", "ValueError: boom 42", 1)


def test_worker_killed_near_the_limit_is_a_memory_kill() -> None:
    lines = [*TRACEBACK[:-1], "RuntimeError: DataLoader worker (pid 123) is killed by signal: Killed."]
    low = Evidence(peak_rss=2 * GB, min_available=100 * MB, total=16 * GB)
    assert attribute(1, low, lines).kind == "memory_kill"
    assert attribute(1, CALM, lines).kind == "unexplained_kill"


def test_oomguard_exit_codes_only_for_the_oomguard_child() -> None:
    lines = ["ConfigError: epochs must be a positive integer, got -1"]
    assert attribute(2, CALM, lines, oomguard_child=True).kind == "error"
    assert attribute(3, CALM, ["no plan fits"], oomguard_child=True).kind == "oom"
    assert attribute(2, CALM, lines).kind == "bug"


def test_last_error_takes_the_last_traceback_of_a_chain() -> None:
    chained = [
        *TRACEBACK,
        "",
        "During handling of the above exception, another exception occurred:",
        "Traceback (most recent call last):",
        '  File "train.py", line 12, in <module>',
        "KeyError: 'x'",
        "some log line after it",
    ]
    assert last_error(chained) == "KeyError: 'x'"
    assert last_error(["no traceback here", "last words", "  "]) == "last words"
    assert last_error([]) is None
