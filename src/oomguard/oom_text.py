"""What an out-of-memory failure says, whatever the backend.

Kept free of torch so that the supervisor can read a child's traceback
without importing it; ``devices.base.is_oom`` uses the same list on live
exceptions.
"""

from __future__ import annotations

from collections.abc import Iterable

# Messages that mean "the allocator could not get memory", whatever the backend.
OOM_MESSAGES = (
    "out of memory",  # CUDA "CUDA out of memory", MPS "MPS backend out of memory"
    "can't allocate memory",  # CPU "DefaultCPUAllocator: can't allocate memory"
    "cublas_status_alloc_failed",
    "cudnn_status_alloc_failed",
    "cudnn_status_not_supported. this error may appear if you passed in a non-contiguous input",
    "hip out of memory",
    "failed to allocate memory",
    # Apple Silicon failures that a smaller microbatch fixes: a tensor larger than one Metal buffer
    # ("Invalid buffer size: 19.45 GB"), and Metal's own out-of-memory on a command buffer
    # ("Insufficient Memory (00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory)").
    "invalid buffer size",
    "kiogpucommandbuffercallbackerroroutofmemory",
)

# Printed by MPSNDArray's assertions before it aborts the whole process (SIGABRT, "zsh: abort"):
# no exception reaches Python; only a child's stderr tells. A smaller microbatch fixes them.
MPS_ABORTS = (
    "total bytes of ndarray > 2**32",
    "product of dimension sizes > 2**31",
)

METAL_OUT_OF_MEMORY = "kiogpucommandbuffercallbackerroroutofmemory"

# Exception type names that are out-of-memory by themselves.
OOM_TYPES = ("MemoryError", "OutOfMemoryError", "OverBudget")

# Collective-communication failures: the communicator is broken, whatever the message says
# (NCCL's "Cuda failure 'out of memory'" included); no retry on it can succeed.
COLLECTIVE_TYPES = ("DistError", "DistBackendError", "DistNetworkError", "DistStoreError")


def mentions_oom(text: str) -> bool:
    """True when an error message or an exception line reads as an out-of-memory."""
    lowered = text.lower()
    if any(message in lowered for message in OOM_MESSAGES):
        return True
    name = text.split(":", 1)[0].strip().rsplit(".", 1)[-1]
    return name in OOM_TYPES


def memory_abort(lines: Iterable[str]) -> str | None:
    """The line of a process's output that says it died of a memory failure no exception carried.

    MPSNDArray's size assertions and Metal's "Insufficient Memory" are printed
    to stderr, then the process aborts or carries on with broken results.
    """
    for line in lines:
        lowered = line.lower()
        if any(text in lowered for text in (*MPS_ABORTS, METAL_OUT_OF_MEMORY)):
            return line.strip()
    return None
