"""Memory trend per step: is the lower envelope of a memory series climbing steadily?

Caching allocators (glibc's heap, CUDA's and MPS's pools) make memory move in
a sawtooth: it rises within a step or an epoch and falls back when a cache is
trimmed. A leak is memory that never comes back, so the trend is fitted to the
*minimum* of each window of steps (the lower envelope), with the Theil–Sen
slope (the median of all pairwise slopes, robust to a few odd windows), and
it only counts when it is *sustained* (nearly every later window sits above
every earlier one: Kendall's tau) and has added up to real memory
(``min_growth``). Pure arithmetic on numbers: unit-testable without torch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from statistics import median

MB = 1024**2
#: Growth that is never flagged, whatever the slope: above allocator and page-cache noise.
MIN_GROWTH_FLOOR = 32 * MB
#: Of the budget, where there is one: on a large machine a sustained climb of a few hundred MB is a leak
#: worth saying long before it reaches a share of the budget (a loss kept with its graph, ~0.25 MB a step).
MIN_GROWTH_SHARE = 0.0015
SUSTAINED_TAU = 0.8  # Kendall's tau of the window minima: 1 = every window above all earlier ones


@dataclass(frozen=True)
class Trend:
    """A fitted trend over the envelope: bytes per step, bytes gained over the fit, how monotonic."""

    slope: float
    growth: float
    tau: float
    steps: int


@dataclass(frozen=True)
class Leak:
    """A sustained climb: MB per step and the step at which it would reach the budget (None: no budget)."""

    step: int
    mb_per_step: float
    budget_step: int | None
    growth: float


def theil_sen(xs: list[float], ys: list[float]) -> float:
    """Median of the pairwise slopes; 0 for fewer than two points."""
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs))
              if xs[j] != xs[i]]
    return median(slopes) if slopes else 0.0


def kendall_tau(ys: list[float]) -> float:
    """Share of ordered pairs that rise minus the share that fall, in [-1, 1]."""
    pairs = rises = falls = 0
    for i in range(len(ys)):
        for j in range(i + 1, len(ys)):
            pairs += 1
            rises += ys[j] > ys[i]
            falls += ys[j] < ys[i]
    return (rises - falls) / pairs if pairs else 0.0


def min_growth(budget: int | None) -> float:
    """Growth under which nothing is flagged: 32 MB, or 0.15% of the budget when that is more."""
    return max(MIN_GROWTH_FLOOR, MIN_GROWTH_SHARE * budget) if budget else MIN_GROWTH_FLOOR


class LeakDetector:
    """Feed one memory value per step with :meth:`add`; :meth:`leak` says when the climb is sustained.

    ``warmup`` steps are ignored (optimizer state, allocator pools and data
    caches fill up first). The envelope is taken at several scales: minima of
    ``windows`` steps each (10: a per-step sawtooth; 50: caches trimmed every
    few dozen steps), the last ``span`` of them fitted, from ``min_windows`` on;
    a scale whose climb is sustained counts. The fit is redone once per
    ``windows[0]`` steps, so a step costs a deque append. A leak is reported
    once; again only when its slope changes by more than ``reflag`` times.
    """

    def __init__(self, budget: int | None = None, warmup: int = 50, windows: tuple[int, ...] = (10, 50),
                 min_windows: int = 8, span: int = 30, reflag: float = 2.0) -> None:
        self.budget, self.warmup, self.windows = budget, warmup, tuple(sorted(windows))
        self.min_windows, self.span, self.reflag = min_windows, span, reflag
        self.values: deque[tuple[int, float]] = deque(maxlen=span * self.windows[-1])
        self._first_step: int | None = None
        self._trend: Trend | None = None
        self.flagged: Leak | None = None

    def add(self, step: int, used: float) -> None:
        if self._first_step is None:
            self._first_step = step
        if step - self._first_step < self.warmup:
            return
        self.values.append((step, used))
        if len(self.values) % self.windows[0] == 0 or len(self.values) == self.values.maxlen:
            self._trend = self._fit()

    def reset(self) -> None:
        """Forget the envelope (after something that moves memory on purpose, e.g. a cache release)."""
        self.values.clear()
        self._trend = None

    def trend(self) -> Trend | None:
        """The fit at the last refit: a sustained scale's, else the finest scale's; None before any."""
        return self._trend

    def _fit(self) -> Trend | None:
        fits = [fit for window in self.windows if (fit := self._fit_scale(window)) is not None]
        sustained = [fit for fit in fits if fit.slope > 0 and fit.tau >= SUSTAINED_TAU]
        chosen = sustained or fits
        return chosen[0] if chosen else None

    def _fit_scale(self, window: int) -> Trend | None:
        values = list(self.values)
        count = min(self.span, len(values) // window)
        if count < self.min_windows:
            return None
        values = values[len(values) - count * window:]  # whole windows, the newest last
        xs, ys = [], []
        for i in range(count):
            chunk = values[i * window:(i + 1) * window]
            xs.append((chunk[0][0] + chunk[-1][0]) / 2)
            ys.append(min(used for _, used in chunk))
        slope = theil_sen(xs, ys)
        return Trend(slope, slope * (xs[-1] - xs[0]), kendall_tau(ys), int(xs[-1] - xs[0]))

    def suspect(self) -> bool:
        """The climb is steady, though maybe not large yet: time for a first tensor census."""
        trend = self.trend()
        return (trend is not None and trend.slope > 0 and trend.tau >= SUSTAINED_TAU
                and trend.growth >= min_growth(self.budget) / 5)

    def leak(self, step: int, used: float) -> Leak | None:
        """A new leak to report at ``step`` (memory ``used`` now), or None (none, or already reported)."""
        trend = self.trend()
        if trend is None or trend.slope <= 0 or trend.tau < SUSTAINED_TAU:
            return None
        if trend.growth < min_growth(self.budget):
            return None
        if self.flagged is not None:
            ratio = trend.slope / (self.flagged.mb_per_step * MB)
            if 1 / self.reflag < ratio < self.reflag:
                return None
        budget_step = None
        if self.budget:
            budget_step = step + max(0, int((self.budget - used) / trend.slope))
        return Leak(step, trend.slope / MB, budget_step, trend.growth)

    def accept(self, leak: Leak) -> None:
        """``leak`` was reported: only a much different slope is reported again."""
        self.flagged = leak
