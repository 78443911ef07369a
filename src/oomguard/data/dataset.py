"""The dataset every layout becomes: images + class labels + standardised regression targets.

A sample is ``{"image": float32 3xSxS, "label": int64 scalar, "targets": float32 [T]}``.
``dataset[i]`` (an int, as in evaluation) gives the resized image with no
augmentation; ``dataset[(i, sample_seed)]`` (what ResumableSampler yields in
training) augments with a generator seeded by ``sample_seed``, so augmentation
does not depend on worker count, worker order or where a run resumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from oomguard.data.transforms import eval_transform, train_transform

Sample = dict[str, torch.Tensor]
Index = int | tuple[int, int]


@dataclass(frozen=True)
class TargetScale:
    """Train-set mean and std of each regression target: standardise for the loss, undo for MAE."""

    names: tuple[str, ...]
    mean: np.ndarray  # float64 [T]
    std: np.ndarray  # float64 [T], never 0

    @classmethod
    def fit(cls, names: list[str], values: np.ndarray) -> TargetScale:
        values = values.reshape(len(values), len(names)).astype(np.float64)
        if len(values) == 0 or not names:
            return cls(tuple(names), np.zeros(len(names)), np.ones(len(names)))
        std = values.std(axis=0)
        return cls(tuple(names), values.mean(axis=0), np.where(std > 1e-12, std, 1.0))

    def standardise(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.mean) / self.std).astype(np.float32)


class ImageDataset(Dataset[Sample]):
    """Base class: subclasses say how to get image ``i`` as uint8 HxWx3 via ``load_image``."""

    def __init__(self, labels: np.ndarray, targets: np.ndarray, scale: TargetScale, imgsz: int) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.targets = scale.standardise(np.asarray(targets).reshape(len(self.labels), len(scale.names)))
        self.scale = scale
        self.imgsz = imgsz

    def __len__(self) -> int:
        return len(self.labels)

    def load_image(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, item: Index) -> Sample:
        if isinstance(item, tuple):
            index, sample_seed = item
            generator = torch.Generator().manual_seed(int(sample_seed))
            image = train_transform(self.load_image(int(index)), self.imgsz, generator)
        else:
            index = int(item)
            image = eval_transform(self.load_image(index), self.imgsz)
        return {
            "image": image,
            "label": torch.tensor(self.labels[index]),
            "targets": torch.from_numpy(self.targets[index].copy()),
        }


class ArrayDataset(ImageDataset):
    """Images already decoded in one uint8 array [N, H, W, 3] (the builtin dataset)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, targets: np.ndarray, scale: TargetScale,
                 imgsz: int) -> None:
        super().__init__(labels, targets, scale, imgsz)
        self.images = images

    def load_image(self, index: int) -> np.ndarray:
        return self.images[index]


def subset_indices(total: int, limit: int | None) -> np.ndarray:
    """A fixed, spread-out choice of ``limit`` of ``total`` indices (all of them when limit is None).

    Drawn with a fixed seed (not the run's seed) so ``dev_samples`` picks the
    same images in every run, and sorted so class-sorted layouts keep their order.
    """
    if limit is None or limit >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(0).permutation(total)[:limit])


def dev_limits(dev_samples: int | None) -> tuple[int | None, int | None]:
    """(train, val) sample limits for ``dev_samples``: val gets a quarter, at least 1."""
    if dev_samples is None:
        return None, None
    return dev_samples, max(dev_samples // 4, 1)
