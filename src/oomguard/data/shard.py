"""A rank's part of every global batch: data parallelism that keeps the run's order and batch.

The group walks one global order (:class:`~oomguard.data.sampler.ResumableSampler`:
a pure function of seed and epoch, each sample with its own augmentation
seed) in batches of ``batch`` samples, and each rank takes a balanced slice
of each batch. The data position is therefore a single global number, the
same on every rank: a checkpoint written by N ranks resumes with M ranks at
the very next sample, with the same effective batch. A last batch too small
to give every rank a sample is left out of the epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Sampler

from oomguard.data.sampler import ResumableSampler


def rank_span(total: int, rank: int, world: int) -> tuple[int, int]:
    """``(start, stop)`` of ``rank``'s slice of ``total`` samples; sizes within one of each other."""
    base, extra = divmod(total, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class RankBatches(Sampler[list[tuple[int, int]]]):
    """Yields this rank's ``(index, sample_seed)`` list of each global batch, from the sampler's start."""

    def __init__(self, sampler: ResumableSampler, batch: int, rank: int, world: int) -> None:
        self.sampler, self.batch, self.rank, self.world = sampler, batch, rank, world

    def global_sizes(self) -> list[int]:
        """The size of each global batch left in the epoch (the tail that is left out excluded)."""
        left = len(self.sampler)
        sizes = [min(self.batch, left - offset) for offset in range(0, left, self.batch)]
        return [size for size in sizes if size >= self.world]

    def __len__(self) -> int:
        return len(self.global_sizes())

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        items = list(self.sampler)
        for offset, size in zip(range(0, len(items), self.batch), self.global_sizes(), strict=False):
            start, stop = rank_span(size, self.rank, self.world)
            yield items[offset + start:offset + stop]
