"""Backends behind one interface. Nothing outside this package calls torch.cuda or torch.mps."""

from __future__ import annotations

import torch

from oomguard.devices.base import Device, MixedPrecision, OverBudget, is_oom
from oomguard.devices.cpu import CPUDevice
from oomguard.devices.heap import release_host_memory
from oomguard.errors import ConfigError

__all__ = ["Device", "MixedPrecision", "OverBudget", "device_of", "get_device", "is_oom", "rank_device",
           "release_host_memory"]

_EXPECTED = "expected auto, cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _split(name: str) -> tuple[str, int | None]:
    """``'cuda:1' -> ('cuda', 1)``, ``'mps' -> ('mps', None)``; a bad index is a ConfigError."""
    kind, sep, index = name.strip().lower().partition(":")
    if not sep:
        return kind, None
    if not index.isdigit():
        raise ConfigError(f"unknown device {name!r}; {_EXPECTED}")
    return kind, int(index)


def get_device(name: str = "auto") -> Device:
    """The Device for ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (or ``mps:0``, as a tensor says)."""
    kind, index = _split(name)
    if kind == "auto" and index is None:
        if torch.cuda.is_available():
            kind = "cuda"
        elif _mps_available():
            kind = "mps"
        else:
            kind = "cpu"
    if kind == "cpu" and index in (None, 0):
        return CPUDevice()
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name} asked, but this torch sees no CUDA GPU; use device=auto or cpu")
        from oomguard.devices.cuda import CUDADevice

        index = index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={name} asked, but only {torch.cuda.device_count()} GPU(s) are visible")
        return CUDADevice(index)
    if kind == "mps" and index in (None, 0):  # one MPS device; a tensor on it says mps:0
        if not _mps_available():
            raise ConfigError(f"device={name} asked, but MPS is not available here; use device=auto or cpu")
        from oomguard.devices.mps import MPSDevice

        return MPSDevice()
    raise ConfigError(f"unknown device {name!r}; {_EXPECTED}")


def rank_device(name: str, local_rank: int | None) -> Device:
    """``name``'s Device; for a rank of a group asking for ``cuda`` (or ``auto`` on a CUDA machine),
    the GPU ``local_rank % device_count``, so that more ranks than GPUs share them instead of failing."""
    device = get_device(name)
    if local_rank is None or device.kind != "cuda" or _split(name)[1] is not None:
        return device
    return get_device(f"cuda:{local_rank % torch.cuda.device_count()}")


def device_of(module: torch.nn.Module) -> Device:
    """The Device that holds ``module``'s parameters (the CPU for a module without any)."""
    first = next(module.parameters(), None)
    return get_device(str(first.device) if first is not None else "cpu")  # "mps:0", "cuda:1", "cpu"
