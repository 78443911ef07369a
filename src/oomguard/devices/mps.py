"""Apple Silicon: unified memory, the MPS allocator's limit and its OOM.

Memory used is the process tree's host memory plus Metal's driver memory
(``driver_allocated_memory``: the MPS allocator's heaps, cached ones
included, and MPSGraph's own buffers), which RSS does not show. macOS kills
("zsh: killed") on their sum, often before MPS raises, so the budget covers
both and the engine checks it itself, as on the CPU. The MPS allocator's own
limit (its high watermark, set by ``set_per_process_memory_fraction`` as a
share of Metal's recommended working set) is set to the budget less what the
host holds: an allocation past it raises "MPS backend out of memory" instead.
"""

from __future__ import annotations

import contextlib
import platform
from typing import Any

import torch

from oomguard import host
from oomguard.devices.base import Device, MixedPrecision
from oomguard.units import format_bytes

#: The smallest driver limit ever set: a fraction of 0 would mean *no* limit to MPS.
MIN_DRIVER_LIMIT = 1 << 20
#: MPS refuses fractions above this (twice the recommended working set).
MAX_FRACTION = 2.0
#: bfloat16 on MPS needs macOS 14 (Sonoma); a GradScaler on MPS needs torch 2.8.
BF16_MACOS = (14, 0)
SCALER_TORCH = "2.8"


def macos_version() -> tuple[int, ...]:
    """(major, minor) of macOS, () elsewhere."""
    release = platform.mac_ver()[0]
    return tuple(int(part) for part in release.split(".")[:2] if part.isdigit())


def _pool() -> Any:
    """``torch.accelerator`` where it keeps the MPS allocator's statistics (newer torch), else None."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is None or not hasattr(accelerator, "max_memory_reserved"):
        return None
    try:
        current = accelerator.current_accelerator()
    except Exception:  # no accelerator API worth the name in this torch
        return None
    return accelerator if current is not None and current.type == "mps" else None


class MPSDevice(Device):
    kind = "mps"
    unified = True
    has_hard_limit = True

    def __init__(self) -> None:
        super().__init__(torch.device("mps"))

    def total_memory(self) -> int:
        # Unified memory: host and GPU share the machine.
        return host.total_memory()

    def describe(self) -> str:
        return (f"mps (unified memory; Metal recommends at most {format_bytes(self.driver_limit())} "
                "for the GPU's working set)")

    def driver_limit(self) -> int:
        """What Metal recommends one process's GPU working set to stay under."""
        return int(torch.mps.recommended_max_memory())

    def available_memory(self) -> int:
        return host.available_memory()

    def allocated(self) -> int:
        return int(torch.mps.current_allocated_memory())

    def reserved(self) -> int:
        return int(torch.mps.driver_allocated_memory())

    def peak_reserved(self) -> int | None:
        """Driver memory now plus how far the allocator's pool stood above its present size at its peak.

        None where torch keeps no MPS peak statistics: the meter takes the sampler's maximum instead.
        """
        pool = _pool()
        try:
            above = int(pool.max_memory_reserved()) - int(pool.memory_reserved()) if pool else None
        except RuntimeError:  # "not supported on MPS" in a torch that has the API but not the statistics
            return None
        return None if above is None else self.reserved() + max(0, above)

    def reset_peak(self) -> None:
        pool = _pool()
        if pool is not None:
            with contextlib.suppress(RuntimeError):
                pool.reset_peak_memory_stats()

    def empty_cache(self) -> None:
        super().empty_cache()
        torch.mps.empty_cache()

    def release_cache(self) -> None:
        torch.mps.empty_cache()

    def set_hard_limit(self, limit_bytes: int, host_bytes: int = 0) -> bool:
        """MPS's high watermark at the budget less the host's share, never 0 (which means no limit)."""
        driver = max(MIN_DRIVER_LIMIT, limit_bytes - host_bytes)
        fraction = min(MAX_FRACTION, driver / self.driver_limit())
        torch.mps.set_per_process_memory_fraction(float(fraction))
        return True

    def mixed_precision(self) -> MixedPrecision:
        version = macos_version()
        if not version or version >= BF16_MACOS:
            return MixedPrecision(torch.bfloat16)
        if torch.torch_version.TorchVersion(torch.__version__) >= SCALER_TORCH:
            return MixedPrecision(torch.float16, scaler=True,
                                  note=f"amp: bfloat16 on MPS needs macOS 14 (this is {_words(version)}); "
                                       "training with float16 and a GradScaler")
        return MixedPrecision(None, note=f"amp: bfloat16 on MPS needs macOS 14 (this is {_words(version)}) "
                                         f"and a GradScaler on MPS torch {SCALER_TORCH}; training without "
                                         "mixed precision")

    def synchronize(self) -> None:
        torch.mps.synchronize()

    def rng_state(self) -> torch.Tensor | None:
        return torch.mps.get_rng_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        torch.mps.set_rng_state(state)


def _words(version: tuple[int, ...]) -> str:
    return "macOS " + ".".join(str(part) for part in version)
