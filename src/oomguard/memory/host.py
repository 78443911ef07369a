"""Host memory: totals, availability (cgroup-aware), process RSS and its resettable peak.

On Linux the peak RSS of this process is the kernel's own high-water mark
(``VmHWM``), reset by writing ``5`` to ``/proc/self/clear_refs``: exact and
cheap (tens of microseconds). Elsewhere the sampler thread's maximum stands in.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import psutil

_CGROUP_V1 = Path("/sys/fs/cgroup/memory")
_CGROUP_V2 = Path("/sys/fs/cgroup")
_NO_LIMIT = 1 << 60


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value < _NO_LIMIT else None


@cache
def own_cgroup_dirs() -> tuple[Path | None, Path | None]:
    """This process's cgroup v1 memory directory and cgroup v2 directory, where they exist."""
    v1 = v2 = None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        _hierarchy, controllers, relative = line.split(":", 2)
        relative = relative.lstrip("/")
        if "memory" in controllers.split(","):
            candidate = _CGROUP_V1 / relative
            v1 = candidate if (candidate / "memory.limit_in_bytes").exists() else None
        elif controllers == "":
            candidate = _CGROUP_V2 / relative
            v2 = candidate if (candidate / "memory.max").exists() else None
    return v1, v2


def cgroup_limit_and_usage() -> tuple[int | None, int | None]:
    """The memory limit and usage of this process's cgroup (None where there is no limit)."""
    v1, v2 = own_cgroup_dirs()
    if v2 is not None:
        limit = _read_int(v2 / "memory.max")
        if limit is not None:
            return limit, _read_int(v2 / "memory.current")
    if v1 is not None:
        limit = _read_int(v1 / "memory.limit_in_bytes")
        if limit is not None:
            return limit, _read_int(v1 / "memory.usage_in_bytes")
    return None, None


def total_memory() -> int:
    """Physical memory, or the cgroup's limit when that is smaller (containers)."""
    total = psutil.virtual_memory().total
    limit, _ = cgroup_limit_and_usage()
    return min(total, limit) if limit else total


def available_memory() -> int:
    """Memory the system can still give, or what the cgroup allows, whichever is less."""
    available = psutil.virtual_memory().available
    limit, usage = cgroup_limit_and_usage()
    if limit is not None and usage is not None:
        available = min(available, max(0, limit - usage))
    return int(available)


def swap_used() -> int:
    return int(psutil.swap_memory().used)


_own_files: dict[str, tuple[int, int]] = {}  # name -> (pid that opened it, fd)


def _own_fd(name: str, flags: int) -> int:
    """A file of /proc/self kept open: the Guard reads it on every step (an open costs more than the read).

    Reopened in a forked child, whose inherited descriptor would still be its parent's.
    """
    pid = os.getpid()
    cached = _own_files.get(name)
    if cached is None or cached[0] != pid:
        _own_files[name] = cached = (pid, os.open(f"/proc/self/{name}", flags))
    return cached[1]


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (``VmRSS``, ``VmHWM``), or None where there is none."""
    try:
        text = os.pread(_own_fd("status", os.O_RDONLY), 16384, 0).decode()
    except OSError:
        return None
    at = text.find(field + ":")
    if at < 0:
        return None
    return int(text[at + len(field) + 1:text.index("kB", at)])


def process_rss(pid: int | None = None) -> int:
    """Resident set size of one process."""
    if pid is None or pid == os.getpid():
        kib = _status_kib("VmRSS")
        return kib * 1024 if kib is not None else int(psutil.Process().memory_info().rss)
    return int(psutil.Process(pid).memory_info().rss)


def children_rss(pid: int | None = None) -> int:
    """Summed RSS of every descendant of ``pid`` (DataLoader workers, launched ranks)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return 0
    total = 0
    for child in children:
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total


def tree_rss(pid: int | None = None) -> int:
    """RSS of ``pid`` and all its descendants."""
    try:
        return process_rss(pid) + children_rss(pid)
    except psutil.Error:
        return 0


@cache
def peak_is_resettable() -> bool:
    """Whether the kernel lets this process reset its RSS high-water mark."""
    try:
        os.write(_own_fd("clear_refs", os.O_WRONLY), b"5")
    except OSError:
        return False
    return own_peak_rss() is not None


def reset_peak_rss() -> None:
    """Start a new RSS high-water mark (Linux); a no-op elsewhere."""
    if peak_is_resettable():
        os.write(_own_fd("clear_refs", os.O_WRONLY), b"5")


def own_peak_rss() -> int | None:
    """This process's RSS high-water mark since the last reset, or None where unknown."""
    kib = _status_kib("VmHWM")
    return kib * 1024 if kib is not None else None
