"""One split's samples before any image is decoded: files, class numbers and raw regression targets.

Files are path strings here: building 100,000 ``Path`` objects would cost a
large part of indexing a big folder a second time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Entries:
    """``paths[i]`` is an image of class ``labels[i]`` with regression targets ``values[i]`` ([N, T])."""

    paths: list[str]
    labels: np.ndarray  # int64 [N]
    values: np.ndarray  # float64 [N, T], original units

    @classmethod
    def of(cls, paths: Sequence[str | Path], labels: Sequence[int] | np.ndarray,
           values: np.ndarray | None = None, targets: int = 0) -> Entries:
        labels = np.asarray(labels, dtype=np.int64).reshape(len(paths))
        if values is None:
            values = np.zeros((len(paths), targets))
        files = [path if isinstance(path, str) else os.fspath(path) for path in paths]
        return cls(files, labels, np.asarray(values, dtype=np.float64).reshape(len(paths), -1))

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, keep: Sequence[int] | np.ndarray) -> Entries:
        """The entries at positions ``keep``, in that order."""
        keep = np.asarray(keep, dtype=np.int64)
        return Entries([self.paths[i] for i in keep.tolist()], self.labels[keep], self.values[keep])


@dataclass(frozen=True)
class Sources:
    """What a layout found, before any image is opened: both splits, their classes and targets."""

    layout: str  # in words: "class folders (DATA/<class>/)", "train.csv and val.csv", ...
    validation: str  # where the validation images come from, in words
    classes: list[str]
    targets: list[str]  # regression target names (multitask), in column order
    train: Entries
    val: Entries
    ignored: list[str] = field(default_factory=list)  # files in class folders that are not images
