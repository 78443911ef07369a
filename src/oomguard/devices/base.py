"""The interface every backend implements, and OOM recognition shared by all.

A Device answers three questions for the memory engine: how much memory is
there, how much does this process use now and at its peak since a mark, and is
this exception an out-of-memory. Backends with a hard allocator limit (CUDA,
MPS) raise at the budget by themselves; on CPU and unified memory the budget is
also enforced by the engine from measured memory.
"""

from __future__ import annotations

import gc
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from oomguard.devices.heap import trim_host_heap
from oomguard.oom_text import COLLECTIVE_TYPES, OOM_MESSAGES


class OverBudget(RuntimeError):
    """Raised by oomguard itself when measured memory crossed the budget during a step."""

    def __init__(self, peak: int, budget: int) -> None:
        super().__init__(
            f"oomguard: step peak {peak} bytes over the budget of {budget} bytes (out of memory)"
        )
        self.peak = peak
        self.budget = budget


def _collective_failure(exc: BaseException) -> bool:
    """A torch.distributed error (NCCL, gloo, the store): the communicator is gone, not the memory."""
    return any(kind.__name__ in COLLECTIVE_TYPES for kind in type(exc).__mro__)


def is_oom(exc: BaseException) -> bool:
    """True when ``exc`` means the step ran out of memory, on any backend, and redoing it smaller can work.

    A collective's failure is never one, even when NCCL's text says "out of
    memory": its communicator is broken, so a retry would hang or fail again.
    """
    if _collective_failure(exc):
        return False
    if isinstance(exc, OverBudget | MemoryError | torch.OutOfMemoryError):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    message = str(exc).lower()
    return any(text in message for text in OOM_MESSAGES)


@dataclass(frozen=True)
class MixedPrecision:
    """What ``amp=true`` trains with on a device: the autocast dtype and whether gradients need a scaler."""

    dtype: torch.dtype | None
    scaler: bool = False
    #: Said once to the user when the device cannot do the usual (e.g. bfloat16 before macOS 14).
    note: str | None = None


class Device(ABC):
    """One backend: its torch device, its memory and its allocator."""

    kind: str = "abstract"
    #: Memory shared with the host (CPU, Apple unified memory): the OS kills before any exception, so
    #: the process tree's own memory counts too.
    unified: bool = False
    #: The allocator raises an OOM exception at a limit we can set.
    has_hard_limit: bool = False
    #: torch.distributed's backend for collectives on this device's tensors.
    collective_backend: str = "gloo"
    #: Its memory is not the host's: optimizer state kept in host memory gives room back (a discrete GPU).
    host_offload: bool = False
    #: A larger microbatch runs faster per sample (an accelerator), so memory savers that let one fit may
    #: pay for their own cost; on the CPU they are only worth it where nothing fits without them.
    larger_batches_faster: bool = True

    def __init__(self, torch_device: torch.device) -> None:
        self.torch_device = torch_device

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.torch_device})"

    def used(self, host: int, allocated: int, reserved: int) -> int:
        """Memory in use as the budget counts it, from a reading of the process tree's host memory
        (``host``) and the device allocator's ``allocated`` and ``reserved`` bytes.

        The one definition of "memory used" on this device: the meter (budget checks, the probe, the
        guardian, the rehearsal), the sampler's timeline and ``results.csv`` peaks, detection's records
        and the supervisor's reading of a child's timeline all count it this way. ``reserved`` is what
        the allocator holds, cached blocks included: the quantity a hard limit enforces (CUDA's
        per-process fraction caps reserved bytes) and what the OS sees (Metal's driver memory).
        On unified memory the host's share counts too.
        """
        return host + reserved if self.unified else reserved

    def describe(self) -> str:
        """One line for people (``oomguard doctor``): the device and what limits its memory."""
        return str(self.torch_device)

    def bind(self) -> None:
        """Make this device the process's current one (a rank of a group on a multi-GPU machine)."""

    @abstractmethod
    def total_memory(self) -> int:
        """Bytes this backend can ever give the process."""

    @abstractmethod
    def available_memory(self) -> int:
        """Bytes free right now that this process could still take (not counting what it holds)."""

    def allocated(self) -> int:
        """Bytes held by live tensors on the device (0 where the device is the host)."""
        return 0

    def reserved(self) -> int:
        """Bytes held by the device allocator, cached blocks included (0 where the device is the host)."""
        return 0

    def peak_allocated(self) -> int:
        """Device bytes of live tensors at the peak since :meth:`reset_peak` (0 where none)."""
        return 0

    def peak_reserved(self) -> int | None:
        """Reserved bytes at the peak since :meth:`reset_peak`; None where the backend keeps no such
        statistic (the meter then takes the sampler's maximum)."""
        return 0

    def reset_peak(self) -> None:
        """Start a new peak measurement."""

    def empty_cache(self) -> None:
        """Give cached, unused memory back to the system."""
        gc.collect()

    def release_cache(self) -> None:
        """Give the allocator's cached, unused memory back without a garbage collection.

        Milliseconds where :meth:`empty_cache` takes a tenth of a second (a full
        ``gc.collect``): the probe calls it before each measurement.
        """

    def release_host_heap(self) -> None:
        """Hand the C heap's free pages back to the OS (glibc's ``malloc_trim``); the device untouched.

        The Guard calls it near a host-memory budget before a step it will judge
        after a plan, an evaluation or a step over its target, so that step's
        measured peak does not hold pages freed earlier. Where the C library has
        no trim (macOS) it does nothing.
        """
        trim_host_heap()

    def set_hard_limit(self, limit_bytes: int, host_bytes: int = 0) -> bool:
        """Make the allocator raise OOM past ``limit_bytes`` of :meth:`used` memory, ``host_bytes`` of
        which the host holds now; False if the backend cannot."""
        return False

    def mixed_precision(self) -> MixedPrecision:
        """What ``amp=true`` means here: bfloat16 autocast without a scaler, unless a backend says more."""
        return MixedPrecision(torch.bfloat16)

    def synchronize(self) -> None:
        """Wait for queued device work, so that measurements are complete."""

    def rng_state(self) -> torch.Tensor | None:
        """The device generator's state, for checkpoints (None where there is none)."""
        return None

    def set_rng_state(self, state: torch.Tensor) -> None:
        """Restore a state from :meth:`rng_state`."""
