"""The machine's memory: its total, what is available now and swap, cgroup-aware (containers)."""

from __future__ import annotations

import psutil

from oomguard.host.cgroup import cgroup_limit_and_usage


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
