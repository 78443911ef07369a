"""The checkpoint directory ``weights/``: atomic, checksummed saves and a loader that survives corruption.

Layout::

    ckpt-000000120.pt  + ckpt-000000120.pt.sha256   the newest `keep` saves, named by step
    last.pt            + last.pt.sha256             a hard link to the newest save
    best.pt            + best.pt.sha256             a hard link to the save with the best metric

Order of one save (see :func:`~oomguard.checkpoint.checksummed.publish`): write a
hidden temporary file and fsync it, publish it as ``ckpt-<step>.pt`` (sidecar
first), point ``last.pt`` (and ``best.pt``) at it, fsync the directory, and
only then delete the saves beyond ``keep``. A kill at any instant leaves every name verifiable and
at least the previous complete save in place.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from oomguard import events as ev
from oomguard.atomic import fsync_dir, temp_owner, temp_path
from oomguard.checkpoint import checksummed
from oomguard.errors import OomguardError
from oomguard.events import EventLog

_CKPT_NAME = re.compile(r"^ckpt-(\d+)\.pt$")


class CheckpointError(OomguardError):
    """A checkpoint that cannot be used: missing, corrupt, or not one torch can read safely."""

    def __init__(self, message: str, path: Path | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason or message


@dataclass(frozen=True)
class SaveResult:
    """What one save did. ``error`` is set (and ``path`` None) when nothing new was published."""

    step: int
    path: Path | None = None
    bytes: int = 0
    seconds: float = 0.0
    sha256: str = ""
    best: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    require_checksum: bool = False) -> dict[str, Any]:
    """Verify ``path`` against its sidecar (when it has one) and load it weights-only.

    ``require_checksum`` also refuses a file without a sidecar; a checkpoint the
    user names explicitly may come from elsewhere and need not have one.
    Raises :class:`CheckpointError` with a one-line message.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; give the path of a .pt file written by oomguard",
            path, "file is missing",
        )
    if require_checksum or checksummed.sidecar(path).exists():
        reason = checksummed.verify(path)
        if reason is not None:
            raise CheckpointError(
                f"checkpoint {path} is corrupt: {reason}; resume from an older checkpoint "
                f"in {path.parent} or start a new run", path, reason,
            )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        reason = f"torch cannot read it ({first})"
        raise CheckpointError(
            f"checkpoint {path} is unreadable: {reason}; use a checkpoint written by oomguard "
            f"(loadable with weights_only=True)", path, reason,
        ) from None
    if not isinstance(state, Mapping):
        reason = f"it holds a {type(state).__name__}, not a dict"
        raise CheckpointError(f"checkpoint {path} is not a checkpoint: {reason}", path, reason)
    return dict(state)


class CheckpointStore:
    """Saves and finds checkpoints in one ``weights/`` directory.

    One process writes at a time (hold a :class:`~oomguard.checkpoint.lock.RunLock`).
    Failures to write are reported (``checkpoint`` event with ``error``, and a
    console warning) and returned, never raised: the run goes on with the
    previous checkpoint intact.
    """

    def __init__(self, weights_dir: str | Path, keep: int = 2, events: EventLog | None = None,
                 console: Callable[[str], None] | None = None) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.directory = Path(weights_dir)
        self.keep = keep
        self.events = events
        self.console = console or _stderr
        self._tidied = False

    @property
    def last(self) -> Path:
        return self.directory / "last.pt"

    @property
    def best(self) -> Path:
        return self.directory / "best.pt"

    def path_for(self, step: int) -> Path:
        return self.directory / f"ckpt-{step:09d}.pt"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of every ``ckpt-*.pt``, newest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _CKPT_NAME.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found, reverse=True)

    # -- saving -----------------------------------------------------------------------------------

    def save(self, state: Mapping[str, Any], step: int, best: bool = False) -> SaveResult:
        """Write ``state`` as the checkpoint of ``step``; make it ``last.pt`` (and ``best.pt``).

        ``state`` should be a :func:`~oomguard.checkpoint.snapshots.snapshot` when
        training goes on meanwhile. OSError (disk full, directory gone, no
        permission) is reported and returned as ``SaveResult.error``.
        """
        start = time.perf_counter()
        final = self.path_for(step)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if not self._tidied:
                self._remove_leftovers()
                self._tidied = True
            digest, size = self._publish_new(final, state)
        except OSError as exc:
            return self._failed(step, final, exc, best, saved=False)
        try:
            self._point(self.last, final, digest)
            if best:
                self._point(self.best, final, digest)
            fsync_dir(self.directory)  # the new names are durable before old files go
            self._rotate(step)
        except OSError as exc:
            return self._failed(step, final, exc, best, saved=True)
        seconds = time.perf_counter() - start
        if self.events is not None:
            epoch = state.get("epoch") if isinstance(state, Mapping) else None
            self.events.emit(ev.Checkpoint(path=str(final), epoch=epoch, step=step,
                                           seconds=round(seconds, 4), bytes=size, best=best))
        return SaveResult(step, final, size, seconds, digest, best)

    def _publish_new(self, final: Path, state: Mapping[str, Any]) -> tuple[str, int]:
        tmp = temp_path(final)
        try:
            digest, size = checksummed.write_new(tmp, lambda file: torch.save(state, file))  # type: ignore[arg-type]
            checksummed.publish(tmp, final, digest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return digest, size

    def _point(self, alias: Path, final: Path, digest: str) -> None:
        """Make ``alias`` (last.pt / best.pt) hold the bytes of ``final``, atomically."""
        tmp = temp_path(alias)
        try:
            checksummed.link_or_copy(final, tmp)
            checksummed.publish(tmp, alias, digest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _rotate(self, step: int) -> None:
        """Delete saves beyond ``keep``, and any with a later step (a timeline abandoned on resume).

        Runs only after the new save and ``last.pt`` are in place.
        """
        saves = self.checkpoints()
        later = [path for s, path in saves if s > step]
        older = [path for s, path in saves if s <= step][self.keep:]
        for path in later + older:
            path.unlink(missing_ok=True)
            checksummed.sidecar(path).unlink(missing_ok=True)

    def _remove_leftovers(self) -> None:
        """Temporary files of killed writers, and sidecars whose checkpoint was rotated away."""
        for path in self.directory.iterdir():
            owner = temp_owner(path)
            if owner is not None and owner != os.getpid():
                path.unlink(missing_ok=True)
            elif path.name.endswith(checksummed.SIDECAR_SUFFIX):
                described = path.with_name(path.name[: -len(checksummed.SIDECAR_SUFFIX)])
                if _CKPT_NAME.match(described.name) and not described.exists():
                    path.unlink(missing_ok=True)

    def _failed(self, step: int, final: Path, exc: OSError, best: bool, saved: bool) -> SaveResult:
        """Report a save that failed; ``saved`` when the new checkpoint is in place but an alias is not."""
        code = errno.errorcode.get(exc.errno or 0)
        error = f"{exc.strerror} [{code}]" if exc.strerror and code else str(exc)
        if saved:
            what = f"checkpoint of step {step} saved as {final.name}, but updating last.pt failed: {error}"
        else:
            previous = next((path.name for s, path in self.checkpoints() if s != step), None)
            kept = f"{previous} is intact" if previous else "no earlier checkpoint exists"
            what = f"checkpoint of step {step} not saved: {error}; {kept}"
        self.console(f"oomguard: warning: {what}; training goes on. "
                     f"Free disk space or fix permissions in {self.directory}")
        if self.events is not None:
            self.events.emit(ev.Checkpoint(path=str(final), step=step, error=error, best=best))
        return SaveResult(step, final if saved else None, best=best, error=error)

    # -- loading ----------------------------------------------------------------------------------

    def load(self, path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Verify and load one checkpoint of this store (its sidecar is required)."""
        return load_checkpoint(path, map_location, require_checksum=True)

    def load_latest(self, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path] | None:
        """The newest checkpoint that verifies, and its path; None when there is none at all.

        Newer files that fail their checksum are reported (console and a
        ``checkpoint`` event with ``corrupt``) and skipped; ``last.pt`` and then
        ``best.pt`` are the last resorts. Raises :class:`CheckpointError` when
        checkpoints exist but none verifies.
        """
        candidates = [path for _step, path in self.checkpoints()]
        candidates += [alias for alias in (self.last, self.best) if alias.exists()]
        tried: list[Path] = []
        problems: list[str] = []
        for path in candidates:
            if any(_same_file(path, other) for other in tried):
                continue
            tried.append(path)
            try:
                return self.load(path, map_location), path
            except CheckpointError as exc:
                problems.append(f"{path.name}: {exc.reason}")
                self.console(f"oomguard: warning: checkpoint {path} is corrupt ({exc.reason}); "
                             f"trying the next older one")
                if self.events is not None:
                    self.events.emit(ev.Checkpoint(corrupt=str(path), reason=exc.reason))
        if not tried:
            return None
        raise CheckpointError(
            f"no usable checkpoint in {self.directory}: {len(tried)} found, none verifies "
            f"({'; '.join(problems)}); restore a good copy there or start a new run (another name=)"
        )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False
