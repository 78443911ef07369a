"""``builtin:shapes``: the embedded default dataset, generated once and cached on disk.

Ten kinds of shape (see ``render.SHAPES``) in random colour, size, rotation and
position on noisy, blotchy backgrounds; each image also carries two regression
targets, the shape's area in pixels and the brightness of its colour. The
arrays are a pure function of the parameters below (fixed seed), generated in
a few seconds with vectorised numpy, and written atomically (a temporary
directory renamed into place) as uint8/float32 ``.npy`` files plus
``meta.json`` under the user cache directory, so later runs just load them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oomguard.data.cache_dir import cache_root
from oomguard.data.dataset import ArrayDataset, TargetScale, dev_limits, subset_indices
from oomguard.data.render import SHAPES, render

VERSION = 1  # bump when the drawing changes, so old caches are not reused
SEED = 20240611
TRAIN_COUNT, VAL_COUNT, IMAGE_SIZE = 6000, 1000, 32
CLASSES = list(SHAPES)
TARGET_NAMES = ["area", "brightness"]
CHUNK = 500  # images drawn at once: bounds the generator's memory to ~100 MB


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 [N, S, S, 3]
    labels: np.ndarray  # int64 [N]
    targets: np.ndarray  # float32 [N, 2], original units


def generate(count: int, seed: int, size: int = IMAGE_SIZE) -> Split:
    """``count`` images with balanced classes in shuffled order; the same arrays for the same arguments."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % len(CLASSES)).astype(np.int64)
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    targets = np.empty((count, len(TARGET_NAMES)), dtype=np.float32)
    for start in range(0, count, CHUNK):
        stop = min(start + CHUNK, count)
        images[start:stop], targets[start:stop] = render(labels[start:stop], rng, size)
    return Split(images, labels, targets)


def _save(directory: Path, splits: dict[str, Split]) -> None:
    for name, split in splits.items():
        np.save(directory / f"{name}_images.npy", split.images)
        np.save(directory / f"{name}_labels.npy", split.labels)
        np.save(directory / f"{name}_targets.npy", split.targets)
    meta = {"version": VERSION, "classes": CLASSES, "targets": TARGET_NAMES,
            "counts": {name: len(split.labels) for name, split in splits.items()}}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))


def _load(directory: Path) -> dict[str, Split]:
    meta = json.loads((directory / "meta.json").read_text())
    splits = {}
    for name in meta["counts"]:
        splits[name] = Split(*(np.load(directory / f"{name}_{part}.npy", allow_pickle=False)
                               for part in ("images", "labels", "targets")))
    return splits


def load_shapes(train: int | None = None, val: int | None = None, size: int | None = None,
                root: Path | None = None) -> dict[str, Split]:
    """{"train": Split, "val": Split}, from the cache or generated (and cached) on first use.

    A cache that cannot be read is regenerated; one that cannot be written
    (read-only home) is skipped, and the arrays are used from memory. Counts
    and size default to the module constants, read at call time.
    """
    train, val, size = train or TRAIN_COUNT, val or VAL_COUNT, size or IMAGE_SIZE
    directory = (root or cache_root()) / f"shapes-v{VERSION}-{train}-{val}-{size}"
    if directory.is_dir():
        try:
            return _load(directory)
        except (OSError, ValueError, KeyError):
            shutil.rmtree(directory, ignore_errors=True)
    splits = {"train": generate(train, SEED, size), "val": generate(val, SEED + 1, size)}
    tmp: Path | None = None
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        _save(tmp, splits)
        os.rename(tmp, directory)  # atomic; fails if another process got there first, which is fine
    except OSError:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return splits


def shapes_datasets(imgsz: int, dev_samples: int | None, with_targets: bool
                    ) -> tuple[ArrayDataset, ArrayDataset]:
    """Train and val datasets of builtin:shapes; ``with_targets=False`` drops the regression targets."""
    splits = load_shapes()
    names = TARGET_NAMES if with_targets else []
    limits = dev_limits(dev_samples)
    picked = {}
    for (name, split), limit in zip(splits.items(), limits, strict=True):
        keep = subset_indices(len(split.labels), limit)
        targets = split.targets[keep] if with_targets else np.zeros((len(keep), 0), np.float32)
        picked[name] = (split.images[keep], split.labels[keep], targets)
    scale = TargetScale.fit(names, picked["train"][2])
    train = ArrayDataset(*picked["train"], scale=scale, imgsz=imgsz)
    val = ArrayDataset(*picked["val"], scale=scale, imgsz=imgsz)
    return train, val
