"""Datasets of image files on disk, decoded with Pillow (:mod:`.decode`), optionally cached in RAM."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from oomguard.data.dataset import ImageDataset, TargetScale, dev_limits, subset_indices
from oomguard.data.decode import UnreadableImage, decode
from oomguard.data.entries import Sources

__all__ = ["FileDataset", "decode", "file_datasets"]


class FileDataset(ImageDataset):
    """Images from a list of files with their labels and raw targets.

    With ``cache=True`` every image is decoded once, here in the main process,
    so loader workers forked later share the decoded arrays instead of each
    decoding (and holding) its own copy. A file that cannot be decoded then
    is remembered as unreadable: loading it raises :class:`UnreadableImage`,
    as it would have without the cache, and the loaders skip it.
    """

    def __init__(self, paths: Sequence[str | Path], labels: np.ndarray, targets: np.ndarray,
                 scale: TargetScale, imgsz: int, cache: bool = False) -> None:
        super().__init__(labels, targets, scale, imgsz)
        self.files = [os.fspath(path) for path in paths]  # strings: light to hold and to fork
        self.cached: list[np.ndarray | UnreadableImage] | None = None
        if cache:
            self.cached = [self._decode_or_error(path) for path in self.files]

    @property
    def paths(self) -> list[Path]:
        """The image files, in sample order."""
        return [Path(path) for path in self.files]

    def _decode_or_error(self, path: str) -> np.ndarray | UnreadableImage:
        try:
            return decode(path, self.imgsz)
        except UnreadableImage as err:
            return err

    @property
    def cache_bytes(self) -> int:
        if self.cached is None:
            return 0
        return sum(image.nbytes for image in self.cached if isinstance(image, np.ndarray))

    def load_image(self, index: int) -> np.ndarray:
        if self.cached is None:
            return decode(self.files[index], self.imgsz)
        image = self.cached[index]
        if isinstance(image, UnreadableImage):
            raise UnreadableImage(image.path, image.reason)
        return image


def file_datasets(sources: Sources, imgsz: int, dev_samples: int | None, cache: bool, with_targets: bool
                  ) -> tuple[FileDataset, FileDataset]:
    """(train, val) of ``sources``, ``dev_samples`` of them at most; ``with_targets=False`` drops targets.

    Targets are standardised with the mean and std of the training images used.
    """
    names = sources.targets if with_targets else []
    picked = []
    for entries, limit in zip((sources.train, sources.val), dev_limits(dev_samples), strict=True):
        chosen = entries.take(subset_indices(len(entries), limit))
        values = chosen.values if with_targets else np.zeros((len(chosen), 0))
        picked.append((chosen.paths, chosen.labels, values))
    scale = TargetScale.fit(names, picked[0][2])
    train, val = (FileDataset(paths, labels, values, scale, imgsz, cache) for paths, labels, values in picked)
    return train, val
