"""How the probe's rows become a plan: the sizes that fit the target, the margin left free, the prediction.

A phase's size is the largest whose chunks of a batch the curve says fit
under the target (:func:`oomguard.engine.plan.choose`); where that size
splits the batch, :meth:`Choice.confirmed` has a whole step at it measured
first. The margin starts from ``headroom``, or wider when the probed points
scatter around their line (:class:`oomguard.engine.evidence.Caution`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from oomguard.engine.evidence import Caution
from oomguard.engine.plan import Curve, Fit, Plan, Row, choose, fit_line
from oomguard.engine.prediction import Prediction
from oomguard.engine.recovery import target_bytes
from oomguard.engine.split import chunk_spans, largest_chunk

Spans = list[tuple[int, int]]


@dataclass(frozen=True)
class Choice:
    """How a phase's size is chosen from its rows; ``start``: what is held between steps."""

    start: int
    budget: int | None
    reserve: int
    headroom: float
    ceiling: int
    total: int

    def target(self, *phases: list[Row]) -> tuple[float | None, Caution]:
        """Where a step should peak, and the caution that leaves the rest of the room free."""
        room = (self.budget - self.reserve - self.start) if self.budget is not None else 0
        scatter = max((spread(rows) for rows in phases), default=0.0)
        caution = Caution.start(self.headroom, scatter / room if room > 0 else 0.0)
        if self.budget is None:
            return None, caution
        return target_bytes(self.start, self.budget, 1.0 - caution.margin, self.reserve), caution

    def size(self, rows: list[Row], target: float | None) -> int:
        return max(1, choose(Curve.from_rows(rows), self.start, target, self.ceiling, rows, self.total))

    def confirmed(self, rows: list[Row], measure: Callable[[int, Spans], Row]) -> list[Row]:
        """``rows`` and a whole step at the chosen size, when that splits the batch (at most three
        sizes down): two microbatches do not show the heap that the rest of a step's grow, nor a size
        beyond those probed. A plan so rests on a measured step, not on a line's extrapolation."""
        rows, whole = list(rows), set()
        for _ in range(3):
            target, _caution = self.target(rows)
            if target is None or not any(row.ok for row in rows):
                break
            chunk = largest_chunk(self.total, self.size(rows, target))
            spans = chunk_spans(self.total, chunk)
            probed = any(row.size == chunk and row.ok for row in rows)
            if chunk in whole or (len(spans) <= 2 and probed):  # two microbatches of it: that is a step
                break
            whole.add(chunk)
            rows.append(measure(chunk, spans))
        return rows


def spread(rows: list[Row]) -> float:
    """Bytes by which the fitted line lies furthest above a measured point: how irregular the points are."""
    fitted = [(row.size, row.extra) for row in rows if row.ok and not row.whole]
    if len(fitted) < 2:
        return 0.0
    intercept, slope = fit_line(fitted)
    return max(intercept + slope * size - extra for size, extra in fitted)


def make_plan(train_rows: list[Row], eval_rows: list[Row], start: int, base: Prediction, budget: int | None,
          ceilings: tuple[int, int], optimizer_peak: int, headroom: float, seconds: float,
          total: int) -> Plan:
    """Choose from the rows; ``start`` is what the process will hold between steps, ``base`` the parts
    of the epoch's peak that do not depend on the sizes, ``total`` the samples of a batch."""
    reserve = base.part("snapshot")
    ceiling, eval_ceiling = ceilings
    target, caution = Choice(start, budget, reserve, headroom, ceiling, total).target(train_rows, eval_rows)
    train_curve, eval_curve = Curve.from_rows(train_rows), Curve.from_rows(eval_rows)
    train_model, eval_model = train_curve.model, eval_curve.model
    microbatch = eval_microbatch = None
    if train_rows:
        microbatch = max(1, choose(train_curve, start, target, ceiling, train_rows, total))
    if eval_rows:
        eval_microbatch = max(1, choose(eval_curve, start, target, eval_ceiling, eval_rows, total))
    train_chunk = largest_chunk(total, microbatch) if microbatch else 0  # the microbatch a step runs
    eval_chunk = largest_chunk(total, eval_microbatch) if eval_microbatch else 0
    prediction = base.with_parts(activations=train_curve.extra(train_chunk) if train_chunk else 0,
                                 evaluation=eval_curve.extra(eval_chunk) if eval_chunk else 0)
    return Plan(
        microbatch=microbatch or 0,
        eval_microbatch=eval_microbatch,
        ceiling=ceiling,
        eval_ceiling=eval_ceiling if eval_rows else None,
        budget=budget,
        target=target,
        fit=Fit(start + train_model.fixed, train_model.per_sample),
        eval_fit=Fit(start + eval_model.fixed, eval_model.per_sample) if eval_rows else None,
        table=train_rows,
        eval_table=eval_rows,
        optimizer_peak=optimizer_peak,
        snapshot_bytes=reserve,
        start=start,
        seconds=seconds,
        prediction=prediction,
        margin=caution.margin,
        batch=total,
        curve=train_curve if train_rows else None,
        eval_curve=eval_curve if eval_rows else None,
    )
