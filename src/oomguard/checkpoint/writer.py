"""Checkpoints written in the background: the loop pays for an in-memory copy, not for the disk.

``submit`` waits for the previous write (so at most one copy is alive),
snapshots the state on the caller's thread and hands the copy to a writer
thread, which runs at a lower CPU priority (nice 10, Linux) so that hashing
and copying to the page cache give way to training when the cores are busy.

A disk that keeps failing does not stop training at once: each failure
is reported by the store, and only when no save has succeeded for
``stop_after`` seconds (and at least ``min_failures`` attempts failed in a row)
does :attr:`AsyncCheckpointer.should_stop` ask the loop to stop cleanly, before
more unprotected work piles up.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from oomguard.checkpoint.snapshots import snapshot, snapshot_bytes
from oomguard.checkpoint.store import CheckpointStore, SaveResult
from oomguard.units import format_duration


class AsyncCheckpointer:
    """Background writer for one :class:`CheckpointStore`, with the time-based trigger."""

    def __init__(self, store: CheckpointStore, every: float | None = None, stop_after: float = 1800.0,
                 min_failures: int = 3, nice: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.nice = nice
        self.every = every
        self.stop_after = stop_after
        self.min_failures = min_failures
        self.clock = clock
        self.failures = 0
        self.last_result: SaveResult | None = None
        self.last_error: str | None = None
        #: Bytes of the copy being written (0 when idle), and of the last copy taken: host memory that a
        #: host-memory budget keeps free for it (the loop hands it to ``Guard.add_snapshot_bytes``).
        self.pending_bytes = self.snapshot_bytes = 0
        #: Seconds the last submit kept the caller (waiting for the previous write + snapshot).
        self.submit_seconds = 0.0
        self._last_success = clock()
        self._last_submit = clock()
        self._thread: threading.Thread | None = None
        self._crash: BaseException | None = None

    def due(self) -> bool:
        """True when ``every`` seconds passed since the last submit (the ``checkpoint_every`` trigger)."""
        return self.every is not None and self.clock() - self._last_submit >= self.every

    def submit(self, state: Mapping[str, Any], step: int, best: bool = False) -> SaveResult | None:
        """Copy ``state`` now and write it in the background; return the previous write's result.

        ``state`` may hold live tensors (``capture_state``): they are cloned
        before this returns, so the loop may step the optimizer right away.
        """
        start = time.perf_counter()
        previous = self.wait()
        copy = snapshot(state)
        self.pending_bytes = self.snapshot_bytes = snapshot_bytes(copy)
        self._last_submit = self.clock()
        self._thread = threading.Thread(target=self._write, args=(copy, step, best),
                                        name="oomguard-checkpoint", daemon=True)
        self._thread.start()
        self.submit_seconds = time.perf_counter() - start
        return previous

    def wait(self) -> SaveResult | None:
        """Block until the write in flight is done; return its result.

        Re-raises, on the caller's thread, anything but an OSError that the
        writer hit (a bug, not a full disk, must not pass silently).
        """
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._crash is not None:
            crash, self._crash = self._crash, None
            raise crash
        return self.last_result

    def close(self) -> SaveResult | None:
        """Finish the write in flight (call before the process exits)."""
        return self.wait()

    def __enter__(self) -> AsyncCheckpointer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is None:
            self.close()
        elif self._thread is not None:  # keep the original exception; still finish the write
            self._thread.join()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def should_stop(self) -> bool:
        """True when checkpoints have kept failing for ``stop_after`` seconds: stop before losing more."""
        return self.failures >= self.min_failures and self.clock() - self._last_success >= self.stop_after

    @property
    def stop_reason(self) -> str:
        """One line for the user when :attr:`should_stop` is true."""
        since = format_duration(self.clock() - self._last_success)
        return (f"no checkpoint could be saved for {since} ({self.failures} attempts failed, last: "
                f"{self.last_error}); training stops so that no more work is lost. Free disk space in "
                f"{self.store.directory} and rerun with --resume")

    def _write(self, copy: Mapping[str, Any], step: int, best: bool) -> None:
        _lower_priority(self.nice)
        try:
            result = self.store.save(copy, step, best)
        except BaseException as exc:  # re-raised by wait() on the training thread
            self._crash = exc
            return
        finally:
            self.pending_bytes = 0
        self.last_result = result
        if result.ok:
            self.failures = 0
            self.last_error = None
            self._last_success = self.clock()
        else:
            self.failures += 1
            self.last_error = result.error


def _lower_priority(nice: int) -> None:
    """Let the training threads win the CPU over the writer (hashing and copying are not urgent).

    Linux keeps a nice value per thread; elsewhere the call would lower the
    whole process, so it is skipped. The writer goes ``nice`` below the thread
    that started it (a run already started with ``nice`` stays below the training).
    """
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):  # not permitted here: write at normal priority
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + nice))
