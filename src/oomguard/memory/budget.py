"""The memory budget: what ``memory_limit`` means in bytes on this device.

The budget is in the device's own measure of memory used (:meth:`Device.used`).
``auto`` is what this process holds now plus what is free, capped at 85% of
the device. On CPU and unified memory (Apple Silicon: the host's memory plus
Metal's, the model already on the GPU included) the OS kills before any
exception, so it also leaves a reserve for the OS and other programs; the
process tree's host memory counts each page once (loader workers add only
their own pages). On a discrete GPU it is the smaller of 85% of the card and
what is free plus what this process's allocator holds, so a card shared with
another process works.
"""

from __future__ import annotations

from dataclasses import dataclass

from oomguard import host
from oomguard.devices.base import Device
from oomguard.errors import ConfigError
from oomguard.units import format_bytes

AUTO_SHARE = 0.85  # of a machine's (or a GPU's) memory
RESERVE_SHARE = 0.10  # kept free for the OS on host memory
MIN_RESERVE = 512 * 1000**2


@dataclass(frozen=True)
class Budget:
    """``limit`` bytes the run may use (None when ``memory_limit=off``) and why."""

    limit: int | None
    source: str

    @property
    def enabled(self) -> bool:
        return self.limit is not None

    def describe(self) -> str:
        return "off" if self.limit is None else f"{format_bytes(self.limit)} ({self.source})"


def used_now(device: Device) -> int:
    """Memory this process uses now on ``device`` (its process tree's host memory where that counts)."""
    return device.used(host.tree_memory(fresh=True).total if device.unified else 0, device.allocated(),
                       device.reserved())


def auto_limit(device: Device, in_use: int | None = None) -> int:
    """The ``auto`` budget for ``device``, given ``in_use`` bytes this process tree holds now."""
    total = device.total_memory()
    in_use = used_now(device) if in_use is None else in_use
    if not device.unified:
        return int(max(0, min(total * AUTO_SHARE, in_use + device.available_memory())))
    limit, _usage = host.cgroup_limit_and_usage()
    # Inside a memory cgroup the limit is the whole world: no OS to leave a fixed reserve for.
    floor = 0 if limit is not None and limit <= total else MIN_RESERVE
    reserve = max(floor, int(RESERVE_SHARE * total))
    reachable = in_use + device.available_memory() - reserve
    return int(max(0, min(total * AUTO_SHARE, reachable)))


def resolve_budget(memory_limit: str | float | int, device: Device, cap: int | None = None,
                   share: int = 1) -> Budget:
    """Turn a validated ``memory_limit`` value into bytes for ``device``.

    ``cap`` (``memory_cap``, a rehearsal of a smaller machine) makes ``auto``
    plan for a machine of that size, so a default run never reaches the cap.
    ``share`` processes (the ranks of a group on one machine) share host
    memory: ``auto`` and fractions of host memory are divided among them, while
    a size is per process.
    """
    budget = _resolve(memory_limit, device, cap)
    of_host = device.unified and (memory_limit == "auto" or isinstance(memory_limit, float))
    if share <= 1 or budget.limit is None or not of_host:
        return budget
    return Budget(budget.limit // share, f"{budget.source}, shared by {share} processes")


def _resolve(memory_limit: str | float | int, device: Device, cap: int | None) -> Budget:
    if memory_limit == "off":
        return Budget(None, "memory_limit=off")
    if memory_limit == "auto":
        limit = auto_limit(device)
        if cap is not None and device.unified and cap * AUTO_SHARE < limit:
            return Budget(int(cap * AUTO_SHARE), f"auto: {AUTO_SHARE:.0%} of memory_cap {format_bytes(cap)}")
        words = "with OS headroom" if device.unified else "or what is free"
        return Budget(limit, f"auto: {AUTO_SHARE:.0%} of {device.kind} memory {words}")
    if isinstance(memory_limit, float):
        limit = int(memory_limit * device.total_memory())
        return Budget(limit, f"{memory_limit:g} of {format_bytes(device.total_memory())}")
    limit = int(memory_limit)
    total = device.total_memory()
    if limit > total:
        raise ConfigError(
            f"memory_limit={format_bytes(limit)} is more than this {device.kind} has "
            f"({format_bytes(total)}); use memory_limit=auto or a smaller size"
        )
    return Budget(limit, "memory_limit")
