"""What an out-of-memory failure says, whatever the backend.

Kept free of torch so that the supervisor can read a child's traceback
without importing it; ``devices.base.is_oom`` uses the same list on live
exceptions.
"""

from __future__ import annotations

# Messages that mean "the allocator could not get memory", whatever the backend.
OOM_MESSAGES = (
    "out of memory",  # CUDA "CUDA out of memory", MPS "MPS backend out of memory"
    "can't allocate memory",  # CPU "DefaultCPUAllocator: can't allocate memory"
    "cublas_status_alloc_failed",
    "cudnn_status_alloc_failed",
    "cudnn_status_not_supported. this error may appear if you passed in a non-contiguous input",
    "hip out of memory",
    "failed to allocate memory",
)

# Exception type names that are out-of-memory by themselves.
OOM_TYPES = ("MemoryError", "OutOfMemoryError", "OverBudget")


def mentions_oom(text: str) -> bool:
    """True when an error message or an exception line reads as an out-of-memory."""
    lowered = text.lower()
    if any(message in lowered for message in OOM_MESSAGES):
        return True
    name = text.split(":", 1)[0].strip().rsplit(".", 1)[-1]
    return name in OOM_TYPES
