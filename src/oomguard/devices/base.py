"""The interface every backend implements, and OOM recognition shared by all.

A Device answers three questions for the memory engine: how much memory is
there, how much does this process use now and at its peak since a mark, and is
this exception an out-of-memory. Backends with a hard allocator limit (CUDA,
MPS) raise at the budget by themselves; on CPU the budget is enforced by the
engine from measured process memory.
"""

from __future__ import annotations

import gc
from abc import ABC, abstractmethod

import torch

from oomguard.oom_text import OOM_MESSAGES


class OverBudget(RuntimeError):
    """Raised by oomguard itself when measured memory crossed the budget during a step."""

    def __init__(self, peak: int, budget: int) -> None:
        super().__init__(
            f"oomguard: step peak {peak} bytes over the budget of {budget} bytes (out of memory)"
        )
        self.peak = peak
        self.budget = budget


def is_oom(exc: BaseException) -> bool:
    """True when ``exc`` means the step ran out of memory, on any backend."""
    if isinstance(exc, OverBudget | MemoryError | torch.OutOfMemoryError):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    message = str(exc).lower()
    return any(text in message for text in OOM_MESSAGES)


class Device(ABC):
    """One backend: its torch device, its memory and its allocator."""

    kind: str = "abstract"
    #: Memory shared with the host (CPU, Apple unified memory): the OS kills
    #: before any exception, so the process's own memory counts too.
    unified: bool = False
    #: The allocator raises an OOM exception at a limit we can set.
    has_hard_limit: bool = False
    #: torch.distributed's backend for collectives on this device's tensors.
    collective_backend: str = "gloo"

    def __init__(self, torch_device: torch.device) -> None:
        self.torch_device = torch_device

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.torch_device})"

    def used(self, host: int, allocated: int, reserved: int) -> int:
        """Memory in use as the budget counts it, from a reading of the process tree's host memory
        (``host``) and the device allocator's ``allocated`` and ``reserved`` bytes.

        The one definition of "memory used" on this device: the meter, the sampler's
        timeline, the epoch peaks and the report all count it this way.
        """
        return host + reserved if self.unified else reserved

    def bind(self) -> None:
        """Make this device the process's current one (a rank of a group on a multi-GPU machine)."""

    @abstractmethod
    def total_memory(self) -> int:
        """Bytes this backend can ever give the process."""

    @abstractmethod
    def available_memory(self) -> int:
        """Bytes free for this process right now."""

    def allocated(self) -> int:
        """Bytes held by live tensors on the device (0 where the device is the host)."""
        return 0

    def reserved(self) -> int:
        """Bytes held by the device allocator, cached blocks included."""
        return 0

    def peak_allocated(self) -> int:
        """Device bytes at the peak since :meth:`reset_peak` (0 where the device is the host)."""
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

    def set_hard_limit(self, limit_bytes: int) -> bool:
        """Make the allocator raise OOM past ``limit_bytes``; False if the backend cannot."""
        return False

    def synchronize(self) -> None:
        """Wait for queued device work, so that measurements are complete."""

    def rng_state(self) -> torch.Tensor | None:
        """The device generator's state, for checkpoints (None where there is none)."""
        return None

    def set_rng_state(self, state: torch.Tensor) -> None:
        """Restore a state from :meth:`rng_state`."""
