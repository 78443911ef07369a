"""Which memory savers a plan takes: the fastest measured combination that fits.

Each candidate combination is probed like the run without savers (peaks
against microbatch size, the seconds a microbatch of each size took, and an optimizer step's):
with activation checkpointing, microbatch 16 may fit where 2 did without it,
and on a GPU run faster per sample despite the recompute. The plan takes the
combination with the most samples per second among those that fit (fewer
savers on a tie), not the first that fits. When none fits, the refusal names
what was tried and the smallest peak measured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from oomguard.engine.plan import Plan
from oomguard.engine.refusal import NoFitError
from oomguard.engine.savers import Combo, Savers, combo_words
from oomguard.events import EventLog
from oomguard.units import format_bytes


@dataclass(frozen=True)
class Trial:
    """One combination measured: whether it fits, microbatch 1's peak, and the plan it makes."""

    savers: Combo
    fits: bool
    peak: int | None
    microbatch: int = 0
    #: Samples per second at the largest probed size up to ``microbatch`` (None: not timed).
    rate: float | None = None
    plan: Plan | None = field(default=None, compare=False, repr=False)
    #: Microbatch 1 fits with room to spare: under the plan's target, with the growth its probe measured
    #: over a whole step's microbatches (:attr:`~oomguard.engine.plan.Curve.growth`).
    comfortable: bool = True

    def record(self) -> dict[str, Any]:
        """What the ``plan`` event's ``trials`` keep of it."""
        return {"savers": list(self.savers), "fits": self.fits, "peak": self.peak,
                "microbatch": self.microbatch, "rate": None if self.rate is None else round(self.rate, 3)}


def rate(plan: Plan) -> float | None:
    """Samples per second of a whole step as the plan would run it: the batch's microbatches at the rate
    the probe measured for the largest size that fitted (up to the plan's microbatch), and the optimizer
    step (an offloaded state's copies cost time there, not in the microbatches)."""
    rows = [row for row in plan.table if row.ok and row.size <= max(1, plan.microbatch) and row.seconds > 0]
    if not rows:
        return None
    row = max(rows, key=lambda r: r.size)
    samples = plan.batch or row.size
    return samples / (samples * row.seconds / row.size + plan.update_seconds)


def fitted(savers: Combo, plan: Plan) -> Trial:
    """A trial whose probe planned; room to spare where a step of microbatches of 1 (as its probe's whole
    step showed them grow) stays under the target."""
    first = plan.table[0].peak if plan.table else None
    comfortable = first is None or plan.target is None or (
        plan.start + (plan.curve.extra(1) if plan.curve is not None else first - plan.start) <= plan.target)
    return Trial(savers, plan.microbatch >= 1, first, plan.microbatch, rate(plan), plan, comfortable)


def refused(savers: Combo, refusal: NoFitError) -> Trial:
    return Trial(savers, False, refusal.event.needed)


def measure(candidates: list[Combo], probe_with: Callable[[Combo], Plan], ceiling: int,
            trials: list[Trial]) -> list[Trial]:
    """Probe each candidate in turn (``probe_with`` switches it on first), appending to ``trials``.

    A combination is skipped where fewer of its savers already fit the whole batch: more savers would
    only cost time.
    """
    for combo in candidates:
        if any(t.fits and t.microbatch >= ceiling and set(t.savers) <= set(combo) for t in trials):
            continue
        try:
            plan = probe_with(combo)
        except NoFitError as refusal:
            trials.append(refused(combo, refusal))
        else:
            trials.append(fitted(combo, plan))
    return trials


def fastest(trials: list[Trial]) -> Trial | None:
    """The fitting trial with the highest measured rate, among those with room to spare if any; fewer
    savers on a tie (or without timings)."""
    fitting = [t for t in trials if t.fits]
    if not fitting:
        return None
    return max(fitting, key=lambda t: (t.comfortable, t.rate or 0.0, -len(t.savers)))


def why(best: Trial, plain: Trial) -> str:
    """The ``saver`` event's reason for taking ``best`` over the run without it (``plain``)."""
    speed = f" at {best.rate:.3g} samples/s" if best.rate else ""
    if not plain.fits:
        return (f"microbatch 1 peaked at {format_bytes(plain.peak)} without it, over the budget; with "
                f"{combo_words(best.savers)} microbatch {best.microbatch} fits{speed}")
    before = f" ({plain.rate:.3g} samples/s)" if plain.rate else ""
    return (f"{combo_words(best.savers)} lets microbatch {best.microbatch} fit{speed}, faster than "
            f"microbatch {plain.microbatch} without it{before}")


def with_tried(refusal: NoFitError, trials: list[Trial]) -> NoFitError:
    """``refusal`` saying which savers were tried, each one's peak at microbatch 1, and the smallest."""
    tried = [t for t in trials if t.savers]
    if not tried:
        return refusal
    peaks = [t.peak for t in trials if t.peak is not None]
    parts = ", ".join(f"{combo_words(t.savers)} {format_bytes(t.peak)}" for t in tried)
    smallest = f"; the smallest peak was {format_bytes(min(peaks))}" if peaks else ""
    note = f"; memory savers tried, microbatch 1 peaked with {parts}{smallest}"
    first, _, rest = str(refusal).partition("\n")
    message = f"{first}{note}" + (f"\n{rest}" if rest else "")
    records = [{"savers": list(t.savers), "peak": t.peak} for t in trials]
    return NoFitError(message, replace(refusal.event, savers_tried=records))


def plan_with_savers(savers: Savers, probe: Callable[[], Plan], trials: list[Trial], ceiling: int,
                     refusal: NoFitError | None = None) -> Plan | None:
    """Measure the candidate combinations and switch the fastest that fits on (``saver`` events).

    ``trials`` holds the savers in force measured already (first); ``refusal`` is why they do not fit
    (None: they fit, and only a larger, faster microbatch is sought). Returns the chosen plan, with the
    trials recorded; None when there is no candidate to measure; raises ``refusal`` saying what was
    tried when nothing fits.
    """
    base = savers.in_force
    candidates = savers.candidates(needed=refusal is not None)
    if not candidates:
        return None

    def probe_with(combo: Combo) -> Plan:
        savers.apply(combo)
        return probe()

    try:
        measure(candidates, probe_with, ceiling, trials)
    finally:
        savers.apply(base)
    savers.measured.update((t.savers, t.peak) for t in trials)
    savers.failed.update(t.savers for t in trials if not t.fits)
    best = fastest(trials)
    if best is None or best.plan is None:
        assert refusal is not None, "the savers in force fitted"
        raise with_tried(refusal, trials)
    if best.savers != base:
        savers.switch(best.savers, why(best, trials[0]), peak=best.peak, before=trials[0].peak,
                      microbatch=best.microbatch)
    best.plan.trials = [t.record() for t in trials]
    return best.plan


class SaverSearch:
    """The Guard's use of the above: at a plan, and after a step that ran out at microbatch 1.

    A data-parallel group (``grouped``) searches nothing: its ranks would have to agree on every saver (a
    ``savers`` list does, from the shared config).
    """

    def __init__(self, savers: Savers, events: EventLog, grouped: bool = False) -> None:
        self.savers, self.events, self.grouped = savers, events, grouped

    def plan(self, probe: Callable[[], Plan], trials: list[Trial], ceiling: int,
             refusal: NoFitError | None = None) -> Plan | None:
        """:func:`plan_with_savers`; a refusal left is written to the events and raised."""
        plan = None
        if not self.grouped:
            try:
                plan = plan_with_savers(self.savers, probe, trials, ceiling, refusal)
            except NoFitError as still:
                self.events.emit(still.event)
                raise
        if plan is None and refusal is not None:
            self.events.emit(refusal.event)
            raise refusal
        return plan

    def after_step(self, probe: Callable[[], Plan], ceiling: int, refusal: NoFitError) -> Plan | None:
        """The savers in force fitted the probe, not this step: the plan with others; None where none was
        ever measured; a refusal naming those measured where none is left."""
        if self.grouped:
            return None
        in_force = self.savers.in_force
        trials = [Trial(in_force, False, refusal.event.needed)]
        self.savers.failed.add(in_force)
        if not self.savers.candidates(needed=True):
            earlier = [Trial(combo, False, peak) for combo, peak in self.savers.measured.items()
                       if combo != in_force]
            if not earlier:
                return None
            still = with_tried(refusal, trials + earlier)
            self.events.emit(still.event)
            raise still
        return self.plan(probe, trials, ceiling, refusal)
