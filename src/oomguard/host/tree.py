"""The memory of a process tree as the OS counts it: each page once.

RSS summed over a training process and its forked DataLoader workers counts
every page they share (torch's libraries, a dataset loaded before the fork)
once per process: 2.4x the real use with two workers. The kernel's OOM killer
and a memory cgroup charge each page once, and so does :func:`tree_memory`:

- Linux: each process's proportional set size (PSS: a page that n processes map
  counts 1/n in each) from ``/proc/PID/smaps_rollup``; and where the tree is
  alone in a memory cgroup whose limit is what kills it, that cgroup's charge.
- macOS: each process's physical footprint (workers are spawned there and hold
  their own copies).
- elsewhere: RSS.

``smaps_rollup`` costs milliseconds per process, too much 20 times a second. A
precise reading calibrates each process (the resident bytes it does not pay for:
its share of the pages others map too); the cheap readings in between take its
RSS from ``statm`` (microseconds) and count any growth since in full, as new
pages are a process's own. Precise readings come soon after the set of processes
changes (a worker started or ended), otherwise every ``PRECISE_EVERY`` seconds
at most and within ``PRECISE_SHARE`` of one core (their cost is measured). A new
process is taken in only with a precise reading (a forked one maps its parent's
pages: until then it counts for nothing, not for its RSS), and the pages shared
by one that ended count in full in the root until the next one.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass, replace

import psutil

from oomguard.host.cgroup import TreeCgroup, tree_cgroup
from oomguard.host.footprint import footprint
from oomguard.host.proc import descendants, open_statm, read_rollup, statm_rss
from oomguard.host.readings import ProcessMemory, TreeMemory

PRECISE_EVERY = 2.0  # seconds at least between two periodic precise readings
PRECISE_SHARE = 0.0025  # of one core at most, for the periodic precise readings
ON_CHANGE_SHARE = 0.05  # a changed set of processes is measured again sooner, at up to this share
DISCOVER_EVERY = 1.0  # seconds between two looks for new child processes, unless asked to look now
_LINUX = sys.platform.startswith("linux")


@dataclass(frozen=True)
class _Calibration:
    """A process at its last precise reading: its statm RSS then, and what it counted for."""

    rss: int
    counted: int
    private: int

    def estimate(self, pid: int, rss: int) -> ProcessMemory:
        grown = rss - self.rss  # new pages are the process's own; freed ones were, most likely
        counted = min(rss, max(0, self.counted + grown))
        return ProcessMemory(pid, rss, counted, min(counted, max(0, self.private + grown)))


class TreeCounter:
    """Readings of one process tree, calibrated by precise readings; shared by every thread that asks."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.counted_as = "pss" if _LINUX else "footprint" if footprint(pid) is not None else "rss"
        self._lock = threading.Lock()
        self._fds: dict[int, int] = {}  # pid -> open statm (Linux)
        self._order: list[int] = [pid]
        self._calibration: dict[int, _Calibration] = {}
        self._calibrated: frozenset[int] = frozenset()  # the processes the last precise reading saw
        self._dead: set[int] = set()  # ended but not reaped yet (zombies): left out until they vanish
        self._cgroup: TreeCgroup | None = None
        self._machine = int(psutil.virtual_memory().total)
        self._next_look = 0.0
        self._last_precise = -float("inf")
        self._precise_cost = 0.0  # CPU seconds of the last precise reading
        self._measuring = False
        if _LINUX:
            self._fds[pid] = open_statm(pid)
        elif not psutil.pid_exists(pid):
            raise ProcessLookupError(pid)

    def read(self, *, fresh: bool = False, precise: bool = False) -> TreeMemory:
        """The tree now. ``fresh``: look for new processes now and measure a changed set precisely at once;
        ``precise``: measure every process precisely now. ProcessLookupError when the root is gone."""
        now = time.monotonic()
        with self._lock:
            calibrating = self.counted_as == "pss"
            since = now - self._last_precise
            free = calibrating and not self._measuring
            periodic = free and since >= self.precise_every
            on_change = precise or (free and (fresh or since >= self._precise_cost / ON_CHANGE_SHARE))
            if fresh or precise or now >= self._next_look:
                # New processes are taken in only when they can be measured at once: a forked one
                # maps its parent's pages, so until then it counts for nothing rather than its RSS.
                self._look(now, take_new=on_change or not calibrating)
            changed = frozenset(self._order) != self._calibrated
            measure = calibrating and (precise or periodic or (changed and on_change))
            if measure:
                self._measuring = True
            pids = tuple(self._order)
        if measure:
            try:
                self._calibrate(pids)
            finally:
                self._measuring = False
        with self._lock:
            return self._cheap(measure)

    @property
    def precise_every(self) -> float:
        """Seconds between two periodic precise readings now (their measured cost sets it)."""
        return max(PRECISE_EVERY, self._precise_cost / PRECISE_SHARE)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds.clear()

    # -- under the lock -----------------------------------------------------------------------------
    def _look(self, now: float, take_new: bool) -> None:
        """Find the tree's processes now: drop those that ended, take in new ones if ``take_new``."""
        self._next_look = now + DISCOVER_EVERY
        found = descendants(self.pid) if _LINUX else None
        if found is None:
            try:
                found = [child.pid for child in psutil.Process(self.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                raise ProcessLookupError(self.pid) from None
        self._dead &= set(found)
        alive = {self.pid, *found} - self._dead
        for pid in [pid for pid in self._order if pid not in alive]:
            self._forget(pid)
        known = set(self._order)
        for pid in found:
            if pid in known or pid in self._dead or not take_new:
                continue
            if _LINUX:
                try:
                    self._fds[pid] = open_statm(pid)
                except ProcessLookupError:
                    continue
            self._order.append(pid)
        if _LINUX:
            self._cgroup = tree_cgroup(self.pid, self._order, self._machine)

    def _forget(self, pid: int) -> None:
        """``pid`` ended: the pages it shared now count in full in the others (most likely the root,
        which forked it) until they are measured again, rather than for nobody."""
        if pid in self._order:
            self._order.remove(pid)
        fd = self._fds.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        gone = self._calibration.pop(pid, None)
        root = self._calibration.get(self.pid)
        if gone is not None and root is not None:
            shared = max(0, gone.counted - gone.private)
            self._calibration[self.pid] = replace(root, counted=root.counted + shared)

    def _cheap(self, precise: bool) -> TreeMemory:
        processes: list[ProcessMemory] = []
        for pid in list(self._order):
            try:
                processes.append(self._process(pid))
            except (ProcessLookupError, psutil.NoSuchProcess):
                if pid == self.pid:
                    raise ProcessLookupError(pid) from None
                self._forget(pid)  # ended since the last look: the set changed
        total = sum(p.counted for p in processes)
        counted_as = self.counted_as
        if self._cgroup is not None:
            charge = self._cgroup.charge()
            if charge is not None:
                total, counted_as = charge, "cgroup"
        return TreeMemory(total, tuple(processes), counted_as, precise)

    def _process(self, pid: int) -> ProcessMemory:
        if _LINUX:
            rss = statm_rss(self._fds[pid])
            calibration = self._calibration.get(pid)
            if calibration is None and self.counted_as == "pss":  # its first precise reading is under way
                return ProcessMemory(pid, rss, 0, 0)
            if calibration is None:  # no smaps_rollup here: RSS
                return ProcessMemory(pid, rss, rss, rss)
            return calibration.estimate(pid, rss)
        rss = int(psutil.Process(pid).memory_info().rss)
        own = footprint(pid) if self.counted_as == "footprint" else None
        counted = own if own is not None else rss
        return ProcessMemory(pid, rss, counted, counted)

    # -- outside the lock ----------------------------------------------------------------------------
    def _calibrate(self, pids: tuple[int, ...]) -> None:
        """Measure every process precisely (Linux) and keep what each counted for, against its RSS now."""
        began = time.thread_time()
        rollups = {}
        dead = []
        for pid in pids:
            try:
                rollups[pid] = read_rollup(pid)
            except ProcessLookupError:
                if pid == self.pid:
                    raise
                dead.append(pid)
        with self._lock:
            for pid in dead:  # ended, or a zombie: no pages left to count
                self._dead.add(pid)
                self._forget(pid)
            if rollups.get(self.pid) is None:  # no smaps_rollup here (Linux before 4.14): RSS it is
                self.counted_as = "rss"
            for pid, rollup in rollups.items():
                fd = self._fds.get(pid)
                if fd is None:
                    continue
                try:
                    rss = statm_rss(fd)
                except ProcessLookupError:
                    continue
                if rollup is None:  # unreadable here: count its RSS
                    self._calibration[pid] = _Calibration(rss, rss, rss)
                else:
                    self._calibration[pid] = _Calibration(rss, rollup.pss, rollup.private)
            self._calibrated = frozenset(rollups)
            self._last_precise = time.monotonic()
            self._precise_cost = time.thread_time() - began


_counters: dict[int, TreeCounter] = {}
_counters_lock = threading.Lock()


def tree_memory(pid: int | None = None, *, fresh: bool = False, precise: bool = False) -> TreeMemory:
    """The memory of ``pid``'s process tree (this process's when None), each page counted once.

    The one reading of a tree's host memory: the budget, the sampler (so the
    timeline, the epoch peaks and the report), the meter and the supervisor use
    it. Cheap by default (microseconds per process, calibrated by precise readings
    that come on their own); ``fresh`` looks for new processes first and measures a
    changed set precisely; ``precise`` measures every process now (milliseconds).
    ProcessLookupError when ``pid`` is gone.
    """
    found = counter(pid)
    try:
        return found.read(fresh=fresh, precise=precise)
    except ProcessLookupError:
        with _counters_lock:
            if _counters.get(found.pid) is found:
                del _counters[found.pid]
        found.close()
        raise


def counter(pid: int | None = None) -> TreeCounter:
    """The counter that :func:`tree_memory` reads ``pid``'s tree with (this process's when None)."""
    target = os.getpid() if pid is None else pid
    with _counters_lock:
        found = _counters.get(target)
        if found is None:
            found = _counters[target] = TreeCounter(target)
    return found


def _forked() -> None:
    """A forked child starts with no counters: its parent's lock may have been held at the fork."""
    global _counters_lock
    _counters_lock = threading.Lock()
    for inherited in _counters.values():
        inherited._lock = threading.Lock()
        inherited.close()
    _counters.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)
