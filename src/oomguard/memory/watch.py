"""Watching memory between steps, for every training loop: pressure, leaks and allocator fragmentation.

One implementation for the built-in loop, a hand-written loop through the
Guard and the trainers' callbacks (the Guard owns one :class:`MemoryWatch`):

- Pressure (:mod:`oomguard.memory.pressure`): under ``min_available``, the
  loop writes a ``pressure`` event, an emergency checkpoint, releases the
  caches and takes the microbatch one rung down; if it persists where there is
  no smaller microbatch, it checkpoints and exits with status 75.
- Leaks (:mod:`oomguard.memory.leak`): a sustained climb of the lower envelope
  of memory in use is a ``leak`` event with a tensor census diagnosis, and one
  console warning.
- Fragmentation: cache (reserved - allocated) that climbs while live memory
  does not is a ``fragmentation`` event; the cache is then released every N
  steps, N halving while it persists.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable

from oomguard import events as ev
from oomguard.events import EventLog
from oomguard.memory.leak import MB, Leak, LeakDetector
from oomguard.memory.pressure import PressureDecision, PressureWatch
from oomguard.memory.tensors import Kind, census, diagnose

#: Steps between the first census (leak suspected) and the second (leak reported) at the least.
CENSUS_GAP = 10
FIRST_RELEASE_EVERY = 64


def _ignore(text: str) -> None: ...


class LeakWatch:
    """Leak detection plus diagnosis over one memory series: feed ``observe(step, bytes)`` every step."""

    def __init__(self, events: EventLog, budget: int | None = None, console: Callable[[str], None] = _ignore,
                 warmup: int = 50, take_census: Callable[[], Counter[Kind]] = census) -> None:
        self.events, self.console, self.take_census = events, console, take_census
        self.detector = LeakDetector(budget, warmup=warmup)
        self.baseline: tuple[int, Counter[Kind]] | None = None
        self.reported: list[Leak] = []
        self._first: tuple[int, float] | None = None  # (step, monotonic time) of the first observation

    def steps_per_hour(self, step: int) -> float | None:
        """The pace of steps since the first observation (None before there is one to measure)."""
        if self._first is None or step <= self._first[0]:
            return None
        elapsed = time.monotonic() - self._first[1]
        return (step - self._first[0]) * 3600.0 / elapsed if elapsed > 0 else None

    def observe(self, step: int, used: int) -> Leak | None:
        """Add this step's memory; a newly reported leak, or None."""
        if self._first is None:
            self._first = (step, time.monotonic())
        self.detector.add(step, used)
        if self.baseline is None and self.detector.suspect():
            self.baseline = (step, self.take_census())
        leak = self.detector.leak(step, used)
        if leak is None or self.baseline is None or step - self.baseline[0] < CENSUS_GAP:
            return None
        since, before = self.baseline
        after = self.take_census()
        diagnosis = diagnose(before, after, step - since)
        self.baseline = (step, after)
        self.detector.accept(leak)
        self.reported.append(leak)
        pace = self.steps_per_hour(step)
        per_hour = int(leak.mb_per_step * MB * pace) if pace is not None else None
        self.events.emit(ev.Leak(step=step, mb_per_step=round(leak.mb_per_step, 3),
                                 budget_step=leak.budget_step, growth=int(leak.growth), diagnosis=diagnosis,
                                 bytes_per_hour=per_hour))
        where = f"; the budget is reached near step {leak.budget_step}" if leak.budget_step else ""
        self.console(f"warning: memory grows {leak.mb_per_step:.2f} MB per step{where}: {diagnosis}")
        return leak


class FragmentationWatch:
    """Cache that climbs while live memory does not: release it on a cadence that tightens."""

    def __init__(self, events: EventLog, budget: int | None, console: Callable[[str], None] = _ignore,
                 warmup: int = 50) -> None:
        self.events, self.console = events, console
        self.cache = LeakDetector(budget, warmup=warmup)
        self.live = LeakDetector(budget, warmup=warmup)
        self.release_every: int | None = None

    def observe(self, step: int, allocated: int, reserved: int) -> bool:
        """Add this step's numbers; True when the cache should be released now."""
        self.cache.add(step, reserved - allocated)
        self.live.add(step, allocated)
        found = self.cache.leak(step, reserved - allocated)
        if found is not None and not self.live.suspect():
            self.release_every = (FIRST_RELEASE_EVERY if self.release_every is None
                                  else max(1, self.release_every // 2))
            self.events.emit(ev.Fragmentation(step=step, mb_per_step=round(found.mb_per_step, 3),
                                              cache=reserved - allocated, release_every=self.release_every))
            self.console(f"warning: the allocator's cache grows {found.mb_per_step:.2f} MB per step while "
                         f"live memory does not; releasing it every {self.release_every} steps")
            self.cache.reset()
            self.live.reset()
        return self.release_every is not None and step % self.release_every == 0


def to_stderr(text: str) -> None:
    print(f"oomguard: {text}", file=sys.stderr, flush=True)


class MemoryWatch:
    """The three watches together, fed once per step by whoever runs the steps."""

    def __init__(self, events: EventLog, budget: int | None, min_available: str | int = "auto",
                 console: Callable[[str], None] = to_stderr, warmup: int = 50) -> None:
        self.pressure = PressureWatch(min_available)
        self.leaks = LeakWatch(events, budget, console, warmup=warmup)
        self.fragmentation = FragmentationWatch(events, budget, console, warmup=warmup)

    def check_pressure(self, available: int | None, peak: int, can_shrink: bool) -> PressureDecision | None:
        """What to do about the machine's available memory now (None: nothing)."""
        return self.pressure.check(available, peak, can_shrink)

    def after_step(self, step: int, used: int, allocated: int, reserved: int) -> bool:
        """Feed one finished step's memory; True when the allocator's cache should be released now."""
        self.leaks.observe(step, used)
        return self.fragmentation.observe(step, allocated, reserved)
