"""The engine's view of memory: what a step used at its peak, in budget bytes.

Every number here is :meth:`Device.used` of a reading: the process tree's
host memory where the device counts it (CPU and unified memory), each page
counted once (:func:`oomguard.host.tree_memory`: loader workers add their own
pages, not the ones they share with this process; this process's own peak is
its kernel high-water mark where Linux offers one, else the sampler's
maximum), and the device allocator's allocated and reserved bytes (their peak
statistics where the backend keeps them, else the sampler's maximum). The
meter never decides what counts; the device does.
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

    def host_now(self, fresh: bool = True) -> int:
        """The process tree's host memory now, where the device counts it (0 on a discrete GPU).

        ``fresh``: new child processes looked for and measured first (milliseconds), else the
        calibrated cheap reading (microseconds: what a check at every step uses)."""
        return host.tree_memory(fresh=fresh).total if self.device.unified else 0

    def current(self, fresh: bool = True) -> int:
        """Budget bytes in use now."""
        device = self.device
        return device.used(self.host_now(fresh), device.allocated(), device.reserved())

    def peak(self) -> int:
        """Budget bytes at the peak since :meth:`mark`."""
        device = self.device
        host_peak = 0
        if device.unified:
            tree = host.tree_memory()  # cheap: statm of each known process, calibrated
            high = host.own_peak_rss() if self._exact_host_peak else None
            if high is not None:  # what it grew by since is its own: pages shared now were shared then
                own = tree.own + max(0, high - tree.root.rss)
            else:
                own = tree.own
                if self.sampler is not None:
                    own = max(own, self.sampler.max_since_mark()[0] - tree.children)
            host_peak = own + tree.children
        reserved = device.peak_reserved()
        if reserved is None:  # no peak statistic on this backend: the highest sample since the mark
            sampled = self.sampler.max_since_mark()[1] if self.sampler is not None else 0
            reserved = max(device.reserved(), sampled)
        return device.used(host_peak, device.peak_allocated(), reserved)

    def reading(self) -> host.TreeMemory | None:
        """The process tree measured precisely now (a refusal's explanation); None on a discrete GPU,
        whose budget the host's memory does not count against."""
        return host.tree_memory(precise=True) if self.device.unified else None
