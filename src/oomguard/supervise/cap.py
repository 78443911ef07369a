"""The memory cap: rehearse a smaller machine by killing the child over ``SIZE``, as its OS would.

Where the cgroup v1 memory controller is writable (Linux, as root), every
attempt runs in a fresh child cgroup of our own with
``memory.limit_in_bytes=SIZE`` (and the same memory+swap limit, swappiness 0),
so the kernel's own OOM killer delivers the SIGKILL: exactly what users see,
at exactly the point the kernel would act, page cache and all. The cgroup's
``oom_kill`` counter then says that the death was the cap's doing.

Elsewhere the supervisor polls the memory of the child's process tree every
sample (~50 ms; each page counted once, :func:`oomguard.host.tree_memory`) and
SIGKILLs the tree when it goes over ``SIZE``. A spike that
rises and falls between two samples escapes this cap; the cgroup does not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from oomguard.host import oom_kills, own_cgroup_dirs

_EMPTY_WAIT = 5.0  # seconds to wait for the processes left in a cgroup to die before removing it


def _write(path: Path, value: int | str) -> bool:
    try:
        path.write_text(str(value))
    except OSError:
        return False
    return True


class PollCap:
    """Kill the child's tree when its sampled memory goes over ``limit`` bytes."""

    kind = "poll"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._hit = False

    def prepare(self, attempt: int) -> Path | None:
        self._hit = False
        return None

    def over(self, tree_memory: int) -> bool:
        """Whether a sample of ``tree_memory`` bytes calls for the kill; remembers that it did."""
        if tree_memory > self.limit:
            self._hit = True
        return self._hit

    def hit(self) -> bool:
        return self._hit

    def release(self) -> None:
        pass


class CgroupCap(PollCap):
    """A fresh v1 memory cgroup per attempt, limited to ``limit`` bytes, and the poll besides.

    The child's tree is alone in that cgroup, so the memory the timeline shows is
    the cgroup's own charge (less the file cache it can drop): the poll counts
    the pages the kernel does, so it seldom acts before the kernel's OOM killer.
    """

    def __init__(self, limit: int, parent: Path) -> None:
        super().__init__(limit)
        self.parent = parent
        self.directory: Path | None = None

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "poll" if self._hit else "cgroup"

    @classmethod
    def available(cls) -> Path | None:
        """The parent cgroup to create ours in, when the v1 memory controller is writable."""
        parent, _v2 = own_cgroup_dirs()
        if parent is None or not os.access(parent, os.W_OK):
            return None
        return parent

    def prepare(self, attempt: int) -> Path:
        """Create this attempt's cgroup; return its ``cgroup.procs``, which the child joins."""
        self._hit = False
        directory = self.parent / f"oomguard-{os.getpid()}-{attempt}"
        directory.mkdir(exist_ok=True)
        if not _write(directory / "memory.limit_in_bytes", self.limit):
            self._remove(directory)
            raise OSError(f"cannot set memory.limit_in_bytes in {directory}")
        # Memory+swap gets the same limit (set after the memory limit, which it may not undercut),
        # and no swapping: a machine of this size without swap is what is being rehearsed.
        _write(directory / "memory.memsw.limit_in_bytes", self.limit)
        _write(directory / "memory.swappiness", 0)
        self.directory = directory
        return directory / "cgroup.procs"

    def hit(self) -> bool:
        """Whether the kernel OOM-killed a process in this attempt's cgroup, or the poll did."""
        kernel = self.directory is not None and oom_kills(self.directory / "memory.oom_control") > 0
        return kernel or self._hit

    def release(self) -> None:
        """Kill what is left in the cgroup (orphaned workers) and remove it."""
        if self.directory is not None:
            self._remove(self.directory)
            self.directory = None

    @staticmethod
    def _remove(directory: Path) -> None:
        deadline = time.monotonic() + _EMPTY_WAIT
        while True:
            try:
                pids = [int(p) for p in (directory / "cgroup.procs").read_text().split()]
            except OSError:
                pids = []
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)  # polling the kernel's list until the killed processes are gone
        with contextlib.suppress(OSError):
            directory.rmdir()


def make_cap(limit: int | None, use_cgroup: bool | None = None) -> CgroupCap | PollCap | None:
    """The cap for ``limit`` bytes: a cgroup where possible (``use_cgroup=None``), else polling.

    ``use_cgroup=True`` insists on the cgroup and raises OSError where it cannot be had;
    ``False`` always polls (the tests use both).
    """
    if limit is None:
        return None
    if use_cgroup is False:
        return PollCap(limit)
    parent = CgroupCap.available()
    if parent is None:
        if use_cgroup:
            raise OSError("the cgroup v1 memory controller is not writable here (/sys/fs/cgroup/memory)")
        return PollCap(limit)
    return CgroupCap(limit, parent)
