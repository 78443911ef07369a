"""The memory cap: rehearse a smaller machine by killing the child over ``SIZE``, as its OS would.

Where a cgroup of our own can be made (:mod:`~oomguard.supervise.cgroups`: a
delegated cgroup v2 subtree, else a writable cgroup v1 memory controller),
every attempt runs in a fresh cgroup limited to ``SIZE`` (v2: ``memory.max``
and no swap; v1: ``memory.limit_in_bytes``, the same memory+swap limit and
swappiness 0), so the kernel's own OOM killer delivers the SIGKILL: exactly
what users see, at exactly the point the kernel would act, page cache and
all. The cgroup's ``oom_kill`` count (v2: ``memory.events``; v1:
``memory.oom_control``) then says that the death was the cap's doing.

Elsewhere the supervisor polls the memory of the child's process tree every
sample (~50 ms; each page counted once, :func:`oomguard.host.tree_memory`),
SIGKILLs the tree when it goes over ``SIZE``, and says in one line why it
polls. A spike that rises and falls between two samples escapes this cap; the
cgroup does not.
"""

from __future__ import annotations

import os
from pathlib import Path

from oomguard.host import oom_kills
from oomguard.supervise.cgroups import Site, find_site
from oomguard.supervise.keeper import end_cgroup


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
    """A fresh memory cgroup per attempt (v2 or v1), limited to ``limit`` bytes, and the poll besides.

    The child's tree is alone in that cgroup, so the memory the timeline shows is
    the cgroup's own charge (less the file cache it can drop): the poll counts
    the pages the kernel does, so it seldom acts before the kernel's OOM killer.
    """

    def __init__(self, limit: int, site: Site) -> None:
        super().__init__(limit)
        self.site = site
        self.parent = site.parent
        self.directory: Path | None = None

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "poll" if self._hit else "cgroup"

    @classmethod
    def available(cls) -> Path | None:
        """The parent cgroup to create ours in, when a cgroup (v2 delegated, or v1) can be made."""
        site, _why = find_site()
        return site.parent if site is not None else None

    def prepare(self, attempt: int) -> Path:
        """Create this attempt's cgroup; return its ``cgroup.procs``, which the child joins."""
        self._hit = False
        directory = self.parent / f"oomguard-{os.getpid()}-{attempt}"
        directory.mkdir(exist_ok=True)
        if not _write(directory / self.site.limit_file, self.limit):
            self._remove(directory)
            raise OSError(f"cannot set {self.site.limit_file} in {directory}")
        if self.site.version == 2:
            _write(directory / "memory.swap.max", 0)  # no swap: a machine of this size without swap
        else:
            # Memory+swap gets the same limit (set after the memory limit, which it may not undercut),
            # and no swapping: a machine of this size without swap is what is being rehearsed.
            _write(directory / "memory.memsw.limit_in_bytes", self.limit)
            _write(directory / "memory.swappiness", 0)
        self.directory = directory
        return directory / "cgroup.procs"

    def hit(self) -> bool:
        """Whether the kernel OOM-killed a process in this attempt's cgroup, or the poll did."""
        kernel = self.directory is not None and oom_kills(self.directory / self.site.events_file) > 0
        return kernel or self._hit

    def release(self) -> None:
        """Kill what is left in the cgroup (orphaned workers) and remove it."""
        if self.directory is not None:
            self._remove(self.directory)
            self.directory = None

    @staticmethod
    def _remove(directory: Path) -> None:
        end_cgroup(str(directory))


def make_cap(limit: int | None, use_cgroup: bool | None = None) -> tuple[CgroupCap | PollCap | None, str]:
    """The cap for ``limit`` bytes: a cgroup where possible (``use_cgroup=None``), else polling.

    Returns the cap and, when it polls for want of a cgroup, why (one short
    line for the person watching). ``use_cgroup=True`` insists on the cgroup
    and raises OSError where it cannot be had; ``False`` always polls (the
    tests use both).
    """
    if limit is None:
        return None, ""
    if use_cgroup is False:
        return PollCap(limit), ""
    site, why = find_site()
    if site is None:
        if use_cgroup:
            raise OSError(f"no cgroup can be made for the memory cap: {why}")
        return PollCap(limit), why
    return CgroupCap(limit, site), ""
