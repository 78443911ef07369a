"""The engine's view of memory: what a step used at its peak, in budget bytes.

Every number here is :meth:`Device.used` of a reading: the process tree's
host memory (where the device counts it: CPU and unified memory; its kernel
high-water mark where Linux offers one, else the sampler's maximum) and the
device allocator's allocated and reserved bytes (their peak statistics where
the backend keeps them, else the sampler's maximum). The meter never decides
what counts; the device does.
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

    def _children(self) -> int:
        return self.sampler.children_rss if self.sampler is not None else 0

    def host_now(self) -> int:
        """The process tree's host memory now, where the device counts it (0 on a discrete GPU)."""
        return host.process_rss() + self._children() if self.device.unified else 0

    def current(self) -> int:
        """Budget bytes in use now."""
        device = self.device
        return device.used(self.host_now(), device.allocated(), device.reserved())

    def peak(self) -> int:
        """Budget bytes at the peak since :meth:`mark`."""
        device = self.device
        host_peak = 0
        if device.unified:
            children = self._children()
            own = host.own_peak_rss() if self._exact_host_peak else None
            if own is None:
                own = host.process_rss()
                if self.sampler is not None:
                    own = max(own, self.sampler.max_since_mark()[0] - children)
            host_peak = own + children
        reserved = device.peak_reserved()
        if reserved is None:  # no peak statistic on this backend: the highest sample since the mark
            sampled = self.sampler.max_since_mark()[1] if self.sampler is not None else 0
            reserved = max(device.reserved(), sampled)
        return device.used(host_peak, device.peak_allocated(), reserved)
