"""DataLoaders for training (resumable order) and evaluation (fixed order, no augmentation)."""

from __future__ import annotations

import random
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from oomguard.data.sampler import ResumableSampler, mix_seed
from oomguard.data.shard import RankBatches


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


def _worker_options(workers: int, seed: int) -> dict[str, object]:
    # A generator of the loader's own: starting an iterator draws a base seed from it, and drawing
    # from the global one instead would shift every later dropout mask after a mid-epoch resume.
    generator = torch.Generator().manual_seed(seed)
    if workers <= 0:
        return {"num_workers": 0, "generator": generator}
    # Persistent workers: forked once, not once per epoch (each fork copies the parent's memory).
    return {"num_workers": workers, "persistent_workers": True, "prefetch_factor": 2,
            "worker_init_fn": partial(seed_worker, seed), "generator": generator}


def make_train_loader(dataset: Dataset, batch: int, sampler: ResumableSampler, workers: int, seed: int,
                      *, pin_memory: bool = False) -> DataLoader:
    """Batches of ``batch`` samples in the sampler's order; the last batch of an epoch may be smaller."""
    return DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=False,
                      pin_memory=pin_memory, **_worker_options(workers, seed))  # type: ignore[arg-type]


def make_rank_loader(dataset: Dataset, batches: RankBatches, workers: int, seed: int, *,
                     pin_memory: bool = False) -> DataLoader:
    """This rank's slice of each global batch (a data-parallel group's training loader)."""
    return DataLoader(dataset, batch_sampler=batches, pin_memory=pin_memory,  # type: ignore[arg-type]
                      **_worker_options(workers, seed))  # type: ignore[arg-type]


def make_eval_loader(dataset: Dataset, batch: int, workers: int, *, seed: int = 0,
                     pin_memory: bool = False) -> DataLoader:
    """Batches in dataset order, integer indices (so no augmentation)."""
    return DataLoader(dataset, batch_size=batch, shuffle=False, drop_last=False,
                      pin_memory=pin_memory, **_worker_options(workers, seed))  # type: ignore[arg-type]
