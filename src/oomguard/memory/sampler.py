"""A background thread that samples memory into the run's timeline (``memory.csv``).

Every ``interval`` seconds it records the memory of this process's tree
(DataLoader workers, launched ranks) as the OS counts it, each page once
(:func:`oomguard.host.tree_memory`), with the RSS of the process and of its
children, what the children hold alone, the system's available memory and the
device allocator's numbers. The engine reads the latest values and the maximum
since its last mark; listeners (pressure, the memory cap) are called with each
sample. The columns of ``memory.csv`` only ever grow at the end: readers rely on
their order.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING

from oomguard import host
from oomguard.events import EventLog, SamplerTrouble

if TYPE_CHECKING:  # only for annotations: the supervisor samples without a device and must not import torch
    from oomguard.devices.base import Device

COLUMNS = ("time", "process_rss", "children_rss", "system_available", "device_allocated",
           "device_reserved", "used", "step", "rank", "tree_memory", "children_private")
#: Consecutive failed readings or listener calls after which a ``sampler`` event is written (then x10).
TROUBLE_AT = 10


@dataclass(frozen=True)
class Sample:
    time: float
    process_rss: int
    children_rss: int
    system_available: int
    device_allocated: int
    device_reserved: int
    #: Memory in use as the budget counts it on the sampled device (its one definition:
    #: ``Device.used``); ``tree_memory`` where no device is sampled (the supervisor).
    used: int
    step: int
    rank: int
    #: The process tree's host memory, each page counted once (PSS, the tree's cgroup charge or
    #: footprints): what the budget, the supervisor and the report count. ``process_rss +
    #: children_rss`` counts every page the workers share with this process once per process.
    tree_memory: int
    #: What the children hold alone (their private pages): what stopping the loader workers gives back.
    children_private: int


assert tuple(f.name for f in fields(Sample)) == COLUMNS


class MemorySampler:
    """Sample memory every ``interval`` seconds in a daemon thread; append to ``csv_path``.

    Each row reaches the file as it is taken, in one ``write`` to a file opened
    for appending: the samples just before a SIGKILL are the ones that say why
    it came (a written row survives the kill in the kernel's page cache), and
    the ranks of a group sharing the file never interleave inside a row.
    """

    def __init__(
        self,
        device: Device | None = None,
        csv_path: str | Path | None = None,
        interval: float = 0.05,
        rank: int = 0,
        pid: int | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.device = device
        #: The process whose tree is sampled: this one when None; the supervisor points it at its child.
        self.pid = pid
        self.csv_path = Path(csv_path) if csv_path is not None else None
        self.interval = interval
        self.rank = rank
        self.step = 0
        self.latest: Sample | None = None
        self._max_tree = 0
        self._max_device = 0
        self._listeners: list[Callable[[Sample], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file: IO[str] | None = None
        self._lock = threading.Lock()
        #: Where repeated failures are reported (a ``sampler`` event); None: nowhere.
        self.events = events
        self.failures = 0

    def add_listener(self, listener: Callable[[Sample], None]) -> None:
        self._listeners.append(listener)

    def sample(self) -> Sample:
        """Take one sample now (also what the thread does each tick)."""
        device = self.device
        tree = host.tree_memory(self.pid)
        allocated = device.allocated() if device is not None else 0
        reserved = device.reserved() if device is not None else 0
        sample = Sample(
            time=time.time(),
            process_rss=tree.root.rss,
            children_rss=tree.children_rss,
            system_available=host.available_memory(),
            device_allocated=allocated,
            device_reserved=reserved,
            used=device.used(tree.total, allocated, reserved) if device is not None else tree.total,
            step=self.step,
            rank=self.rank,
            tree_memory=tree.total,
            children_private=tree.children_private,
        )
        with self._lock:
            self.latest = sample
            self._max_tree = max(self._max_tree, sample.tree_memory)
            self._max_device = max(self._max_device, sample.device_reserved)
        return sample

    def mark(self) -> None:
        """Start a new "maximum since mark" window."""
        with self._lock:
            latest = self.latest
            self._max_tree = latest.tree_memory if latest else 0
            self._max_device = latest.device_reserved if latest else 0

    def max_since_mark(self) -> tuple[int, int]:
        """(max memory of the process tree, max device reserved) since the last :meth:`mark`."""
        with self._lock:
            return self._max_tree, self._max_device

    def start(self) -> MemorySampler:
        if self._thread is not None:
            return self
        if self.csv_path is not None:
            _create_with_header(self.csv_path)
            self._file = open(self.csv_path, "a", newline="")  # noqa: SIM115 - closed in stop()
        with contextlib.suppress(Exception):  # a supervised process already gone: the thread carries on
            self.sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="oomguard-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MemorySampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        row = io.StringIO()
        writer = csv.writer(row)
        while not self._stop.wait(self.interval):
            try:
                sample = self.sample()
            except Exception as exc:  # a vanished child or a closed device must not kill training
                self._trouble("reading memory", exc)
                continue
            if self._file is not None:
                row.seek(0)
                row.truncate()
                writer.writerow([getattr(sample, name) for name in COLUMNS])  # astuple deep-copies
                self._file.write(row.getvalue())
                self._file.flush()  # the whole row in one write(2): it empties the buffer each time
            failed = False
            for listener in self._listeners:
                try:
                    listener(sample)
                except Exception as exc:  # one listener's bug must not freeze every reader's numbers
                    self._trouble(getattr(listener, "__qualname__", "a listener"), exc)
                    failed = True
            if not failed:
                self.failures = 0
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())


    def _trouble(self, where: str, exc: Exception) -> None:
        """Count a failure; at 10, 100, 1000... in a row, say so in a ``sampler`` event."""
        self.failures += 1
        if self.events is None or self.failures < TROUBLE_AT:
            return
        if self.failures == TROUBLE_AT or str(self.failures).strip("0") == "1":
            self.events.emit(SamplerTrouble(failures=self.failures,
                                            error=f"{where}: {type(exc).__name__}: {exc}"[:300]))


def _create_with_header(path: Path) -> None:
    """Create ``path`` holding just the header, unless it exists: atomic, as the ranks of a group share it.

    Never replaces an existing file: a peer may already hold it open for appending.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > 0:
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as file:
        csv.writer(file).writerow(COLUMNS)
    try:
        os.link(tmp, path)  # fails when the file exists: another rank created it first, or an old run
    except FileExistsError:
        if path.stat().st_size == 0:  # left empty by a run that died at once: it only lacks the header
            with open(path, "a", newline="") as file:
                csv.writer(file).writerow(COLUMNS)
    finally:
        tmp.unlink(missing_ok=True)
