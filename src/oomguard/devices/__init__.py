"""Backends behind one interface. Nothing outside this package calls torch.cuda or torch.mps."""

from __future__ import annotations

import torch

from oomguard.devices.base import Device, OverBudget, is_oom
from oomguard.devices.cpu import CPUDevice, release_host_memory
from oomguard.errors import ConfigError

__all__ = ["Device", "OverBudget", "device_of", "get_device", "is_oom", "release_host_memory"]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def get_device(name: str = "auto") -> Device:
    """The Device for ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif _mps_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cpu":
        return CPUDevice()
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name} asked, but this torch sees no CUDA GPU; use device=auto or cpu")
        from oomguard.devices.cuda import CUDADevice

        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={name} asked, but only {torch.cuda.device_count()} GPU(s) are visible")
        return CUDADevice(index)
    if name == "mps":
        if not _mps_available():
            raise ConfigError("device=mps asked, but MPS is not available here; use device=auto or cpu")
        from oomguard.devices.mps import MPSDevice

        return MPSDevice()
    raise ConfigError(f"unknown device {name!r}; expected auto, cpu, cuda, cuda:N or mps")


def device_of(module: torch.nn.Module) -> Device:
    """The Device that holds ``module``'s parameters (the CPU for a module without any)."""
    first = next(module.parameters(), None)
    where = first.device if first is not None else torch.device("cpu")
    return get_device(where.type if where.index is None else f"{where.type}:{where.index}")
