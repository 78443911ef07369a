"""The multitask layout: ``DATA/train.csv`` and ``DATA/val.csv``.

Columns: ``image`` (a path relative to DATA), ``label`` (a class name) and any
number of numeric columns, each a regression target. Targets are standardised
with the train set's mean and std (kept in ``TargetScale`` to report MAE in the
original units). Classes are the sorted labels of train.csv. A row whose image
file is missing is reported as the corrupt images are, when the images are checked.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from oomguard.data.entries import Entries, Sources
from oomguard.errors import DataError

Rows = tuple[list[str], list[str], np.ndarray]  # files, labels, raw targets [N, T]


def _number(text: str, file: Path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(
            f"{str(file)!r} line {line}: column {column!r} has {text!r}, not a number; every column "
            "besides image and label is a regression target and must be numeric"
        )
    return value


def _row(row: dict[str, str | None], file: Path, line: int, root: Path, names: list[str]
         ) -> tuple[str, str, list[float]]:
    """(image path, label, target values) of one csv row, checked."""
    where = f"{str(file)!r} line {line}"
    image = (row["image"] or "").strip()
    if not image:
        raise DataError(f"{where}: the image is empty; give every row an image path")
    path = os.path.join(root, image)
    label = (row["label"] or "").strip()
    if not label:
        raise DataError(f"{where}: the label is empty; give every image a class name")
    return path, label, [_number((row[name] or "").strip(), file, line, name) for name in names]


def read_table(file: Path, root: Path, target_names: list[str] | None) -> tuple[Rows, list[str]]:
    """The rows of one csv and its target columns (``target_names`` None: all numeric columns)."""
    if not file.is_file():
        raise DataError(
            f"{str(file)!r} not found; the multitask layout is DATA/train.csv and DATA/val.csv with "
            "columns image,label,<targets...>"
        )
    with file.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = columns
        if "image" not in columns or "label" not in columns:
            raise DataError(f"{str(file)!r} needs columns 'image' and 'label'; it has {columns}")
        names = [c for c in columns if c not in ("image", "label")] if target_names is None else target_names
        missing = [name for name in names if name not in columns]
        if missing:
            raise DataError(f"{str(file)!r} lacks target column {missing[0]!r} that train.csv has; add it")
        rows = [_row(row, file, line, root, names) for line, row in enumerate(reader, start=2)]
    paths = [path for path, _, _ in rows]
    labels = [label for _, label, _ in rows]
    values = [numbers for _, _, numbers in rows]
    if not paths:
        raise DataError(f"{str(file)!r} lists no images; add rows image,label,...")
    return (paths, labels, np.asarray(values, dtype=np.float64).reshape(len(paths), len(names))), names


def table_sources(root: Path, with_targets: bool) -> Sources:
    """Both splits of the csv layout under ``root``; ``with_targets=False`` ignores the target columns."""
    (train_paths, train_labels, train_values), names = read_table(
        root / "train.csv", root, None if with_targets else []
    )
    (val_paths, val_labels, val_values), _ = read_table(root / "val.csv", root, names)
    classes = sorted(set(train_labels))
    unknown = sorted(set(val_labels) - set(classes))
    if unknown:
        raise DataError(
            f"val.csv has label {unknown[0]!r} that train.csv lacks; every val class must appear in train"
        )
    index = {name: number for number, name in enumerate(classes)}
    train = Entries.of(train_paths, [index[label] for label in train_labels], train_values)
    val = Entries.of(val_paths, [index[label] for label in val_labels], val_values)
    return Sources("train.csv and val.csv", "val.csv", classes, names, train, val)
