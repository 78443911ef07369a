"""The engine's view of memory: what a step used at its peak, in budget bytes.

What counts against the budget depends on the device: on a discrete GPU, the
device allocator's peak; on CPU and unified memory, the process tree's host
memory with each page counted once (:func:`oomguard.host.tree_memory`: loader
workers add their own pages, not the ones they share with this process), plus
the device driver's memory on MPS. The peak of this process is its kernel
high-water mark where Linux offers one.
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

    def current(self, fresh: bool = True) -> int:
        """Budget bytes in use now; ``fresh``: new child processes looked for and measured first
        (milliseconds), else the calibrated cheap reading (microseconds: what a check every step uses)."""
        if not self.device.unified:
            return self.device.allocated()
        return host.tree_memory(fresh=fresh).total + self.device.reserved()

    def peak(self) -> int:
        """Budget bytes at the peak since :meth:`mark`."""
        if not self.device.unified:
            return self.device.peak_allocated()
        tree = host.tree_memory()  # cheap: statm of each known process, calibrated
        high = host.own_peak_rss() if self._exact_host_peak else None
        if high is not None:  # what it grew by since is its own: pages shared now were shared then
            own = tree.own + max(0, high - tree.root.rss)
        else:
            own = tree.own
            if self.sampler is not None:
                own = max(own, self.sampler.max_since_mark()[0] - tree.children)
        return own + tree.children + self.device.reserved()

    def reading(self) -> host.TreeMemory | None:
        """The process tree measured precisely now (a refusal's explanation); None on a discrete GPU,
        whose budget the host's memory does not count against."""
        return host.tree_memory(precise=True) if self.device.unified else None
