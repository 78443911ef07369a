"""Checkpoint files with checksums: hashed while written, published so that every name always verifies.

Every published file has a checksum sidecar ``<name>.sha256`` in the
``sha256sum`` format. The sidecar is always written *before* the file it
describes is renamed into place, and while a name is being replaced it lists
both the new and the old hash. So a SIGKILL (or a power cut) at any instant
leaves, under every final name, either the old or the new complete file, and a
sidecar that vouches for whichever it is.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from oomguard.atomic import temp_path

CHUNK = 1 << 20
SIDECAR_SUFFIX = ".sha256"
# Errors that a copy would hit as well: no point falling back to copying.
_STORAGE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EIO, getattr(errno, "EDQUOT", errno.ENOSPC)}


def sidecar(path: Path) -> Path:
    """The checksum file that goes with ``path``."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


class HashingWriter:
    """A write-only file wrapper that hashes what passes through it.

    ``torch.save`` writes its zip archive strictly sequentially, so hashing on
    the way out gives the file's SHA-256 without reading the file back.
    """

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.sha = hashlib.sha256()
        self.size = 0
        #: The first write error: torch's zip writer replaces it with its own RuntimeError.
        self.error: OSError | None = None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.sha.update(data)
        self.size += memoryview(data).nbytes
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.file.flush()


def write_new(path: Path, write: Callable[[HashingWriter], object], sync: bool = True) -> tuple[str, int]:
    """Create ``path`` (it must not exist), fill it through ``write``, fsync it; return (sha256, bytes)."""
    with open(path, "xb") as raw:
        writer = HashingWriter(raw)
        try:
            write(writer)
        except Exception:
            if writer.error is not None:  # a full disk, reported as what it is
                raise writer.error from None
            raise
        raw.flush()
        if sync:
            os.fsync(raw.fileno())
    return writer.sha.hexdigest(), writer.size


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks so that memory stays flat."""
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def read_digests(path: Path) -> list[str]:
    """The hashes the sidecar of ``path`` accepts (empty when there is no readable sidecar)."""
    try:
        text = sidecar(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return []
    digests = []
    for line in text.splitlines():
        digest = line.split(" ", 1)[0].strip().lower()
        if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
            digests.append(digest)
    return digests


def write_digests(path: Path, digests: list[str], sync: bool = True) -> None:
    """Atomically replace the sidecar of ``path`` with ``digests`` (sha256sum lines)."""
    target = sidecar(path)
    tmp = temp_path(target)
    text = "".join(f"{digest}  {path.name}\n" for digest in digests)
    try:
        write_new(tmp, lambda file: file.write(text.encode("ascii")), sync)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def publish(tmp: Path, final: Path, digest: str) -> None:
    """Move the complete, fsynced ``tmp`` to ``final`` so that ``final`` verifies at every instant.

    1. the sidecar lists the new hash and those valid for the current file;
    2. the rename swaps the content in one step;
    3. the sidecar forgets the old hashes (no fsync: both versions of it are valid).

    The renames become durable with the caller's :func:`fsync_dir`, which must
    come before anything older is deleted.
    """
    old = read_digests(final) if final.exists() else []
    accepted = [digest, *(d for d in old if d != digest)]
    write_digests(final, accepted)
    os.replace(tmp, final)
    if len(accepted) > 1:
        write_digests(final, [digest], sync=False)


def link_or_copy(source: Path, tmp: Path) -> None:
    """Make ``tmp`` hold the bytes of ``source``: a hard link (free), or a copy where links fail."""
    try:
        os.link(source, tmp)
    except OSError as exc:
        if exc.errno in _STORAGE_ERRORS:
            raise
        shutil.copyfile(source, tmp)
        with open(tmp, "rb+") as file:
            os.fsync(file.fileno())


def verify(path: Path) -> str | None:
    """None when ``path`` matches a hash its sidecar accepts, else a short reason.

    A file and its sidecar are swapped one after the other by a writer, so a
    mismatch is re-checked once before it is called corruption.
    """
    reason = None
    for _attempt in range(2):
        if not path.is_file():
            return "file is missing"
        try:
            actual = sha256_file(path)
        except OSError as exc:
            return f"unreadable ({exc.strerror or exc})"
        accepted = read_digests(path)
        if not accepted:
            reason = f"no checksum file {sidecar(path).name}"
        elif actual in accepted:
            return None
        else:
            reason = f"checksum mismatch (recorded {accepted[0][:12]}…, file has {actual[:12]}…)"
    return reason
