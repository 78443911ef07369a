"""DataLoaders for training (resumable order) and evaluation (fixed order, no augmentation).

Every loader skips a sample whose image cannot be read (:mod:`.skipping`).
Training completes the batch from the next samples of the order, so the
optimizer always sees ``batch`` samples, and says how many positions of the
order each batch passed over (:attr:`TrainBatches.skipped`): the loop counts
them into its position, so a resume starts at the very next sample.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from oomguard.data.sampler import ResumableSampler, mix_seed
from oomguard.data.shard import RankBatches
from oomguard.data.skipping import (
    Loaded,
    Report,
    Tolerant,
    collate_readable,
    collate_substituted,
    no_readable,
    none_readable,
)


def seed_worker(seed: int, worker_id: int) -> None:
    """Seed python, numpy and torch in a worker from (seed, worker id).

    The augmentation itself never reads these global generators (it uses the
    sampler's per-sample seeds); this only makes any third-party randomness in
    a user's dataset repeatable.
    """
    worker_seed = mix_seed(seed, worker_id, 2)
    random.seed(worker_seed)
    np.random.seed(worker_seed % 2**32)
    torch.manual_seed(worker_seed)


def _worker_options(workers: int, seed: int) -> dict[str, Any]:
    # A generator of the loader's own: starting an iterator draws a base seed from it, and drawing
    # from the global one instead would shift every later dropout mask after a mid-epoch resume.
    generator = torch.Generator().manual_seed(seed)
    if workers <= 0:
        return {"num_workers": 0, "generator": generator}
    # Persistent workers: forked once, not once per epoch (each fork copies the parent's memory).
    return {"num_workers": workers, "persistent_workers": True, "prefetch_factor": 2,
            "worker_init_fn": partial(seed_worker, seed), "generator": generator}


def _structure(value: Any) -> bool:
    """A tuple or list of tensors (a collated tuple sample), not a list of per-sample values."""
    return isinstance(value, tuple | list) and bool(value) and all(
        isinstance(item, torch.Tensor | Mapping) for item in value)


def _cat(parts: list[Any]) -> Any:
    """Collated batches joined along the batch dimension (tensors, and dicts/tuples/lists of them)."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, Mapping):
        return {key: _cat([part[key] for part in parts]) for key in first}
    if _structure(first):
        return type(first)(_cat(list(column)) for column in zip(*parts, strict=True))
    return [item for part in parts for item in part]  # per-sample values (file names)


def _slice(batch: Any, start: int, stop: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[start:stop]
    if isinstance(batch, Mapping):
        return {key: _slice(value, start, stop) for key, value in batch.items()}
    if _structure(batch):
        return type(batch)(_slice(value, start, stop) for value in batch)
    return batch[start:stop]


class TrainBatches:
    """Batches of ``batch`` readable samples in the sampler's order; the epoch's last may be smaller.

    While every image reads, the loader's batches pass through untouched. A
    batch with unreadable samples is completed from the next ones (joined and
    cut again), and :attr:`skipped` says how many unreadable positions the
    batch just yielded passed over, so ``position += size + skipped``.
    """

    def __init__(self, loader: DataLoader, batch: int, report: Report | None = None,
                 complete: bool = True) -> None:
        self.loader, self.batch, self.report, self.complete = loader, batch, report, complete
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.loader)

    def _report(self, loaded: Loaded) -> None:
        if self.report is not None:
            for unreadable in loaded.unreadable:
                self.report(unreadable, "train")

    def __iter__(self) -> Iterator[Any]:
        pieces: list[tuple[Any, list[int]]] = []  # readable samples waiting, with the gap before each
        waiting = gap = 0  # samples in pieces; unreadable positions since the last readable one
        yielded = unreadable = 0
        for loaded in self.loader:
            unreadable += len(loaded.unreadable)
            self._report(loaded)
            if not self.complete:  # a rank's slice: unreadable ones were replaced (collate_substituted)
                if loaded.batch is None:
                    raise no_readable(loaded.unreadable)
                self.skipped = 0
                yield loaded.batch
                continue
            if not pieces and not gap and not loaded.unreadable and loaded.size == self.batch:
                self.skipped = 0
                yielded += 1
                yield loaded.batch  # the usual case: nothing to complete
                continue
            gaps, previous = [], -1
            for place in loaded.kept:
                gaps.append(gap + place - previous - 1)
                gap, previous = 0, place
            gap += loaded.size - 1 - previous
            if loaded.batch is not None:
                pieces.append((loaded.batch, gaps))
                waiting += len(gaps)
            while waiting >= self.batch:
                batch, passed = _take(pieces, self.batch)
                waiting -= self.batch
                self.skipped = passed
                yielded += 1
                yield batch
        if waiting:
            batch, passed = _take(pieces, waiting)
            self.skipped = passed + gap  # the epoch's last batch also passes over unreadable ones after it
            yield batch
        elif unreadable >= self.batch and not yielded:  # not a batch's worth readable: nothing to train on
            raise none_readable(unreadable)


def _take(pieces: list[tuple[Any, list[int]]], count: int) -> tuple[Any, int]:
    """The first ``count`` waiting samples as one batch (removed from ``pieces``) and the gaps they close."""
    parts, passed, need = [], 0, count
    while need:
        batch, gaps = pieces[0]
        if len(gaps) <= need:
            pieces.pop(0)
            parts.append(batch)
            passed += sum(gaps)
            need -= len(gaps)
        else:
            parts.append(_slice(batch, 0, need))
            passed += sum(gaps[:need])
            pieces[0] = (_slice(batch, need, len(gaps)), gaps[need:])
            need = 0
    return (parts[0] if len(parts) == 1 else _cat(parts)), passed


class EvalBatches:
    """The evaluation loader's batches, unreadable samples left out (and a batch with no readable one)."""

    def __init__(self, loader: DataLoader, report: Report | None = None) -> None:
        self.loader, self.report = loader, report

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for loaded in self.loader:
            if self.report is not None:
                for unreadable in loaded.unreadable:
                    self.report(unreadable, "val")
            if loaded.batch is not None:
                yield loaded.batch


def make_train_loader(dataset: Dataset, batch: int, sampler: ResumableSampler, workers: int, seed: int,
                      *, pin_memory: bool = False, report: Report | None = None) -> TrainBatches:
    """Batches of ``batch`` samples in the sampler's order; the last batch of an epoch may be smaller."""
    loader = DataLoader(Tolerant(dataset), batch_size=batch, sampler=sampler, drop_last=False,  # type: ignore[arg-type]
                        collate_fn=collate_readable, pin_memory=pin_memory, **_worker_options(workers, seed))
    return TrainBatches(loader, batch, report)


def make_rank_loader(dataset: Dataset, batches: RankBatches, workers: int, seed: int, *,
                     pin_memory: bool = False, report: Report | None = None) -> TrainBatches:
    """This rank's slice of each global batch (a data-parallel group's training loader)."""
    loader = DataLoader(Tolerant(dataset), batch_sampler=batches, collate_fn=collate_substituted,  # type: ignore[arg-type]
                        pin_memory=pin_memory, **_worker_options(workers, seed))  # type: ignore[arg-type]
    return TrainBatches(loader, batches.batch, report, complete=False)


def make_eval_loader(dataset: Dataset, batch: int, workers: int, *, seed: int = 0,
                     pin_memory: bool = False, report: Report | None = None) -> EvalBatches:
    """Batches in dataset order, integer indices (so no augmentation)."""
    loader = DataLoader(Tolerant(dataset), batch_size=batch, shuffle=False, drop_last=False,
                        collate_fn=collate_readable, pin_memory=pin_memory,
                        **_worker_options(workers, seed))  # type: ignore[arg-type]
    return EvalBatches(loader, report)
