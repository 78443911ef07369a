"""Datasets: the builtin shapes, image folders, csv tables; the resumable sampler and loaders.

``find_layout(data)`` says what a ``data=`` value is; ``open_datasets`` indexes
it (:mod:`.indexing`: found, checked, recorded in the run directory) and
builds the train and val datasets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from oomguard.config import Config
from oomguard.data.dataset import ImageDataset
from oomguard.data.entries import Sources
from oomguard.data.folder import LAYOUTS_HELP, folder_sources
from oomguard.data.images import file_datasets
from oomguard.data.indexing import index_files
from oomguard.data.layouts import find_folder_layout
from oomguard.data.shapes import CLASSES, shapes_datasets
from oomguard.data.summary import DataSummary
from oomguard.data.table import table_sources
from oomguard.errors import ConfigError, DataError
from oomguard.rundir import RunDir

Layout = Literal["shapes", "table", "folder", "detect"]
BUILTIN_SHAPES = "builtin:shapes"
DEFAULT_IMGSZ = {"shapes": 32, "table": 224, "folder": 224}

__all__ = ["BUILTIN_SHAPES", "DataSummary", "ImageDataset", "Layout", "Opened", "find_layout",
           "open_datasets"]


def find_layout(data: str) -> Layout:
    """``builtin:shapes``, a ``.yaml`` (detection), ``DATA/train.csv`` (table) or image folders (folder)."""
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
    if find_folder_layout(root) is not None:
        return "folder"
    raise DataError(
        f"data directory {data!r} has neither train.csv nor image folders; use {LAYOUTS_HELP} (classify), "
        "or DATA/train.csv with columns image,label,<targets> (multitask)"
    )


@dataclass(frozen=True)
class Opened:
    """The datasets of a run and what their data is (:class:`DataSummary`, to announce)."""

    train: ImageDataset
    val: ImageDataset
    classes: list[str]
    summary: DataSummary


def open_datasets(config: Config, layout: Layout, imgsz: int, with_targets: bool, run: RunDir | None = None,
                  write: bool = True, say: Callable[[str], None] | None = None) -> Opened:
    """Train and val datasets of ``config.data``; ``with_targets=False`` drops regression targets.

    Image files are indexed into ``run`` (``dataset.json``; a resume reads it
    back); ``write`` False (a rank other than 0) only reads. ``say`` shows
    the progress of a first, long check of the images.
    """
    if layout == "shapes":
        shapes_train, shapes_val = shapes_datasets(imgsz, config.dev_samples, with_targets)
        summary = DataSummary(BUILTIN_SHAPES, "its own val split", len(CLASSES), len(shapes_train),
                              len(shapes_val))
        return Opened(shapes_train, shapes_val, list(CLASSES), summary)
    root = Path(config.data)
    finders: dict[str, Callable[[], Sources]] = {
        "table": lambda: table_sources(root, with_targets),
        "folder": lambda: folder_sources(root, config.val_fraction, config.seed),
    }
    if layout not in finders:
        raise ConfigError("task=detect trains only with oomguard train (through ultralytics); "
                          "this command supports task=classify and task=multitask")
    indexed = index_files(root, finders[layout], run, strict=config.strict_data, write=write, say=say)
    train, val = file_datasets(indexed.sources, imgsz, config.dev_samples, config.cache, with_targets)
    return Opened(train, val, indexed.sources.classes, DataSummary.of(indexed, root, len(train), len(val)))
