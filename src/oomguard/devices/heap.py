"""The C heap of this process: give freed pages back to the OS (glibc keeps them in RSS otherwise)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def trim_host_heap() -> None:
    """``malloc_trim(0)``: freed heap pages back to the OS, no garbage collection (glibc only)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def release_host_memory() -> None:
    """Collect garbage and return freed heap pages to the OS.

    glibc keeps freed chunks in its arenas, so RSS stays at its peak after a
    large step unless asked to trim; ``malloc_trim(0)`` is that ask.
    """
    gc.collect()
    trim_host_heap()
