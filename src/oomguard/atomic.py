"""Replacing a file so that a kill at any instant leaves the old or the new version, never half of one.

The one way oomguard writes a file that readers may open at any time
(``config.yaml``, ``results.csv``, the report, YOLO's weights, the data index)::

    write a hidden temporary file beside it -> fsync it -> rename it over the name -> fsync the directory

Checkpoints add checksum sidecars on top (:mod:`oomguard.checkpoint.checksummed`);
appended logs (``events.jsonl``, ``memory.csv``) are not replaced at all.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TMP_MARK = ".tmp-"
_counter = itertools.count()


def temp_path(final: Path) -> Path:
    """A hidden name beside ``final`` that no other writer uses (pid + counter)."""
    return final.with_name(f".{final.name}{TMP_MARK}{os.getpid()}-{next(_counter)}")


def temp_owner(path: Path) -> int | None:
    """The PID that made temporary file ``path``, or None if ``path`` is not one of ours."""
    name = path.name
    if not name.startswith(".") or TMP_MARK not in name:
        return None
    pid, _, _count = name.rpartition(TMP_MARK)[2].partition("-")
    return int(pid) if pid.isdigit() else None


def fsync_dir(directory: Path) -> None:
    """Make the renames done in ``directory`` durable.

    Without it a power cut can forget a rename that a later unlink relied on.
    Windows cannot open a directory; some file systems refuse fsync on one.
    """
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: str | Path, mode: str = "w", **options: Any) -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` when the block ends without an error.

    ``mode`` is ``"w"`` (text; ``options`` go to :func:`open`, e.g. ``newline=""``)
    or ``"wb"``. On an error the temporary file is removed and ``path`` is untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        with open(tmp, mode.replace("w", "x"), **options) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8), atomically and durably."""
    with replacing(path, "wb") as file:
        file.write(data.encode("utf-8") if isinstance(data, str) else data)
