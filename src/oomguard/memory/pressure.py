"""Memory pressure from other programs: act at a step boundary before the OS kills.

``min_available=auto`` is ``max(5% of total memory, 300 MB)``: Linux starts
reclaiming hard (and its OOM killer soon after) when available memory nears
the kernel's watermarks, which are well under 5% on any machine with more than
a few GB, and macOS starts compressing and swapping near the same share. 300 MB
keeps small machines and containers from reacting only when it is too late.

The monitor is a small state machine over successive checks (one per step):
the first check under the threshold asks for an emergency action (checkpoint,
release caches, one microbatch rung down); while pressure persists, every
``patience`` checks it asks again, and after ``give_up`` consecutive checks
it asks to exit so that the supervisor can wait for memory and resume.
Swap that grows by more than the threshold once available memory is low
(under twice the threshold) counts as pressure too: the OS is paging the run out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from oomguard import host
from oomguard.errors import ConfigError
from oomguard.units import format_bytes, parse_size

MB = 1024**2
AUTO_SHARE = 0.05
AUTO_FLOOR = 300 * MB


def resolve_min_available(value: str | int, total: int) -> int:
    """Bytes of available memory under which the run reacts: ``auto`` (max(5% of total, 300 MB)) or a size."""
    if value == "auto":
        return max(AUTO_FLOOR, int(AUTO_SHARE * total))
    try:
        return parse_size(value)
    except ValueError:
        raise ConfigError(f"min_available={value!r}: expected auto or a size like 1GB") from None


class Action(enum.Enum):
    OK = "ok"  # enough memory
    WAIT = "wait"  # still low, already acted: give the last action a few steps
    ACT = "act"  # checkpoint, release caches, shrink
    EXIT = "exit"  # pressure persisted: checkpoint and exit EXIT_PRESSURE


@dataclass
class PressureMonitor:
    """Counts consecutive low checks and says what to do; see the module docstring."""

    min_available: int
    patience: int = 3
    give_up: int = 12
    low: int = 0
    _swap_at_start: int | None = None

    def pressed(self, available: int, swap_used: int | None = None) -> bool:
        if available < self.min_available:
            return True
        if swap_used is None:
            return False
        if self._swap_at_start is None or available >= 2 * self.min_available:
            self._swap_at_start = swap_used  # a baseline taken while memory was plentiful
            return False
        return swap_used - self._swap_at_start > self.min_available

    def check(self, available: int, swap_used: int | None = None) -> Action:
        if not self.pressed(available, swap_used):
            self.low = 0
            return Action.OK
        self.low += 1
        if self.low >= self.give_up:
            return Action.EXIT
        return Action.ACT if (self.low - 1) % self.patience == 0 else Action.WAIT

    def need(self, peak: int, total: int) -> int:
        """Available memory to wait for before resuming: the run's peak plus the threshold (at most 90%)."""
        return min(int(0.9 * total), peak + self.min_available)


@dataclass(frozen=True)
class PressureDecision:
    """What to do about low memory now: ``act`` (checkpoint, release, shrink) or ``exit`` (checkpoint, 75)."""

    action: str
    available: int
    min_available: int
    need: int  # available memory to wait for before resuming

    @property
    def exits(self) -> bool:
        return self.action == "exit"

    def words(self) -> str:
        return (f"memory pressure: {format_bytes(self.available)} available, under min_available "
                f"{format_bytes(self.min_available)}")


class PressureWatch:
    """The one pressure decision of every loop (the built-in one, the Guard's, ultralytics' callback).

    ``check`` once per step with the sampler's latest available memory: None
    while there is enough (or the last action still gets time), else the
    decision. It exits when the monitor gives up, or when pressure persists
    and there is no smaller microbatch left to go to (``can_shrink``).
    """

    def __init__(self, min_available: str | int, total: int | None = None) -> None:
        self.total = host.total_memory() if total is None else total
        self.min_available = resolve_min_available(min_available, self.total)
        self.monitor = PressureMonitor(self.min_available)

    def check(self, available: int | None, peak: int, can_shrink: bool) -> PressureDecision | None:
        if available is None:
            available = host.available_memory()
        swap = host.swap_used() if available < 2 * self.min_available else None  # only matters when low
        action = self.monitor.check(available, swap)
        if action in (Action.OK, Action.WAIT):
            return None
        persisting = self.monitor.low > 1 and not can_shrink
        need = self.monitor.need(max(peak, host.tree_memory().total), self.total)
        kind = "exit" if action is Action.EXIT or persisting else "act"
        return PressureDecision(kind, available, self.min_available, need)
