"""Indexing a dataset of image files: found by its layout, checked, and recorded in the run directory.

::

    a resume (RUN/dataset.json exists)  -> the recorded images, as they were: nothing is opened
    otherwise  find(): the layout's images, both splits (a split made if it has none)
               check every image (cached by path, size and mtime: :mod:`.index`)
               unreadable ones: strict_data refuses, listing them; else they are left out
               RUN/dataset.json (and RUN/skipped.csv when any was left out)

Nothing here decodes an image for training: that is the datasets' work, and
an image that becomes unreadable later is skipped by the loaders.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from oomguard.data.entries import Entries, Sources
from oomguard.data.index import ImageIndex, Say
from oomguard.data.record import Skipped, read_record, relative, write_record, write_skipped
from oomguard.errors import DataError
from oomguard.rundir import RunDir

NAMED = 5  # unreadable images named on the console; the rest are in skipped.csv
PROBED = 32  # recorded images looked for when a run resumes


@dataclass(frozen=True)
class Indexed:
    """The images a run trains and validates on, and what indexing left out."""

    sources: Sources
    skipped: list[Skipped] = field(default_factory=list)  # left out by this indexing
    recorded: bool = False  # read from the run's dataset.json (a resume): nothing was checked
    skipped_before: int = 0  # left out when the run started (a resume)
    record: Path | None = None  # RUN/dataset.json
    skipped_list: Path | None = None  # RUN/skipped.csv


def named(skipped: list[Skipped], root: Path) -> str:
    """``a.png (truncated), b.png (not found) and 3 more``: the first few unreadable images."""
    shown = ", ".join(f"{relative(item.path, root)} ({item.reason})" for item in skipped[:NAMED])
    more = len(skipped) - NAMED
    return shown + (f" and {more} more" if more > 0 else "")


def _readable(entries: Entries, reasons: list[str | None], split: str) -> tuple[Entries, list[Skipped]]:
    """The entries whose image reads, and the others as :class:`Skipped`."""
    keep = [number for number, reason in enumerate(reasons) if reason is None]
    skipped = [Skipped(path, split, str(reason)) for path, reason in zip(entries.paths, reasons, strict=True)
               if reason is not None]
    return (entries.take(keep) if skipped else entries), skipped


def _check_moved(sources: Sources, root: Path, record: Path) -> None:
    """Refuse a resume whose ``data=`` holds none of the recorded images (a few, spread out, looked for)."""
    paths = sources.train.paths
    probe = paths[:: max(1, len(paths) // PROBED)][:PROBED]
    if probe and not any(os.path.exists(path) for path in probe):
        raise DataError(f"none of the images recorded in {record} is under {str(root)!r} (such as "
                        f"{probe[0]!r}); resume with data= the folder the run started on, or where it moved")


def check_sources(sources: Sources, root: Path, say: Say | None = None) -> tuple[Sources, list[Skipped]]:
    """``sources`` without the images that cannot be read, and those (cached checks: :mod:`.index`)."""
    index = ImageIndex(root, say)
    reasons = index.check(sources.train.paths + sources.val.paths)
    index.save()
    cut = len(sources.train)
    train, skipped = _readable(sources.train, reasons[:cut], "train")
    val, skipped_val = _readable(sources.val, reasons[cut:], "val")
    return replace(sources, train=train, val=val), skipped + skipped_val


def index_files(root: Path, find: Callable[[], Sources], run: RunDir | None, *, strict: bool = False,
                write: bool = True, say: Say | None = None) -> Indexed:
    """The run's images under ``root``: recorded in ``run`` already, or found by ``find`` and checked.

    ``write`` False (a rank other than 0) reads a record but writes none.
    """
    recorded = read_record(run.dataset, root) if run is not None else None
    if recorded is not None:
        assert run is not None
        _check_moved(recorded[0], root, run.dataset)
        return Indexed(recorded[0], recorded=True, skipped_before=recorded[1], record=run.dataset)
    found = find()
    sources, skipped = check_sources(found, root, say)
    listed = run.skipped if run is not None and skipped else None
    if listed is not None and write:
        write_skipped(listed, root, skipped)
    if skipped and strict:
        where = f"; all are listed in {listed}" if listed is not None else ""
        raise DataError(
            f"strict_data=true: {len(skipped)} image{'s' if len(skipped) > 1 else ''} cannot be read: "
            f"{named(skipped, root)}{where}; fix or remove them, or set strict_data=false to train "
            "without them"
        )
    if not len(sources.train):
        raise DataError(f"none of the {len(found.train)} training images under {str(root)!r} can be read "
                        f"({named(skipped, root)}); fix the files")
    if run is not None and write:
        write_record(run.dataset, root, sources, len(skipped))
    return Indexed(sources, skipped, record=run.dataset if run is not None else None, skipped_list=listed)
