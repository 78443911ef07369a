"""What is in use, split by who holds it: this process, its DataLoader workers, other child processes.

Only a refusal needs the split (to say what to change), so the workers are
told apart then: through the live DataLoader iterators, which hold them.
"""

from __future__ import annotations

import gc
from collections.abc import Collection
from dataclasses import dataclass

from oomguard.host import TreeMemory

_LOADER_ITERATOR = "_MultiProcessingDataLoaderIter"


@dataclass(frozen=True)
class InUse:
    """Host memory in use at one moment (bytes, each page counted once) and who held it."""

    total: int
    #: This process (and its device driver's memory on unified memory).
    process: int
    #: Of ``process``, the tensors and arrays it holds besides the model and optimizer state
    #: (a dataset loaded into memory), shared with its workers or not.
    data: int
    workers: int
    #: What the loader workers held alone: what ``num_workers=0`` would give back.
    workers_private: int
    worker_count: int
    others: int
    other_count: int
    counted_as: str


def loader_worker_pids() -> set[int]:
    """Pids of this process's live DataLoader workers.

    Walks every object the garbage collector tracks (tens of milliseconds):
    for an explanation, never for a measurement.
    """
    pids: set[int] = set()
    for obj in gc.get_objects():
        if type(obj).__name__ == _LOADER_ITERATOR:
            for worker in getattr(obj, "_workers", None) or ():
                pid = getattr(worker, "pid", None)
                if isinstance(pid, int):
                    pids.add(pid)
    return pids


def in_use(tree: TreeMemory, reserved: int = 0, data: int = 0,
           workers: Collection[int] | None = None) -> InUse:
    """``tree`` split into this process (``data`` of it held as tensors and arrays, see
    :func:`oomguard.memory.tensors.held_bytes`), its loader workers (``workers``; found now when None)
    and the rest."""
    workers = loader_worker_pids() if workers is None else set(workers)
    loader = [p for p in tree.processes[1:] if p.pid in workers]
    others = [p for p in tree.processes[1:] if p.pid not in workers]
    return InUse(
        total=tree.total + reserved,
        process=tree.own + reserved,
        data=data,
        workers=sum(p.counted for p in loader),
        workers_private=sum(p.private for p in loader),
        worker_count=len(loader),
        others=sum(p.counted for p in others),
        other_count=len(others),
        counted_as=tree.counted_as,
    )
