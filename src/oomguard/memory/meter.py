"""The engine's view of memory: what a step used at its peak, in budget bytes.

What counts against the budget depends on the device: on a discrete GPU, the
device allocator's peak; on CPU and unified memory, the process's resident
memory (its kernel high-water mark where Linux offers one) plus its children,
plus the device driver's memory on MPS.
"""

from __future__ import annotations

from oomguard import host
from oomguard.devices.base import Device
from oomguard.memory.sampler import MemorySampler


class MemoryMeter:
    """``mark()`` before a step, ``peak()`` after it: budget bytes at the step's peak."""

    def __init__(self, device: Device, sampler: MemorySampler | None = None) -> None:
        self.device = device
        self.sampler = sampler
        self._exact_host_peak = device.unified and host.peak_is_resettable()

    def mark(self) -> None:
        self.device.reset_peak()
        if self.device.unified:
            host.reset_peak_rss()
        if self.sampler is not None:
            self.sampler.mark()

    def current(self) -> int:
        """Budget bytes in use now."""
        if not self.device.unified:
            return self.device.allocated()
        children = self.sampler.children_rss if self.sampler is not None else 0
        return host.process_rss() + children + self.device.reserved()

    def peak(self) -> int:
        """Budget bytes at the peak since :meth:`mark`."""
        if not self.device.unified:
            return self.device.peak_allocated()
        children = self.sampler.children_rss if self.sampler is not None else 0
        own = host.own_peak_rss() if self._exact_host_peak else None
        if own is None:
            own = host.process_rss()
            if self.sampler is not None:
                own = max(own, self.sampler.max_since_mark()[0] - children)
        return own + children + self.device.reserved()
