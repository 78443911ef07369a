"""The plan: train and eval microbatch sizes chosen from measured peaks, and the line fitted through them.

The fit is least squares for the slope, then the intercept is raised until the
line lies on or above every measured point: the plan may waste a little room,
but never predicts less than was measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from oomguard import events as ev
from oomguard.engine.prediction import Prediction
from oomguard.engine.recovery import MemoryModel
from oomguard.engine.split import largest_chunk


@dataclass(frozen=True)
class Fit:
    """``peak = a + b * size`` in bytes; ``a`` includes what the process holds between steps."""

    a: float
    b: float

    def predict(self, size: int) -> int:
        return int(self.a + self.b * size)


@dataclass(frozen=True)
class Row:
    """One probed size: its peak and how much of that the step added to its start."""

    size: int
    peak: int
    extra: int
    #: False when the size failed (allocator OOM or over the budget): ``peak`` is then only a lower bound.
    ok: bool = True
    #: A whole step's chunks of this size (the plan's confirmation), rather than two microbatches.
    whole: bool = False
    #: Seconds one microbatch of this size took, warm (the second of the two; a whole step's: its mean
    #: chunk); the memory savers' choice compares samples per second.
    seconds: float = 0.0


def fit_line(points: list[tuple[int, int]]) -> tuple[float, float]:
    """``(intercept, slope)`` of a line over ``(size, bytes)`` points that no point lies above."""
    if not points:
        return 0.0, 0.0
    if len(points) == 1:
        size, value = points[0]
        return 0.0, value / size  # one point: assume it is all per-sample (an upper bound for larger sizes)
    n = len(points)
    mean_x = sum(p[0] for p in points) / n
    mean_y = sum(p[1] for p in points) / n
    var = sum((p[0] - mean_x) ** 2 for p in points)
    slope = sum((p[0] - mean_x) * (p[1] - mean_y) for p in points) / var if var else 0.0
    slope = max(slope, 0.0)
    intercept = max(p[1] - slope * p[0] for p in points)
    return max(intercept, 0.0), slope


def model_from_rows(rows: list[Row], fixed_extra: float = 0.0) -> MemoryModel:
    """The memory model of a phase from its probed rows (``extra`` over each step's start)."""
    intercept, slope = fit_line([(row.size, row.extra) for row in rows if row.ok])
    return MemoryModel(fixed=intercept + fixed_extra, per_sample=slope, measured=slope)


@dataclass(frozen=True)
class Curve:
    """A phase's extra memory against its size, from the probe's rows.

    Two microbatches of each size give the fitted line (on or above every
    point). A whole step at a size, all its chunks, shows what two microbatches
    do not: the heap that the rest of the step grows. Such a step is the curve
    at its size, and scales the line at every other size by as much
    (:attr:`growth`).
    """

    model: MemoryModel
    #: ``(size, extra)`` of the whole steps that fitted, smallest first.
    steps: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_rows(cls, rows: list[Row]) -> Curve:
        steps = {row.size: row.extra for row in rows if row.whole and row.ok}
        return cls(model_from_rows([row for row in rows if not row.whole]), tuple(sorted(steps.items())))

    def probed(self, size: int) -> float:
        """Bytes two microbatches of ``size`` add to what is held, as the line says."""
        return self.model.fixed + self.model.per_sample * size

    @property
    def growth(self) -> float:
        """How much more than two microbatches a whole step took (1 without a whole step)."""
        ratios = [extra / probed for size, extra in self.steps if (probed := self.probed(size)) > 0]
        return max([1.0, *ratios])

    def extra(self, size: int) -> int:
        """Bytes a step of chunks of ``size`` adds to what is held."""
        measured = dict(self.steps).get(size)
        return measured if measured is not None else round(self.probed(size) * self.growth)

    def largest(self, start: int, target: float, ceiling: int, total: int) -> int:
        """The largest microbatch in ``[0, ceiling]`` whose chunks of a batch of ``total`` are predicted
        to peak at or under ``target`` bytes."""
        best = self.model.largest(start, target, ceiling)
        while best > 0 and start + self.extra(largest_chunk(total, best)) > target:
            best -= 1
        return best


def choose(curve: Curve | MemoryModel, start: int, target: float | None, ceiling: int, rows: list[Row],
           total: int = 0) -> int:
    """The largest size up to ``ceiling`` predicted to fit ``target``, and below any probed size that did not;
    a batch of ``total`` samples runs in chunks of that size or less (0: exactly that size).

    Returns 0 when even one sample is predicted not to fit.
    """
    if target is None:
        return ceiling
    curve = curve if isinstance(curve, Curve) else Curve(curve)
    best = curve.largest(start, target, ceiling, total)
    for row in rows:
        if not row.ok or start + row.extra > target:
            best = min(best, row.size - 1)
    return best


@dataclass
class Plan:
    """What the probe measured and what it chose; ``event()`` is the ``plan`` event's details."""

    microbatch: int
    eval_microbatch: int | None
    ceiling: int
    eval_ceiling: int | None
    budget: int | None
    target: float | None
    fit: Fit
    eval_fit: Fit | None
    table: list[Row] = field(default_factory=list)
    eval_table: list[Row] = field(default_factory=list)
    optimizer_peak: int = 0
    snapshot_bytes: int = 0
    #: Bytes the process holds between steps as the plan expects them (``fit.a`` less the step's fixed part).
    start: int = 0
    seconds: float = 0.0
    #: Seconds an optimizer step took in the probe, its state made (with offload: the copies included).
    update_seconds: float = 0.0
    #: The epoch's peak predicted for the sizes chosen, part by part.
    prediction: Prediction = field(default_factory=Prediction)
    #: Share of the room (budget less what is held) that the choice left free.
    margin: float = 0.0
    #: Samples of the batch probed: the microbatches of a step are its chunks at the planned size.
    batch: int = 0
    #: Each phase's extra memory against its size, as probed (None: not probed).
    curve: Curve | None = None
    eval_curve: Curve | None = None
    #: The memory savers in force with this plan, and each combination the probe measured.
    savers: list[str] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)

    def event(self, microbatch: int | None = None, eval_microbatch: int | None = None,
              prediction: Prediction | None = None) -> ev.Plan:
        """The ``plan`` event; ``microbatch``/``eval_microbatch``/``prediction``: those in force, when they
        differ from what this plan chose (a phase planned earlier keeps its size)."""
        prediction = prediction or self.prediction
        return ev.Plan(
            microbatch=self.microbatch if microbatch is None else microbatch,
            eval_microbatch=self.eval_microbatch if eval_microbatch is None else eval_microbatch,
            ceiling=self.ceiling,
            budget=self.budget,
            fit={"a": round(self.fit.a), "b": round(self.fit.b)},
            table=[_row(row) for row in self.table],
            eval_fit=None if self.eval_fit is None else {
                "a": round(self.eval_fit.a), "b": round(self.eval_fit.b)},
            eval_table=[_row(row) for row in self.eval_table],
            optimizer_peak=self.optimizer_peak,
            snapshot_bytes=self.snapshot_bytes,
            start=self.start,
            seconds=round(self.seconds, 3),
            predicted_peak=prediction.peak,
            components=prediction.components(),
            margin=round(self.margin, 4),
            savers=list(self.savers),
            trials=list(self.trials) or None,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def train_model(self) -> MemoryModel:
        """The training memory model the Guard starts from (relative to :attr:`start`)."""
        return MemoryModel(fixed=self.fit.a - self.start, per_sample=self.fit.b, measured=self.fit.b)

    def eval_model(self) -> MemoryModel | None:
        if self.eval_fit is None:
            return None
        return MemoryModel(fixed=self.eval_fit.a - self.start, per_sample=self.eval_fit.b,
                           measured=self.eval_fit.b)


def _row(row: Row) -> dict[str, Any]:
    """A probed row as the ``plan`` event writes it (``whole``: only for a whole step)."""
    return {"size": row.size, "peak": row.peak, "ok": row.ok, **({"whole": True} if row.whole else {})}
