"""Checking every image of a dataset when it is indexed, once: a cache keyed by path, size and mtime.

::

    index = ImageIndex(root, say)          # loads CACHE/index/<hash of root>.json if there is one
    reasons = index.check(paths)           # None per readable file, else why it cannot be read
    index.save()                           # only when something was checked anew

A file whose size and modification time are those cached is not opened
again, so the second indexing of a folder costs one ``stat`` per file. The
cache lives under the user's cache directory (:func:`~.cache_dir.cache_root`),
never in the dataset folder, which the user may not own; a cache that cannot
be read is rebuilt and one that cannot be written is skipped. Files not yet
cached are checked on a few threads (Pillow decodes without the GIL), with a
progress display on large folders.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from oomguard.atomic import write_atomic
from oomguard.data.cache_dir import cache_root
from oomguard.data.decode import check_image, reason_of

Say = Callable[[str], None]
VERSION = 1
CHUNK = 64  # files per task on the checking threads
PROGRESS_FROM = 2000  # files to check before progress is shown
PROGRESS_EVERY = 5.0  # seconds between progress lines when the output is not a terminal


def index_file(root: Path) -> Path:
    """The cache file of the dataset at ``root`` (one per dataset folder, by its absolute path)."""
    digest = hashlib.sha256(os.fspath(root.resolve()).encode()).hexdigest()[:20]
    return cache_root() / "index" / f"{digest}.json"


class ImageIndex:
    """The checked state of the images under one dataset root; see the module's docstring."""

    def __init__(self, root: Path, say: Say | None = None) -> None:
        self.root = root
        self.file = index_file(root)
        self.say = say
        self._prefix = os.fspath(root) + os.sep
        self._cached = self._load()
        self._seen: dict[str, list[Any]] = {}
        self._checked = 0

    def _load(self) -> dict[str, list[Any]]:
        try:
            stored = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(stored, dict) or stored.get("version") != VERSION:
            return {}
        files = stored.get("files")
        return files if isinstance(files, dict) else {}

    def check(self, paths: Sequence[str | Path]) -> list[str | None]:
        """For each path, None when it reads as an image, else why not (``not found``, Pillow's words)."""
        reasons: list[str | None] = [None] * len(paths)
        todo: list[tuple[int, str, str, list[Any]]] = []  # (number, key, name, [size, mtime, reason])
        prefix, cut, cached, seen = self._prefix, len(self._prefix), self._cached, self._seen
        for number, path in enumerate(paths):
            name = path if isinstance(path, str) else os.fspath(path)
            try:
                stat = os.stat(name)
            except OSError as err:
                reasons[number] = reason_of(err)
                continue
            key = name[cut:] if name.startswith(prefix) else os.path.abspath(name)
            entry = cached.get(key)
            if (isinstance(entry, list) and len(entry) == 3 and entry[0] == stat.st_size
                    and entry[1] == stat.st_mtime_ns):
                seen[key] = entry
                reasons[number] = entry[2]
            else:
                todo.append((number, key, name, [stat.st_size, stat.st_mtime_ns, None]))
        for (number, key, _, entry), reason in zip(todo, self._check_files([item[2] for item in todo]),
                                                   strict=True):
            entry[2] = reason
            seen[key] = entry
            reasons[number] = reason
        self._checked += len(todo)
        return reasons

    def _check_files(self, names: list[str]) -> Iterator[str | None]:
        if not names:
            return
        chunks = [names[start:start + CHUNK] for start in range(0, len(names), CHUNK)]
        progress = _Progress(len(names), self.say) if len(names) >= PROGRESS_FROM and self.say else None
        threads = max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(threads, thread_name_prefix="oomguard-check") as pool:
            for chunk in pool.map(_check_chunk, chunks):
                yield from chunk
                if progress is not None:
                    progress.advance(len(chunk))
        if progress is not None:
            progress.close()

    @property
    def checked(self) -> int:
        """Files opened by this index (not answered from the cache)."""
        return self._checked

    def save(self) -> None:
        """Write the cache when anything was checked anew or left the dataset; never fails a run."""
        if not self._checked and self._seen.keys() == self._cached.keys():
            return
        payload = {"version": VERSION, "root": os.fspath(self.root.resolve()), "files": self._seen}
        with contextlib.suppress(OSError):  # a read-only cache directory: the next run checks again
            write_atomic(self.file, json.dumps(payload, separators=(",", ":")))


def _check_chunk(names: list[str]) -> list[str | None]:
    return [check_image(name) for name in names]


class _Progress:
    """A bar on a terminal; elsewhere (a log, the supervisor's pipe) a line every few seconds."""

    def __init__(self, total: int, say: Say) -> None:
        self.total, self.say, self.done = total, say, 0
        self.last = time.monotonic()
        self.bar: Any = None
        if sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("checking images"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), transient=True)
            self.task = self.bar.add_task("check", total=total)
            self.bar.start()
        else:
            say(f"checking {total} images (once: later runs reuse the result)")

    def advance(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
        elif time.monotonic() - self.last >= PROGRESS_EVERY:
            self.last = time.monotonic()
            self.say(f"checking images: {self.done}/{self.total}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
