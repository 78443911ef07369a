"""The CPU: host memory, no allocator limit, the OS kills before any exception."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache

import torch

from oomguard import host
from oomguard.devices.base import Device


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def release_host_memory() -> None:
    """Collect garbage and return freed heap pages to the OS.

    glibc keeps freed chunks in its arenas, so RSS stays at its peak after a
    large step unless asked to trim; ``malloc_trim(0)`` is that ask.
    """
    gc.collect()
    trim_host_heap()


def trim_host_heap() -> None:
    """``malloc_trim(0)``: freed heap pages back to the OS, no garbage collection."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


class CPUDevice(Device):
    kind = "cpu"
    unified = True
    has_hard_limit = False

    def __init__(self) -> None:
        super().__init__(torch.device("cpu"))

    def total_memory(self) -> int:
        return host.total_memory()

    def available_memory(self) -> int:
        return host.available_memory()

    def empty_cache(self) -> None:
        release_host_memory()

    def release_cache(self) -> None:
        trim_host_heap()
