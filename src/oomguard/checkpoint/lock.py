"""One training process per run directory.

Two processes training into the same run would overwrite each other's
checkpoints. The lock is ``flock`` on ``<run>/.oomguard.lock``, which holds
the owner's PID for the message. The kernel drops the lock when the last
descriptor of it closes, so a lock left by a killed run is simply taken over.
Forked children (DataLoader workers) would share that descriptor and keep a
killed trainer's restart out until they exit too; so every child closes its
copy right after the fork. (POSIX record locks avoid inheritance but are
dropped when *any* descriptor of the file closes in the process, which is too
easy to trigger.) Where ``fcntl`` is missing (Windows) the lock is an
exclusively created file, taken over when the PID it names is no longer running.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from types import ModuleType, TracebackType

from oomguard.errors import RunDirError

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".oomguard.lock"
_UNKNOWN = 0  # a holder whose PID is not written yet

_held: set[RunLock] = set()


def _drop_in_child() -> None:
    """After a fork: the child must not keep the parent's lock alive, nor remove it."""
    for held in list(_held):
        if held._fd is not None:
            os.close(held._fd)
            held._fd = None
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_in_child)


class RunLock:
    """``with RunLock(run_dir):`` or ``lock.acquire()`` ... ``lock.release()``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: float = 0.0) -> RunLock:
        """Take the lock, retrying up to ``wait`` seconds; RunDirError naming the holder's PID if taken."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait
        while True:
            holder = self._try_lock() if fcntl is not None else self._try_create()
            if holder is None:
                _held.add(self)
                return self
            if time.monotonic() >= deadline:
                raise RunDirError(self._message(holder))
            time.sleep(0.1)

    def release(self) -> None:
        """Give the lock up and remove the lock file (while still holding it, so no one loses a race)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
            _held.discard(self)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()

    def _try_lock(self) -> int | None:
        """Lock with fcntl; None when taken, else the holder's PID."""
        assert fcntl is not None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno in (errno.EACCES, errno.EAGAIN, errno.EWOULDBLOCK):
                    return holder
                raise
            if _still_named(fd, self.path):
                self._own(fd)
                return None
            os.close(fd)  # the previous holder removed this file as we opened it: use the new one

    def _try_create(self) -> int | None:
        """Lock without fcntl: create the file exclusively; take over a file whose PID is gone."""
        import psutil

        for _attempt in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    fd = os.open(self.path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                holder = _read_pid(fd)
                os.close(fd)
                if holder == _UNKNOWN or psutil.pid_exists(holder):
                    return holder
                self.path.unlink(missing_ok=True)  # stale: its owner is dead
                continue
            self._own(fd)
            return None
        return _UNKNOWN

    def _own(self, fd: int) -> None:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _message(self, holder: int) -> str:
        root = self.path.parent
        if holder == os.getpid():
            who = f"this process ({holder}) already"
        elif holder == _UNKNOWN:
            who = "another process that is starting"
        else:
            who = f"process {holder}"
        return (f"run directory {root} is in use by {who} (lock file {self.path.name}); wait for it to "
                f"finish or stop it, or choose another name= for a new run")


def _read_pid(fd: int) -> int:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32)
    except OSError:
        return _UNKNOWN
    digits = text.decode("ascii", "replace").strip()
    return int(digits) if digits.isdigit() else _UNKNOWN


def _still_named(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False
