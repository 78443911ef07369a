"""What a reading of a process tree's memory says: per process, and for the tree with each page once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessMemory:
    """One process of the tree (bytes)."""

    pid: int
    rss: int
    #: Its share: each page it maps divided by the processes that map it (PSS; footprint on macOS).
    counted: int
    #: What only it maps (USS): what ending the process gives back.
    private: int


@dataclass(frozen=True)
class TreeMemory:
    """A reading of a process tree: ``total`` counts each page once; the root comes first in ``processes``."""

    total: int
    processes: tuple[ProcessMemory, ...]
    #: How ``total`` was counted: ``pss``, ``cgroup`` (the tree's cgroup charge), ``footprint`` or ``rss``.
    counted_as: str
    #: Every process measured just now, rather than estimated from its last precise reading.
    precise: bool

    @property
    def root(self) -> ProcessMemory:
        return self.processes[0]

    @property
    def children(self) -> int:
        """What the descendants count for (DataLoader workers, launched ranks)."""
        return sum(p.counted for p in self.processes[1:])

    @property
    def children_private(self) -> int:
        """What the descendants hold alone: what stopping them all would give back."""
        return sum(p.private for p in self.processes[1:])

    @property
    def children_rss(self) -> int:
        return sum(p.rss for p in self.processes[1:])

    @property
    def own(self) -> int:
        """The root process's part of ``total``."""
        return max(0, self.total - self.children)
