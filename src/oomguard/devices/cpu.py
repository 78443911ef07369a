"""The CPU: host memory, no allocator limit, the OS kills before any exception."""

from __future__ import annotations

import torch

from oomguard import host
from oomguard.devices.base import Device
from oomguard.devices.heap import release_host_memory, trim_host_heap

__all__ = ["CPUDevice", "release_host_memory", "trim_host_heap"]


class CPUDevice(Device):
    kind = "cpu"
    unified = True
    has_hard_limit = False
    larger_batches_faster = False

    def __init__(self) -> None:
        super().__init__(torch.device("cpu"))

    def total_memory(self) -> int:
        return host.total_memory()

    def available_memory(self) -> int:
        return host.available_memory()

    def empty_cache(self) -> None:
        release_host_memory()

    def release_cache(self) -> None:
        trim_host_heap()
