"""Why did the child die? A pure function of its exit, the last memory samples and its last lines.

| what we see | cause |
| --- | --- |
- exit 0: ``success``.
- exit 75 (EX_TEMPFAIL): ``pressure``; the child stepped aside for other programs, resume later.
- SIGKILL (or exit 137) when the cap's or the kernel's OOM killer acted, or the tree was near its
  limit, or the system nearly out of memory (even with the tree far from its limit: on unified
  memory another program can take what the run needs, and the OS kills the run): ``memory_kill``.
  The same with none of these: ``unexplained_kill``, as is SIGTERM/SIGHUP/SIGQUIT from outside.
- SIGINT or exit 130 (the child was interrupted, or stopped on a request): ``interrupted``, not
  restarted.
- a traceback that ends in an out-of-memory error (or oomguard's exit 3: no plan fits), or output
  that tells of a memory failure no exception carried (an MPSNDArray size assertion that aborts
  the process, Metal's "Insufficient Memory"): ``oom``.
- oomguard's exit 2 (a config, data or run-directory mistake): ``error``, never retried.
- any other exception, non-zero exit or crash signal (SIGSEGV, SIGABRT...): ``bug``.

"Near the limit" is a peak of at least 90% of the cap or the budget: the tree's RSS as the
supervisor sampled it, or the memory the child itself last reported as used (its ``memory.csv``:
on a Mac that includes Metal's memory, which RSS leaves out);
"nearly out" is system available memory under max(256 MiB, 5% of the
machine) in the last samples (~2 s).
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass

from oomguard.codes import (
    EXIT_INTERRUPTED,
    EXIT_NO_FIT,
    EXIT_PRESSURE,
    EXIT_USER_ERROR,
    shell_status,
)
from oomguard.oom_text import memory_abort, mentions_oom
from oomguard.units import format_bytes

NEAR_LIMIT = 0.90
LOW_AVAILABLE_SHARE = 0.05
LOW_AVAILABLE_FLOOR = 256 * 1024**2
MEMORY_CAUSES = ("memory_kill", "oom")
_OUTSIDE_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_WORKER_KILLED = "killed by signal: killed"  # torch's DataLoader on a worker the OS killed


@dataclass(frozen=True)
class Evidence:
    """Memory around the death: what the supervisor saw in its last samples."""

    peak_rss: int = 0  # highest RSS of the child's process tree
    min_available: int | None = None  # least memory the system had available
    total: int = 0  # the machine's memory (or its cgroup's)
    limit: int | None = None  # the memory cap, else the child's budget
    cap_hit: bool = False  # our cap killed it (the cgroup's OOM killer, or the poller)
    kernel_oom_kills: int = 0  # OOM kills the kernel made during the attempt
    peak_used: int = 0  # highest memory the child reported as used in its last seconds (device included)

    @property
    def peak(self) -> int:
        """The highest memory seen: the supervisor's RSS samples, or what the child said it used."""
        return max(self.peak_rss, self.peak_used)


@dataclass(frozen=True)
class Cause:
    """One death, attributed. ``reason`` is one line for people; ``error`` the child's last error line."""

    kind: str
    returncode: int
    reason: str
    error: str | None = None

    @property
    def memory(self) -> bool:
        return self.kind in MEMORY_CAUSES

    @property
    def signal(self) -> str | None:
        """The name of the signal that ended the child (137 counts as SIGKILL), or None."""
        number = -self.returncode if self.returncode < 0 else (9 if self.returncode == 137 else None)
        if number is None:
            return None
        try:
            return signal.Signals(number).name
        except ValueError:
            return f"signal {number}"

    @property
    def exit_code(self) -> int | None:
        return self.returncode if self.returncode >= 0 else None

    @property
    def status(self) -> int:
        """What a shell would report for this death (128 + signal for a kill)."""
        return shell_status(self.returncode)


def last_error(lines: Sequence[str]) -> str | None:
    """The exception line of the last traceback in ``lines``, else the last non-empty line."""
    start = None
    for index, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            start = index
    if start is not None:
        for line in lines[start + 1:]:
            if line.strip() and not line[0].isspace() and not line.startswith("Traceback"):
                return line.strip()
    for line in reversed(lines):
        if line.strip():
            return line.strip()
    return None


def low_available(total: int) -> int:
    """Available memory under which the system counts as nearly out of it."""
    return max(LOW_AVAILABLE_FLOOR, int(LOW_AVAILABLE_SHARE * total))


def _memory_reason(evidence: Evidence) -> str | None:
    """Why the memory numbers say this kill was for memory, or None when they do not."""
    peak = format_bytes(evidence.peak)
    if evidence.peak_used > evidence.peak_rss:
        peak += " with device memory"
    if evidence.cap_hit and evidence.limit is not None:
        return f"over the memory cap of {format_bytes(evidence.limit)} (peak {peak})"
    if evidence.kernel_oom_kills > 0:
        return f"the kernel's OOM killer acted (peak {peak})"
    if evidence.limit and evidence.peak >= NEAR_LIMIT * evidence.limit:
        share = evidence.peak / evidence.limit
        return f"peak {peak}, {share:.0%} of the limit {format_bytes(evidence.limit)}"
    if evidence.min_available is not None and evidence.min_available <= low_available(evidence.total):
        # On unified memory (CPU, Apple silicon) the OS kills whoever it likes once memory runs low,
        # however far the run was from its budget: another program took the memory.
        available = format_bytes(evidence.min_available)
        if evidence.limit:
            return (f"the system was nearly out of memory ({available} available) with the run far from "
                    f"its limit (peak {peak} of {format_bytes(evidence.limit)}): another program took it")
        return f"the system was nearly out of memory ({available} available, peak {peak})"
    return None


def _far_from_limits(evidence: Evidence) -> str:
    parts = [f"peak {format_bytes(evidence.peak)}"]
    if evidence.limit:
        parts.append(f"limit {format_bytes(evidence.limit)}")
    if evidence.min_available is not None:
        parts.append(f"{format_bytes(evidence.min_available)} available")
    return ", ".join(parts)


def attribute(
    returncode: int,
    evidence: Evidence,
    lines: Sequence[str] = (),
    oomguard_child: bool = False,
) -> Cause:
    """Attribute a death. ``lines`` is the child's stderr tail (its traceback).

    ``oomguard_child`` says the child is ``oomguard train``, whose exit 2
    (user error) and 3 (no plan fits the budget) mean something.
    """
    error = last_error(lines)
    if returncode == 0:
        return Cause("success", 0, "finished")
    if returncode == EXIT_PRESSURE:
        return Cause("pressure", returncode, "stepped aside for memory pressure from other programs", error)
    if returncode in (-signal.SIGINT, EXIT_INTERRUPTED):
        return Cause("interrupted", returncode, "was interrupted (SIGINT) and stopped", error)
    memory = _memory_reason(evidence)
    killed = returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)
    worker_killed = error is not None and _WORKER_KILLED in error.lower()
    if killed or worker_killed:
        what = "killed (SIGKILL)" if killed else "a worker was killed (SIGKILL)"
        if memory is not None:
            return Cause("memory_kill", returncode, f"{what}: {memory}", error)
        far = f"{what} far from any memory limit ({_far_from_limits(evidence)})"
        return Cause("unexplained_kill", returncode, far, error)
    if evidence.cap_hit or evidence.kernel_oom_kills > 0:  # a process of its tree was OOM-killed; it followed
        return Cause("memory_kill", returncode, f"exited {returncode} after an OOM kill: {memory}", error)
    abort = memory_abort(lines)
    if abort is not None:  # SIGABRT from an MPSNDArray assertion, or a crash after Metal ran out
        return Cause("oom", returncode, f"ran out of device memory: {abort[-200:]}", error)
    if returncode < 0:
        name = Cause("bug", returncode, "").signal
        if -returncode in _OUTSIDE_SIGNALS:
            return Cause("unexplained_kill", returncode, f"stopped by {name} from outside", error)
        if memory is not None and -returncode == signal.SIGBUS:
            return Cause("memory_kill", returncode, f"crashed with SIGBUS: {memory}", error)
        return Cause("bug", returncode, f"crashed with {name}", error)
    if error is not None and mentions_oom(error):
        return Cause("oom", returncode, f"ran out of memory: {error}", error)
    if oomguard_child and returncode == EXIT_NO_FIT:
        return Cause("oom", returncode, f"no plan fits the memory budget: {error}", error)
    if oomguard_child and returncode == EXIT_USER_ERROR:
        return Cause("error", returncode, f"stopped on a usage error: {error}", error)
    return Cause("bug", returncode, f"failed with exit status {returncode}: {error or 'no output'}", error)
