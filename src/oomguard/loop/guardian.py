"""Act before the OS does: memory pressure, leaks and allocator fragmentation, checked every step.

- Pressure (:mod:`oomguard.memory.pressure`): under ``min_available``, write a
  ``pressure`` event, an emergency checkpoint (its ``checkpoint`` event), release
  the caches and take the microbatch one rung down. If it persists at
  microbatch 1 (or for many checks), stop with exit status ``EXIT_PRESSURE``
  (75); the ``pressure`` event's ``need`` is the memory to wait for.
- Leaks (:mod:`oomguard.memory.leak`): a sustained climb of the lower envelope
  of live memory is a ``leak`` event with a tensor census diagnosis.
- Fragmentation: cache (reserved - allocated) that climbs while live memory
  does not is a ``fragmentation`` event; the cache is then released every N
  steps, N halving while it persists.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from oomguard import events as ev
from oomguard.events import EventLog
from oomguard.loop.callbacks import Callback
from oomguard.loop.checkpointing import Checkpointing
from oomguard.loop.state import State
from oomguard.loop.stopping import StopCause
from oomguard.memory.leak import MB, Leak, LeakDetector
from oomguard.memory.pressure import PressureWatch
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


class MemoryGuardian(Callback):
    """Pressure, leak and fragmentation checks at each step boundary; see the module docstring."""

    def __init__(self, state: State, checkpointing: Checkpointing,
                 console: Callable[[str], None] = _ignore) -> None:
        self.checkpointing, self.console = checkpointing, console
        self.pressure = PressureWatch(state.config.min_available)
        budget = state.guard.budget.limit
        self.leaks = LeakWatch(state.events, budget, console)
        self.fragmentation = FragmentationWatch(state.events, budget, console)

    def on_step_end(self, state: State) -> None:
        self._check_pressure(state)
        device = state.device
        # Memory used as the budget counts it (the workers' RSS and a device's cache included).
        self.leaks.observe(state.step, state.guard.meter.current())
        if self.fragmentation.observe(state.step, device.allocated(), device.reserved()):
            device.release_cache()

    def _check_pressure(self, state: State) -> None:
        latest = state.memory.latest  # the sampler's reading: no /proc read on the training thread
        guard = state.guard
        decision = self.pressure.check(latest.system_available if latest is not None else None,
                                       guard.peak_memory, can_shrink=guard.microbatch > 1)
        if decision is None:
            return
        state.events.emit(ev.Pressure(step=state.step, available=decision.available,
                                      min_available=decision.min_available, need=decision.need,
                                      microbatch=guard.microbatch,
                                      action="exit" if decision.exits else "shrink"))
        if decision.exits:
            state.request_stop(StopCause.PRESSURE, decision.words(), need=decision.need)
            return
        self.checkpointing.save_now(state)
        state.device.empty_cache()
        if guard.microbatch > 1:
            guard.shrink("memory pressure")
        self.console(f"{decision.words()}; checkpointed, caches released, microbatch {guard.microbatch}")
