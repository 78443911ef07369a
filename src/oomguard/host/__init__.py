"""What the operating system says about memory: the machine, a process tree (each page once), cgroups.

Nothing here imports torch: the supervisor reads it too. Backends add their
own device memory on top (:mod:`oomguard.devices`).
"""

from __future__ import annotations

from oomguard.host.cgroup import cgroup_limit_and_usage, oom_kills, own_cgroup_dirs, own_oom_kills
from oomguard.host.machine import available_memory, swap_used, total_memory
from oomguard.host.process import own_peak_rss, peak_is_resettable, process_rss, reset_peak_rss
from oomguard.host.readings import ProcessMemory, TreeMemory
from oomguard.host.tree import tree_memory

__all__ = [
    "ProcessMemory",
    "TreeMemory",
    "available_memory",
    "cgroup_limit_and_usage",
    "oom_kills",
    "own_cgroup_dirs",
    "own_oom_kills",
    "own_peak_rss",
    "peak_is_resettable",
    "process_rss",
    "reset_peak_rss",
    "swap_used",
    "total_memory",
    "tree_memory",
]
