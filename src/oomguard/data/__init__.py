"""Datasets: the builtin shapes, image folders, csv tables; the resumable sampler and loaders.

``find_layout(data)`` says what a ``data=`` value is; ``open_datasets`` builds
the train and val datasets for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from oomguard.data.dataset import ImageDataset
from oomguard.data.folder import folder_datasets
from oomguard.data.shapes import CLASSES, shapes_datasets
from oomguard.data.table import table_datasets
from oomguard.errors import ConfigError, DataError

Layout = Literal["shapes", "table", "folder", "detect"]
BUILTIN_SHAPES = "builtin:shapes"
DEFAULT_IMGSZ = {"shapes": 32, "table": 224, "folder": 224}

__all__ = ["BUILTIN_SHAPES", "ImageDataset", "Layout", "find_layout", "open_datasets"]


def find_layout(data: str) -> Layout:
    """``builtin:shapes``, a ``.yaml`` (detection), ``DATA/train.csv`` (table) or ``DATA/train/`` (folder)."""
    if data == BUILTIN_SHAPES:
        return "shapes"
    if data.startswith("builtin:"):
        raise ConfigError(f"unknown builtin dataset {data!r}; the only one is {BUILTIN_SHAPES}")
    if data.endswith((".yaml", ".yml")):
        return "detect"
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"data directory {data!r} not found; give an existing directory or {BUILTIN_SHAPES}")
    if (root / "train.csv").is_file():
        return "table"
    if (root / "train").is_dir():
        return "folder"
    raise DataError(
        f"data directory {data!r} has neither train.csv nor train/; use DATA/train/<class>/*.jpg "
        "(classify) or DATA/train.csv with columns image,label,<targets> (multitask)"
    )


def open_datasets(data: str, layout: Layout, imgsz: int, dev_samples: int | None, cache: bool,
                  with_targets: bool) -> tuple[ImageDataset, ImageDataset, list[str]]:
    """(train, val, classes); ``with_targets=False`` drops regression targets (plain classification)."""
    if layout == "shapes":
        train, val = shapes_datasets(imgsz, dev_samples, with_targets)
        return train, val, list(CLASSES)
    if layout == "table":
        return table_datasets(Path(data), imgsz, dev_samples, cache, with_targets)
    if layout == "folder":
        return folder_datasets(Path(data), imgsz, dev_samples, cache)
    raise ConfigError("task=detect trains only with oomguard train (through ultralytics); "
                      "this command supports task=classify and task=multitask")
