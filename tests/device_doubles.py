"""Stand-ins for the accelerators this machine lacks: CUDA's and Apple MPS's memory, modelled on the CPU.

Each double is installed in place of the ``torch.cuda`` / ``torch.mps``
functions oomguard's ``devices/`` calls, so the real ``CUDADevice`` and
``MPSDevice`` code runs against it; only their tensors stay on the CPU
(``device()``). The semantics modelled, from PyTorch 2.13's allocators:

- a caching allocator (:class:`Allocator`): blocks rounded up to a granule,
  freed blocks cached and reused whole (no splitting, no merging: the cache
  fragments), so *reserved* bytes run above *allocated* ones; when a new block
  would pass its cap it releases the whole cache and tries again, then raises;
- CUDA (:class:`CudaCard`): ``set_per_process_memory_fraction`` caps reserved
  bytes at fraction x the card; another process's memory is simply not there
  (``mem_get_info`` reports what is free); ``torch.OutOfMemoryError`` with
  "Tried to allocate ...", in the 2.x spelling or the 1.x one;
- MPS (:class:`MPSChip`): Metal's driver memory (the allocator's heaps plus
  "other allocations" of MPSGraph) is outside the process's RSS; the high
  watermark is fraction x Metal's recommended working set (0: no limit; the
  default 1.7), checked against the driver memory; its OOM is a RuntimeError
  "MPS backend out of memory (MPS allocated: ..., other allocations: ..., max
  allowed: ...). Tried to allocate ... on private pool", sizes printed by
  torch's ``format_size`` in either spelling (``9.48 GiB`` today, ``33.48 GB``
  in older releases; both binary).

A loss function asks for its activations with :meth:`Allocator.hold` and
gets them freed as its backward starts (or at once when nothing will backward).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from oomguard.devices.cuda import CUDADevice
from oomguard.devices.mps import MPSDevice

KIB, MIB, GIB = 1024, 1024**2, 1024**3


def format_size(n: float, spelling: str = "GiB") -> str:
    """torch's ``format_size``: ``256 bytes``, ``480.00 KiB``, ``9.48 GiB``; ``GB`` spelling: ``33.48 GB``."""
    if n <= KIB:
        return f"{int(n)} bytes"
    units = ("KiB", "MiB", "GiB") if spelling == "GiB" else ("KB", "MB", "GB")
    for unit, scale in zip(units, (KIB, MIB, GIB), strict=True):
        if n < scale * 1024 or unit == units[-1]:
            return f"{n / scale:.2f} {unit}"
    raise AssertionError("unreachable")


def check_fraction(fraction: float, top: int) -> None:
    """What torch's ``set_per_process_memory_fraction`` refuses, in its words (CUDA allows up to 1, MPS 2)."""
    if not isinstance(fraction, float):
        raise TypeError("Invalid type for fraction argument, must be `float`")
    if fraction < 0 or fraction > top:
        raise ValueError(f"Invalid fraction value: {fraction}. Allowed range: 0~{top}")


class Allocator:
    """A caching allocator; ``room()`` is how far reserved bytes may go, ``oom(size)`` the error past it."""

    def __init__(self, room: Callable[[], float], oom: Callable[[int], Exception],
                 granule: int = 2 * MIB) -> None:
        self.room, self.oom, self.granule = room, oom, granule
        self.allocated = self.reserved = 0
        self.peak_allocated = self.peak_reserved = 0
        self.cache: list[int] = []  # free cached blocks, by size
        self.live: dict[int, tuple[int, int]] = {}  # handle -> (block size, allocated size)
        self._next = 0
        #: Sizes of every block asked for, in order (what the engine tried).
        self.requests: list[int] = []
        self.empty_calls = 0

    def alloc(self, nbytes: int) -> int:
        size = max(512, math.ceil(nbytes / 512) * 512)
        self.requests.append(size)
        fitting = [block for block in self.cache if block >= size]
        if fitting:
            block = min(fitting)
            self.cache.remove(block)
        else:
            block = math.ceil(size / self.granule) * self.granule
            if self.reserved + block > self.room():
                self.release_cache()  # what the real allocators do before giving up
                if self.reserved + block > self.room():
                    raise self.oom(size)
            self.reserved += block
        self.allocated += size
        self._next += 1
        self.live[self._next] = (block, size)
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return self._next

    def free(self, handle: int) -> None:
        block, size = self.live.pop(handle)
        self.allocated -= size
        self.cache.append(block)

    def release_cache(self) -> None:
        self.reserved -= sum(self.cache)
        self.cache.clear()

    def empty_cache(self) -> None:
        self.empty_calls += 1
        self.release_cache()

    def reset_peak(self) -> None:
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved

    def hold(self, nbytes: int, blocks: int = 1) -> Callable[[], None]:
        """Allocate ``nbytes`` in ``blocks`` blocks; the function that frees them (an OOM frees them too)."""
        handles: list[int] = []
        try:
            for _ in range(blocks):
                handles.append(self.alloc(max(1, nbytes // blocks)))
        except Exception:
            for handle in handles:
                self.free(handle)
            raise
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                for handle in handles:
                    self.free(handle)

        return release


def activations(pool: Allocator, per_sample: int, blocks_per_sample: int = 1) -> Callable[..., torch.Tensor]:
    """A mean-squared-error loss on ``(x, y)`` whose activations take ``per_sample`` bytes a sample on
    ``pool``, freed as its backward starts."""

    def loss_fn(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        release = pool.hold(per_sample * len(x), blocks=blocks_per_sample * len(x))
        loss = ((net(x) - y) ** 2).mean()
        if loss.requires_grad:
            loss.register_hook(lambda grad: (release(), grad)[1])
        else:
            release()
        return loss

    return loss_fn


# -- CUDA ------------------------------------------------------------------------------------------


class CUDAOnCPU(CUDADevice):
    """oomguard's CUDADevice, every memory call going to the installed :class:`CudaCard`; tensors on CPU."""

    def __init__(self, index: int = 0) -> None:
        super().__init__(index)
        self.torch_device = torch.device("cpu")


class CudaCard:
    """A GPU of ``total`` bytes, ``other`` of them held by another process (``count`` such GPUs are seen,
    all modelled by this one); see the module docstring."""

    NAMES = ("is_available", "device_count", "current_device", "set_device", "get_device_properties",
             "mem_get_info", "memory_allocated", "memory_reserved", "max_memory_allocated",
             "max_memory_reserved", "reset_peak_memory_stats", "empty_cache",
             "set_per_process_memory_fraction", "synchronize", "get_rng_state", "set_rng_state")

    def __init__(self, total: int = 16 * GIB, other: int = 0, granule: int = 2 * MIB,
                 old_spelling: bool = False, count: int = 1) -> None:
        self.total, self.other, self.old_spelling, self.count = total, other, old_spelling, count
        self.fraction = 1.0
        self.fractions: list[float] = []
        self.pool = Allocator(self._room, self._oom, granule)
        self._spike = self._spike_left = 0

    def spike(self, times: int = 1) -> None:
        """Another process takes all that this one does not hold live (the allocator's cache released first,
        as it would be on the way to an OOM), and gives it back after ``times`` OOMs it causes."""
        self.pool.release_cache()
        self._spike, self._spike_left = self.free_bytes(), times
        self.other += self._spike

    def _room(self) -> float:
        return min(self.fraction * self.total, self.total - self.other)

    def free_bytes(self) -> int:
        return max(0, self.total - self.other - self.pool.reserved)

    def _oom(self, size: int) -> Exception:
        error = self._message(size)
        self._spike_left -= 1
        if self._spike and self._spike_left <= 0:
            self.other -= self._spike
            self._spike = 0
        return error

    def _message(self, size: int) -> Exception:
        pool, f = self.pool, format_size
        if self.old_spelling:  # torch 1.x
            return torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {f(size)} (GPU 0; {f(self.total)} total capacity; "
                f"{f(pool.allocated)} already allocated; {f(self.free_bytes())} free; "
                f"{f(self.fraction * self.total)} allowed; {f(pool.reserved)} reserved in total by PyTorch) "
                "If reserved memory is >> allocated memory try setting max_split_size_mb to avoid "
                "fragmentation.")
        other = f"Process 4242 has {f(self.other)} memory in use. " if self.other else ""
        return torch.OutOfMemoryError(
            f"CUDA out of memory. Tried to allocate {f(size)}. GPU 0 has a total capacity of "
            f"{f(self.total)} of which {f(self.free_bytes())} is free. {other}Including non-PyTorch memory, "
            f"this process has {f(pool.reserved)} memory in use. Of the allocated memory "
            f"{f(pool.allocated)} is allocated by PyTorch, and {f(pool.reserved - pool.allocated)} is "
            "reserved by PyTorch but unallocated. If "
            "reserved but unallocated memory is large try setting "
            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for "
            "Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)")

    # -- torch.cuda, as oomguard calls it --
    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return self.count

    def current_device(self) -> int:
        return 0

    def set_device(self, device: Any) -> None:
        pass

    def get_device_properties(self, device: Any = None) -> SimpleNamespace:
        return SimpleNamespace(total_memory=self.total, name="Double GPU")

    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        return self.free_bytes(), self.total

    def memory_allocated(self, device: Any = None) -> int:
        return self.pool.allocated

    def memory_reserved(self, device: Any = None) -> int:
        return self.pool.reserved

    def max_memory_allocated(self, device: Any = None) -> int:
        return self.pool.peak_allocated

    def max_memory_reserved(self, device: Any = None) -> int:
        return self.pool.peak_reserved

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        self.pool.reset_peak()

    def empty_cache(self) -> None:
        self.pool.empty_cache()

    def set_per_process_memory_fraction(self, fraction: float, device: Any = None) -> None:
        check_fraction(fraction, 1)
        self.fraction = fraction
        self.fractions.append(fraction)

    def synchronize(self, device: Any = None) -> None:
        pass

    def get_rng_state(self, device: Any = None) -> torch.Tensor:
        return torch.get_rng_state()

    def set_rng_state(self, state: torch.Tensor, device: Any = None) -> None:
        torch.set_rng_state(state)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> CudaCard:
        for name in self.NAMES:
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
        return self

    def device(self) -> CUDAOnCPU:
        return CUDAOnCPU(0)


# -- MPS ---------------------------------------------------------------------------------------------

#: MPS's default high watermark ratio on Apple Silicon (PYTORCH_MPS_HIGH_WATERMARK_RATIO unset).
DEFAULT_WATERMARK = 1.7


class MPSOnCPU(MPSDevice):
    """oomguard's MPSDevice, every memory call going to the installed :class:`MPSChip`; tensors on CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.torch_device = torch.device("cpu")


class MPSChip:
    """Apple Silicon's GPU side: Metal's recommended working set, the MPS allocator's heaps, and
    ``other`` bytes of driver memory outside them (MPSGraph's); none of it in the process's RSS."""

    NAMES = ("recommended_max_memory", "current_allocated_memory", "driver_allocated_memory",
             "set_per_process_memory_fraction", "empty_cache", "synchronize", "get_rng_state",
             "set_rng_state")

    def __init__(self, recommended: int = 10 * GIB, other: int = 0, spelling: str = "GiB",
                 granule: int = 2 * MIB) -> None:
        self.recommended, self.other, self.spelling = recommended, other, spelling
        self.fraction = DEFAULT_WATERMARK
        self.fractions: list[float] = []
        self.pool = Allocator(self._room, self._oom, granule)

    def max_allowed(self) -> float:
        return math.inf if self.fraction == 0 else self.fraction * self.recommended

    def _room(self) -> float:
        return self.max_allowed() - self.other  # the watermark is checked against all driver memory

    def driver(self) -> int:
        return self.pool.reserved + self.other

    def _oom(self, size: int) -> Exception:
        f = lambda n: format_size(n, self.spelling)  # noqa: E731
        return RuntimeError(
            f"MPS backend out of memory (MPS allocated: {f(self.pool.reserved)}, other allocations: "
            f"{f(self.other)}, max allowed: {f(self.max_allowed())}). Tried to allocate {f(size)} on private "
            "pool. Use PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable upper limit for memory allocations "
            "(may cause system failure).")

    # -- torch.mps, as oomguard calls it --
    def recommended_max_memory(self) -> int:
        return self.recommended

    def current_allocated_memory(self) -> int:
        return self.pool.allocated

    def driver_allocated_memory(self) -> int:
        return self.driver()

    def set_per_process_memory_fraction(self, fraction: float) -> None:
        check_fraction(fraction, 2)
        self.fraction = fraction
        self.fractions.append(fraction)

    def empty_cache(self) -> None:
        self.pool.empty_cache()

    def synchronize(self) -> None:
        pass

    def get_rng_state(self, device: Any = "mps") -> torch.Tensor:
        return torch.get_rng_state()

    def set_rng_state(self, state: torch.Tensor, device: Any = "mps") -> None:
        torch.set_rng_state(state)

    def install(self, monkeypatch: pytest.MonkeyPatch, peak_statistics: bool = False) -> MPSChip:
        """In place of torch.mps; with ``peak_statistics``, ``torch.accelerator`` keeps the allocator's
        peaks too (newer torch), else it has no MPS device (the meter then samples)."""
        for name in self.NAMES:
            monkeypatch.setattr(torch.mps, name, getattr(self, name))
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
        if peak_statistics:
            pool = self.pool
            monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a: torch.device("mps"))
            monkeypatch.setattr(torch.accelerator, "memory_reserved", lambda *a: pool.reserved)
            monkeypatch.setattr(torch.accelerator, "max_memory_reserved", lambda *a: pool.peak_reserved)
            monkeypatch.setattr(torch.accelerator, "reset_peak_memory_stats", lambda *a: pool.reset_peak())
        return self

    def device(self) -> MPSOnCPU:
        return MPSOnCPU()
