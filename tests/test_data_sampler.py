"""ResumableSampler and loaders: exact mid-epoch resume, same batches with or without workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oomguard.data.dataset import ArrayDataset, TargetScale
from oomguard.data.loader import make_eval_loader, make_train_loader, seed_worker
from oomguard.data.sampler import ResumableSampler, sample_seed
from oomguard.errors import DataError


class RecordingDataset(torch.utils.data.Dataset):
    """Records which items were fetched (workers=0 only)."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.fetched: list[int] = []

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: tuple[int, int]) -> dict[str, torch.Tensor]:
        self.fetched.append(item[0])
        return {"index": torch.tensor(item[0]), "seed": torch.tensor(item[1])}


def tiny_dataset(count: int = 24, size: int = 12) -> ArrayDataset:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    targets = rng.normal(size=(count, 2))
    scale = TargetScale.fit(["a", "b"], targets)
    return ArrayDataset(images, np.arange(count) % 3, targets, scale, imgsz=8)


def test_resume_mid_epoch_continues_the_same_order_and_seeds() -> None:
    sampler = ResumableSampler(50, seed=11)
    sampler.set_epoch(3)
    full = list(sampler)
    assert sorted(index for index, _ in full) == list(range(50))
    for k in (0, 1, 17, 49, 50):
        resumed = ResumableSampler(50, seed=11)
        resumed.set_epoch(3)
        resumed.set_start(k)
        assert len(resumed) == 50 - k
        assert full[:k] + list(resumed) == full
    assert full[7][1] == sample_seed(11, 3, 7)


def test_order_depends_on_epoch_and_seed_only() -> None:
    def order(seed: int, epoch: int) -> list[tuple[int, int]]:
        sampler = ResumableSampler(40, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(1, 0) == order(1, 0)
    assert [i for i, _ in order(1, 0)] != [i for i, _ in order(1, 1)]
    assert [i for i, _ in order(1, 0)] != [i for i, _ in order(2, 0)]
    assert {s for _, s in order(1, 0)}.isdisjoint({s for _, s in order(1, 1)})
    plain = ResumableSampler(5, seed=1, shuffle=False)
    assert [i for i, _ in plain] == [0, 1, 2, 3, 4]


def test_set_epoch_rewinds_and_state_round_trips() -> None:
    sampler = ResumableSampler(30, seed=4)
    sampler.set_epoch(2)
    sampler.set_start(9)
    state = sampler.state_dict()
    assert state == {"length": 30, "seed": 4, "shuffle": 1, "epoch": 2, "start": 9}
    assert all(type(value) is int for value in state.values())
    restored = ResumableSampler(30, seed=0)
    restored.load_state_dict(state)
    assert list(restored) == list(sampler)
    sampler.set_epoch(3)
    assert sampler.start == 0
    with pytest.raises(DataError) as err:
        ResumableSampler(31, seed=4).load_state_dict(state)
    assert str(err.value) == (
        "cannot resume: the checkpoint's data order is for 30 training samples but the dataset now has 31; "
        "resume with the same data and dev_samples"
    )
    with pytest.raises(ValueError):
        sampler.set_start(31)


def test_resumed_loader_never_touches_skipped_samples() -> None:
    dataset = RecordingDataset(20)
    sampler = ResumableSampler(20, seed=0)
    sampler.set_epoch(1)
    order = [index for index, _ in sampler]
    sampler.set_start(12)
    batches = list(make_train_loader(dataset, 5, sampler, workers=0, seed=0))
    assert dataset.fetched == order[12:]
    assert [len(b["index"]) for b in batches] == [5, 3]  # the last batch of an epoch may be short


def test_workers_give_the_same_batches_as_no_workers() -> None:
    dataset = tiny_dataset()

    def batches(workers: int) -> list[dict[str, torch.Tensor]]:
        """Epoch 1 resumed at 5, then (same loader, persistent workers) epoch 2 resumed at 18."""
        sampler = ResumableSampler(len(dataset), seed=9)
        loader = make_train_loader(dataset, 4, sampler, workers=workers, seed=9)
        sampler.set_epoch(1)
        sampler.set_start(5)
        first = list(loader)
        sampler.set_epoch(2)
        sampler.set_start(18)
        return first + list(loader)

    serial, parallel = batches(0), batches(2)
    assert [len(b["label"]) for b in serial] == [4, 4, 4, 4, 3, 4, 2]  # 19 samples, then 6
    for one, other in zip(serial, parallel, strict=True):
        assert one.keys() == other.keys() == {"image", "label", "targets"}
        for key in one:
            assert torch.equal(one[key], other[key])
    assert serial[0]["image"].shape == (4, 3, 8, 8) and serial[0]["targets"].shape == (4, 2)


def test_eval_loader_keeps_order_without_augmentation() -> None:
    dataset = tiny_dataset(count=10)
    batches = list(make_eval_loader(dataset, 4, workers=0))
    assert [len(b["label"]) for b in batches] == [4, 4, 2]
    assert torch.equal(batches[1]["image"][0], dataset[4]["image"])
    assert batches[0]["label"].tolist() == [0, 1, 2, 0]


def test_seed_worker_seeds_every_global_rng() -> None:
    seed_worker(3, 1)
    first = (np.random.rand(), torch.rand(1).item())
    seed_worker(3, 1)
    assert (np.random.rand(), torch.rand(1).item()) == first
    seed_worker(3, 2)
    assert np.random.rand() != first[0]
