"""A process's memory: its RSS and this process's resettable RSS peak (a tree's: :mod:`oomguard.host.tree`).

On Linux the peak RSS of this process is the kernel's own high-water mark
(``VmHWM``), reset by writing ``5`` to ``/proc/self/clear_refs``: exact and
cheap (tens of microseconds). Elsewhere the sampler thread's maximum stands in.
"""

from __future__ import annotations

import os
from functools import cache

import psutil

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
