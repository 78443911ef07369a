"""A sampler that can resume in the middle of an epoch, exactly.

It yields ``(index, sample_seed)``. The order of an epoch is a pure function
of ``(seed, epoch)`` and each sample's augmentation seed a pure function of
``(seed, epoch, position)``, so after a restart ``set_epoch(e); set_start(p)``
continues with the very samples, and the very augmentations, that an
uninterrupted run would have drawn, whatever the number of loader workers.
Resuming skips the first ``p`` positions without loading them.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from oomguard.errors import DataError

_MASK = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 63-bit hash of some integers (splitmix64 finaliser): nearby inputs give unrelated seeds."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & _MASK)) * 0xBF58476D1CE4E5B9 & _MASK
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & _MASK
        state ^= state >> 29
    return state >> 1


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the sample at ``position`` of ``epoch``."""
    return mix_seed(seed, epoch, position, 1)


def epoch_order(length: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The dataset indices of one epoch, in order."""
    if not shuffle:
        return torch.arange(length)
    generator = torch.Generator().manual_seed(mix_seed(seed, epoch, 0))
    return torch.randperm(length, generator=generator)


class ResumableSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)`` from position ``start`` to the end of epoch ``epoch``.

    ``set_epoch`` also rewinds to position 0; call ``set_start`` after it to resume.
    Iterating does not change the sampler, so the loop's own count of consumed
    samples (not the loader's prefetching) is what decides where to resume.
    """

    def __init__(self, dataset_len: int, seed: int, shuffle: bool = True) -> None:
        self.length = int(dataset_len)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.start = 0

    def set_start(self, position: int) -> None:
        if not 0 <= position <= self.length:
            raise ValueError(f"start position {position} is outside the epoch of {self.length} samples")
        self.start = int(position)

    def __len__(self) -> int:
        return self.length - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = epoch_order(self.length, self.seed, self.epoch, self.shuffle)[self.start :].tolist()
        for position, index in enumerate(order, start=self.start):
            yield index, sample_seed(self.seed, self.epoch, position)

    def state_dict(self) -> dict[str, int]:
        return {"length": self.length, "seed": self.seed, "shuffle": int(self.shuffle),
                "epoch": self.epoch, "start": self.start}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore epoch and start; refuses a state for a dataset of another length (a different order)."""
        if int(state["length"]) != self.length:
            raise DataError(
                f"cannot resume: the checkpoint's data order is for {state['length']} training samples but "
                f"the dataset now has {self.length}; resume with the same data and dev_samples"
            )
        self.seed = int(state["seed"])
        self.shuffle = bool(state["shuffle"])
        self.epoch = int(state["epoch"])
        self.start = int(state["start"])
