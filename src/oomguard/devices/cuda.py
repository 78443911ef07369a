"""NVIDIA GPUs: the caching allocator's statistics, its per-process limit and its OOM.

What counts is *reserved* memory: ``set_per_process_memory_fraction`` caps the
bytes the caching allocator holds (its segments, cached blocks included), so a
step fits when its reserved peak does, fragmentation and all. Memory outside
the allocator (the CUDA context, other processes on the card) is not ours to
plan, but it shrinks what is free: ``available_memory`` is the driver's free
memory (``mem_get_info``), so ``auto`` on a shared card plans for what is left.
"""

from __future__ import annotations

import torch

from oomguard.devices.base import Device, MixedPrecision
from oomguard.units import format_bytes


class CUDADevice(Device):
    kind = "cuda"
    unified = False
    has_hard_limit = True
    collective_backend = "nccl"
    host_offload = True

    def __init__(self, index: int = 0) -> None:
        super().__init__(torch.device("cuda", index))
        self.index = index

    def describe(self) -> str:
        name = torch.cuda.get_device_properties(self.index).name
        free = format_bytes(self.available_memory())
        return f"{self.torch_device} ({name}, {free} free of {format_bytes(self.total_memory())})"

    def bind(self) -> None:
        torch.cuda.set_device(self.index)

    def total_memory(self) -> int:
        return int(torch.cuda.get_device_properties(self.index).total_memory)

    def available_memory(self) -> int:
        free, _total = torch.cuda.mem_get_info(self.index)
        return int(free)

    def allocated(self) -> int:
        return int(torch.cuda.memory_allocated(self.index))

    def reserved(self) -> int:
        return int(torch.cuda.memory_reserved(self.index))

    def peak_allocated(self) -> int:
        return int(torch.cuda.max_memory_allocated(self.index))

    def peak_reserved(self) -> int | None:
        return int(torch.cuda.max_memory_reserved(self.index))

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.index)

    def empty_cache(self) -> None:
        super().empty_cache()
        torch.cuda.empty_cache()

    def release_cache(self) -> None:
        torch.cuda.empty_cache()

    def set_hard_limit(self, limit_bytes: int, host_bytes: int = 0) -> bool:
        fraction = min(1.0, max(0.0, limit_bytes / self.total_memory()))
        torch.cuda.set_per_process_memory_fraction(fraction, self.index)
        return True

    def mixed_precision(self) -> MixedPrecision:
        return MixedPrecision(torch.float16, scaler=True)

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.index)

    def rng_state(self) -> torch.Tensor | None:
        return torch.cuda.get_rng_state(self.index)

    def set_rng_state(self, state: torch.Tensor) -> None:
        torch.cuda.set_rng_state(state, self.index)
