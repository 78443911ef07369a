"""Which checkpoint files a supervised command wrote, and whether a kill left them whole (no torch).

A kill can land while a library writes its checkpoint in place (ultralytics'
``last.pt``, Lightning's ``.ckpt`` and the files of a Hugging Face
``checkpoint-N`` are all written without a rename): a restart must not be
pointed at a torn file. A file from before the supervised command started
(a folder reused with ``exist_ok``, an output directory of an earlier run) is
not this run's either: :class:`Before` remembers what was there.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

Mark = tuple[int, int, int]  # inode, size, modification time (ns): a file as it was


def mark(path: Path) -> Mark | None:
    """``path``'s identity and state now; None where there is no such file."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


class Before:
    """The files that existed before the first start: a later one, or one written since, is the run's own."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.marks = {path: mark(path) for path in paths}

    def written_since(self, path: Path) -> bool:
        """Whether ``path`` exists and was not there, as it is now, before the first start."""
        now = mark(path)
        return now is not None and now != self.marks.get(path)


def complete_torch_file(path: Path) -> bool:
    """Whether ``path`` is a whole ``torch.save`` file: a zip archive with its end record.

    ``torch.save`` writes a zip archive whose directory comes last, so a file
    cut short by a kill has none and is refused.
    """
    try:
        return path.is_file() and zipfile.is_zipfile(path)
    except OSError:
        return False


def complete_json(path: Path) -> bool:
    """Whether ``path`` holds a whole JSON document (the last file a Hugging Face checkpoint gets)."""
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def newest(paths: Iterable[Path]) -> Path | None:
    """The most recently modified of ``paths`` (None for none)."""
    stamped = [(stamp, str(path), path) for path in paths if (stamp := _mtime(path)) is not None]
    return max(stamped)[2] if stamped else None


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
