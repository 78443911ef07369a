"""What a run trains on, recorded in its run directory: ``dataset.json`` and ``skipped.csv``.

``dataset.json`` holds the layout, the classes, target names and every
training and validation image (its path relative to ``data``, class number
and raw targets) as indexed when the run started, the images left out
excluded. A resume reads it instead of indexing again, so the split, the
order of samples and their number are the run's own even if files were
added, fixed or broken since (a file broken since is skipped in training,
:mod:`.skipping`), and even if the dataset moved (``data=`` its new place).

``skipped.csv`` lists every image left out when the run started, and why
(``image,split,reason``); it is there for people and for ``xargs rm``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oomguard.atomic import write_atomic
from oomguard.data.entries import Entries, Sources
from oomguard.errors import DataError

VERSION = 1


@dataclass(frozen=True)
class Skipped:
    """An image left out when the dataset was indexed."""

    path: str
    split: str  # train or val
    reason: str


def relative(path: str | Path, root: Path) -> str:
    """``path`` relative to ``root`` (``/`` separated), or absolute when it is outside."""
    text, prefix = os.fspath(path), os.fspath(root) + os.sep
    if text.startswith(prefix):
        return text[len(prefix):].replace(os.sep, "/")
    return os.path.abspath(text)


def _split_record(entries: Entries, root: Path) -> dict[str, Any]:
    prefix = os.fspath(root) + os.sep
    cut = len(prefix)
    images = [path[cut:] if path.startswith(prefix) else relative(path, root) for path in entries.paths]
    if os.sep != "/":
        images = [name.replace(os.sep, "/") for name in images]
    record: dict[str, Any] = {"image": images, "label": entries.labels.tolist()}
    if entries.values.shape[1]:
        record["targets"] = entries.values.tolist()
    return record


def write_record(file: Path, root: Path, sources: Sources, skipped: int) -> None:
    """``dataset.json`` for ``sources`` (the images left out already dropped)."""
    payload = {
        "version": VERSION, "data": os.fspath(root), "layout": sources.layout,
        "validation": sources.validation, "classes": sources.classes, "targets": sources.targets,
        "skipped": skipped, "ignored": len(sources.ignored), "train": _split_record(sources.train, root),
        "val": _split_record(sources.val, root),
    }
    write_atomic(file, json.dumps(payload, separators=(",", ":")))


def _entries(record: Any, root: Path, targets: int, file: Path) -> Entries:
    try:
        prefix = os.fspath(root) + os.sep
        paths = [name if os.path.isabs(name) else prefix + name for name in record["image"]]
        values = np.asarray(record["targets"], dtype=np.float64) if targets else None
        return Entries.of(paths, record["label"], values, targets)
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{str(file)!r} is damaged ({err}); delete it to index the data again") from None


def read_record(file: Path, root: Path) -> tuple[Sources, int] | None:
    """The recorded sources, paths under ``root`` now, and how many images were left out; None if none."""
    try:
        payload = json.loads(file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise DataError(f"{str(file)!r} cannot be read ({err}); delete it to index the data again") from None
    if not isinstance(payload, dict) or payload.get("version") != VERSION:
        raise DataError(f"{str(file)!r} is not a dataset record of this oomguard; delete it to index again")
    targets = list(payload.get("targets") or [])
    sources = Sources(str(payload.get("layout")), str(payload.get("validation")), list(payload["classes"]),
                      targets, _entries(payload.get("train"), root, len(targets), file),
                      _entries(payload.get("val"), root, len(targets), file))
    return sources, int(payload.get("skipped") or 0)


def write_skipped(file: Path, root: Path, skipped: list[Skipped]) -> None:
    """``skipped.csv``: one row per image left out."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["image", "split", "reason"])
    for item in skipped:
        writer.writerow([relative(item.path, root), item.split, item.reason])
    write_atomic(file, text.getvalue())
