"""Apple Silicon: unified memory, the MPS allocator's limit and its OOM."""

from __future__ import annotations

import torch

from oomguard import host
from oomguard.devices.base import Device


class MPSDevice(Device):
    kind = "mps"
    unified = True
    has_hard_limit = True

    def __init__(self) -> None:
        super().__init__(torch.device("mps"))

    def total_memory(self) -> int:
        # What Metal recommends for one process; the rest belongs to the system.
        return int(torch.mps.recommended_max_memory())

    def available_memory(self) -> int:
        return host.available_memory()

    def allocated(self) -> int:
        return int(torch.mps.current_allocated_memory())

    def reserved(self) -> int:
        return int(torch.mps.driver_allocated_memory())

    def empty_cache(self) -> None:
        super().empty_cache()
        torch.mps.empty_cache()

    def release_cache(self) -> None:
        torch.mps.empty_cache()

    def set_hard_limit(self, limit_bytes: int) -> bool:
        fraction = min(2.0, max(0.0, limit_bytes / self.total_memory()))
        torch.mps.set_per_process_memory_fraction(fraction)
        return True

    def synchronize(self) -> None:
        torch.mps.synchronize()

    def rng_state(self) -> torch.Tensor | None:
        return torch.mps.get_rng_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        torch.mps.set_rng_state(state)
