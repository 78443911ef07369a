"""Linux's ``/proc`` for one process: resident size (cheap), pages split by sharing (precise), children.

``statm`` costs a few microseconds through a descriptor kept open; ``smaps_rollup``
walks every mapping of the process (milliseconds for a torch process, while
holding its memory map's lock), so it is read rarely (:mod:`oomguard.host.tree`).
A descriptor of a process that has died reads ``ESRCH`` even once its pid is
reused, so a kept-open ``statm`` never reports a stranger's memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_PROC = Path("/proc")


def open_statm(pid: int) -> int:
    """A descriptor of ``/proc/PID/statm``; ProcessLookupError when there is no such process."""
    try:
        return os.open(_PROC / str(pid) / "statm", os.O_RDONLY)
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None


def statm_rss(fd: int) -> int:
    """Resident bytes from an open ``statm``; ProcessLookupError once the process is gone."""
    fields = os.pread(fd, 128, 0).split()
    if not fields:
        raise ProcessLookupError("empty statm")
    return int(fields[1]) * PAGE


@dataclass(frozen=True)
class Rollup:
    """One process's resident pages as ``smaps_rollup`` sums them (bytes)."""

    rss: int
    #: Proportional set size: each page divided by the number of processes that map it.
    pss: int
    #: Pages no other process maps (the unique set size): what ending the process gives back.
    private: int


def read_rollup(pid: int) -> Rollup | None:
    """``/proc/PID/smaps_rollup`` summed up; None where it cannot be read (an old kernel, another user's
    process); ProcessLookupError when the process is gone."""
    try:
        with open(_PROC / str(pid) / "smaps_rollup", "rb") as handle:
            text = handle.read()
    except ProcessLookupError:  # gone, or a zombie: no memory map left
        raise
    except FileNotFoundError:
        if not (_PROC / str(pid)).exists():
            raise ProcessLookupError(pid) from None
        return None  # a kernel without smaps_rollup (before 4.14)
    except OSError:
        return None
    kib: dict[bytes, int] = {}
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(b":")
        value = rest.split()
        if value and value[0].isdigit():
            kib[key] = int(value[0])
    if b"Pss" not in kib or b"Rss" not in kib:
        raise ProcessLookupError(pid)  # a zombie: no memory map left to read
    private = kib.get(b"Private_Clean", 0) + kib.get(b"Private_Dirty", 0)
    return Rollup(rss=kib[b"Rss"] * 1024, pss=kib[b"Pss"] * 1024, private=private * 1024)


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``: each thread lists the children it forked (``CONFIG_PROC_CHILDREN``)."""
    found: list[int] = []
    try:
        tids = os.listdir(_PROC / str(pid) / "task")
    except FileNotFoundError:
        return found
    for tid in tids:
        try:
            with open(_PROC / str(pid) / "task" / tid / "children", "rb") as handle:
                found.extend(int(child) for child in handle.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
    return found


def descendants(pid: int) -> list[int] | None:
    """Every descendant of ``pid``, parents before their children; None where the kernel does not list
    children (then ``psutil`` must scan every process)."""
    if not (_PROC / str(pid) / "task" / str(pid) / "children").exists():
        return None if (_PROC / str(pid)).exists() else []
    out: list[int] = []
    pending = [pid]
    while pending:
        children = _children(pending.pop())
        out.extend(children)
        pending.extend(children)
    return out
