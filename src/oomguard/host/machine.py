"""The machine's memory: its total, what is available now and swap, cgroup-aware (containers)."""

from __future__ import annotations

import os

import psutil

from oomguard.host.cgroup import cgroup_limit_and_usage

_meminfo: tuple[int, int] | None = None  # (pid that opened it, fd): the sampler reads it 20 times a second


def _mem_available() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` through a descriptor kept open (a tenth of psutil's cost)."""
    global _meminfo
    try:
        if _meminfo is None or _meminfo[0] != os.getpid():
            _meminfo = (os.getpid(), os.open("/proc/meminfo", os.O_RDONLY))
        text = os.pread(_meminfo[1], 4096, 0)
    except OSError:
        return None
    at = text.find(b"MemAvailable:")
    if at < 0:
        return None
    return int(text[at + 13:text.index(b"kB", at)]) * 1024


def total_memory() -> int:
    """Physical memory, or the cgroup's limit when that is smaller (containers)."""
    total = psutil.virtual_memory().total
    limit, _ = cgroup_limit_and_usage()
    return min(total, limit) if limit else total


def available_memory() -> int:
    """Memory the system can still give, or what the cgroup allows, whichever is less."""
    available = _mem_available()
    if available is None:
        available = psutil.virtual_memory().available
    limit, usage = cgroup_limit_and_usage()
    if limit is not None and usage is not None:
        available = min(available, max(0, limit - usage))
    return int(available)


def swap_used() -> int:
    return int(psutil.swap_memory().used)
