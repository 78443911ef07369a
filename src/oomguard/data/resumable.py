"""A DataLoader for hand-written loops that a checkpoint can stop and resume at the very next sample.

::

    loader = ResumableLoader(dataset, batch_size=32, shuffle=True, seed=0, num_workers=2)
    state = {"epoch": 0, "loader": loader}
    guard.restore(state)                # puts the loader back where the checkpoint left it
    for epoch in range(state["epoch"], epochs):
        state["epoch"] = epoch
        for batch in loader:            # after a resume: the rest of the interrupted epoch
            guard.step(batch, loss_fn)

The order of an epoch is a pure function of ``(seed, epoch)``, so the loader
only has to remember which epoch it is in and how many samples it has handed
out (not prefetched: what the loop received). ``state_dict()`` says that;
``load_state_dict()`` makes the next iteration start there. An epoch that
was handed out to its end resumes at the start of the next one. The dataset
is indexed with plain integers, as ``torch.utils.data.DataLoader`` does.
With ``num_workers`` > 0, random draws inside the dataset itself (a worker's
own generator) restart with the epoch's worker seeds after a resume.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from oomguard.data.sampler import epoch_order, mix_seed
from oomguard.errors import DataError


class _Positions(Sampler[int]):
    """The indices of ``epoch`` from ``start`` on."""

    def __init__(self, length: int, seed: int, shuffle: bool, epoch: int, start: int) -> None:
        self.order = epoch_order(length, seed, epoch, shuffle)[start:].tolist()

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)


class ResumableLoader:
    """Batches of ``dataset`` in a seeded order that resumes mid-epoch; other DataLoader options pass on."""

    def __init__(self, dataset: Dataset, batch_size: int = 1, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, **options: Any) -> None:
        if "sampler" in options or "batch_sampler" in options:
            raise DataError("ResumableLoader chooses the order itself; drop sampler= and batch_sampler=")
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.drop_last, self.options = drop_last, options
        self.length = len(dataset)  # type: ignore[arg-type]
        self.epoch = 0
        self.position = 0  # samples of ``epoch`` handed out so far

    def __len__(self) -> int:
        """Batches in a whole epoch."""
        if self.drop_last:
            return self.length // self.batch_size
        return -(-self.length // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        if self.next_epoch() > self.epoch:
            self.epoch, self.position = self.epoch + 1, 0  # the last epoch was handed out to its end
        positions = _Positions(self.length, self.seed, self.shuffle, self.epoch, self.position)
        # A generator of its own: starting an iterator draws a base seed, and drawing it from the global
        # one would shift every later dropout mask of a run resumed mid-epoch.
        own = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, 3))
        options = {"generator": own, **self.options}
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=positions,
                            drop_last=self.drop_last, **options)
        for batch in loader:
            self.position += _count(batch)
            yield batch
        self.epoch, self.position = self.epoch + 1, 0

    def next_epoch(self) -> int:
        """The epoch the next iteration hands out (an epoch handed out to its end is done)."""
        left = self.length - self.position
        done = left <= 0 or (self.drop_last and left < self.batch_size)
        return self.epoch + 1 if done else self.epoch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "length": self.length, "seed": self.seed,
                "shuffle": int(self.shuffle)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state["length"]) != self.length:
            raise DataError(f"cannot resume the loader: its checkpoint is for {state['length']} samples but "
                            f"the dataset now has {self.length}; resume with the same data")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.seed, self.shuffle = int(state["seed"]), bool(state["shuffle"])


def _count(batch: Any) -> int:
    """Samples in a collated batch: the first dimension of its first tensor."""
    while isinstance(batch, list | tuple) and batch:
        batch = batch[0]
    if isinstance(batch, dict) and batch:
        return _count(next(iter(batch.values())))
    return int(batch.shape[0]) if hasattr(batch, "shape") else 1
