"""The classify layout: ``DATA/train/<class>/*.jpg`` and ``DATA/val/<class>/*.jpg``.

Classes are the sub-directories of ``train/``, sorted; ``val/`` may lack some
of them but may not add new ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oomguard.data.dataset import TargetScale, dev_limits, subset_indices
from oomguard.data.images import EXTENSIONS, FileDataset, image_files
from oomguard.errors import DataError


def _class_dirs(split: Path) -> list[Path]:
    if not split.is_dir():
        raise DataError(
            f"data directory {str(split)!r} not found; the classify layout is DATA/train/<class>/*.jpg "
            "and DATA/val/<class>/*.jpg"
        )
    dirs = sorted(path for path in split.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not dirs:
        raise DataError(f"{str(split)!r} has no class directories; put images in {split}/<class>/")
    return dirs


def scan_split(split: Path, classes: list[str] | None) -> tuple[list[Path], np.ndarray, list[str]]:
    """(files, labels, classes) of one split; ``classes`` None means "this is train: define them"."""
    dirs = _class_dirs(split)
    is_train = classes is None
    if classes is None:
        classes = [path.name for path in dirs]
    index = {name: number for number, name in enumerate(classes)}
    found: dict[Path, list[Path]] = {}
    for directory in dirs:
        if directory.name not in index:
            raise DataError(
                f"class {directory.name!r} in {str(split)!r} is not among the {len(classes)} classes of "
                "train/; add it to train/ or remove it from val/"
            )
        found[directory] = image_files(directory)
    if not any(found.values()):
        raise DataError(f"no images ({', '.join(EXTENSIONS)}) under {str(split)!r}; add images")
    paths: list[Path] = []
    labels: list[int] = []
    for directory, files in found.items():
        if not files and is_train:
            raise DataError(
                f"class directory {str(directory)!r} has no images ({', '.join(EXTENSIONS)}); "
                "add images or remove the directory"
            )
        paths += files
        labels += [index[directory.name]] * len(files)
    return paths, np.asarray(labels, dtype=np.int64), classes


def folder_datasets(root: Path, imgsz: int, dev_samples: int | None, cache: bool
                    ) -> tuple[FileDataset, FileDataset, list[str]]:
    """(train, val, classes) for the classify layout under ``root``."""
    train_paths, train_labels, classes = scan_split(root / "train", None)
    val_paths, val_labels, _ = scan_split(root / "val", classes)
    scale = TargetScale.fit([], np.zeros((len(train_labels), 0)))
    datasets = []
    for paths, labels, limit in zip((train_paths, val_paths), (train_labels, val_labels),
                                    dev_limits(dev_samples), strict=True):
        keep = subset_indices(len(paths), limit)
        datasets.append(FileDataset([paths[i] for i in keep], labels[keep], np.zeros((len(keep), 0)),
                                    scale, imgsz, cache))
    return datasets[0], datasets[1], classes
