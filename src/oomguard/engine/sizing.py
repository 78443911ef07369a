"""The microbatch size of each phase and every change to it: shrink on failure, grow after quiet steps,
and at each epoch's end, the measured peak held against the prediction (the caution it leads to).

Each change is an event (``oom``, ``shrink``, ``grow``, ``peak_check``) with
the sizes and the measured bytes, so a run's memory story can be read back
from events.jsonl. The arithmetic lives in :mod:`oomguard.engine.recovery` and
:mod:`oomguard.engine.evidence`; this module keeps the state it works on and
says what happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from oomguard import events as ev
from oomguard.devices.base import Device
from oomguard.engine.evidence import Caution, Observed, peak_check
from oomguard.engine.phase import Phase
from oomguard.engine.plan import Plan
from oomguard.engine.prediction import Prediction
from oomguard.engine.recovery import MemoryModel, failure_bound, grow, shrink, target_bytes
from oomguard.engine.refusal import NoFitError, refuse
from oomguard.engine.split import largest_chunk
from oomguard.events import EventLog
from oomguard.memory.budget import Budget
from oomguard.memory.in_use import in_use
from oomguard.memory.meter import MemoryMeter
from oomguard.units import format_bytes

#: An OOM with the device's reachable memory under this share of the budget lowers the working limit.
LOWER_BELOW = 0.98


class Sizer:
    """Decides sizes for both phases from measured peaks, leaving the caution's margin of the room free
    (``1 - headroom`` until the evidence of finished epochs moves it)."""

    def __init__(self, train: Phase, evaluation: Phase, budget: Budget, device: Device, meter: MemoryMeter,
                 events: EventLog, headroom: float, grow_after: int,
                 data_held: Callable[[], int] = lambda: 0) -> None:
        self.train, self.eval = train, evaluation
        #: Bytes of data (tensors, arrays) the process holds besides the model: for a refusal's advice.
        self.data_held = data_held
        self.budget, self.device, self.meter, self.events = budget, device, meter, events
        self.grow_after = grow_after
        self.caution = Caution.start(headroom)
        #: The parts of the epoch's peak the plan predicted (phases at the planned sizes); None until then.
        self.prediction: Prediction | None = None
        self.batch = 0
        #: What the steps and evaluations of the epoch in progress measured.
        self.observed = Observed()
        #: Bytes kept free for the checkpointer's snapshot (memory shared with the host only).
        self.reserve = 0
        self.quiet = 0
        #: What the process held between steps at the last clean measurement (the plan's, or a shrink's).
        self.base = meter.current()
        #: Quiet steps before the next look at growing: ``grow_after``, or 2 right after a plan.
        self.check_at = grow_after

    @property
    def headroom(self) -> float:
        """The share of the room a step may use (``1 - margin``)."""
        return 1.0 - self.caution.margin

    def target(self, bound: int | None = None) -> float:
        """Bytes a step should peak under: ``headroom`` of the room up to the budget (or ``bound``)."""
        limit = self.budget.limit if self.budget.limit is not None else bound or 0
        return target_bytes(self.base, limit, self.headroom, self.reserve if self.device.unified else 0)

    def adopt(self, plan: Plan) -> None:
        """A plan's prediction and curves, and its margin while no finished epoch has said otherwise."""
        self.prediction, self.batch = plan.prediction, plan.batch
        for phase, curve in ((self.train, plan.curve), (self.eval, plan.eval_curve)):
            if curve is not None:
                phase.curve, phase.growth = curve, curve.growth
        if not (self.caution.confirmed or self.caution.missed):
            self.caution.margin = plan.margin

    def predict(self, train: int | None = None, evaluation: int | None = None) -> Prediction | None:
        """The epoch's peak with chunks of these sizes (by default: a batch's chunks at the sizes in force);
        None before a plan."""
        if self.prediction is None:
            return None
        parts: dict[str, int] = {}
        for phase, size, name in ((self.train, train, "activations"), (self.eval, evaluation, "evaluation")):
            size = largest_chunk(self.batch, phase.size) if size is None else size
            if size and (phase.model.per_sample or phase.model.fixed or phase.curve is not None):
                parts[name] = phase.extra(size)
        return self.prediction.with_parts(**parts)

    def observe(self, phase: Phase, size: int, peak: int | None) -> None:
        """A step or an evaluation with chunks of ``size`` peaked at ``peak``."""
        self.observed.phase("activations" if phase is self.train else "evaluation", peak, size)

    def epoch_end(self, epoch: int, measured: int) -> ev.PeakCheck | None:
        """Hold the epoch's measured peak against the prediction; the caution, and the sizes, follow.

        Returns the ``peak_check`` event (also emitted); None before a plan or without a budget's room.
        """
        observed, self.observed = self.observed, Observed()
        sizes = observed.sizes
        predicted = self.predict(sizes.get("activations"), sizes.get("evaluation"))
        if predicted is None or measured <= 0:
            return None
        if self.device.unified and not observed.snapshot:
            predicted = predicted.with_parts(snapshot=0)  # no checkpoint was in flight in this epoch
        room = (self.budget.limit - predicted.held) if self.budget.limit is not None else 0
        missed = self.caution.update(predicted.peak, measured, room)
        check = peak_check(epoch, predicted, measured, observed, self.caution.margin,
                           (self.train.size, self.eval.size or None))
        self.events.emit(check)
        if room > 0:
            self._follow_caution(missed, epoch, measured, predicted.peak)
        return check

    def _follow_caution(self, missed: bool, epoch: int, measured: int, predicted: int) -> None:
        """After the margin moved: each phase at the largest size its model says fits (up to its ceiling)."""
        start = self._start()
        target = self.target()
        for phase in (self.train, self.eval):
            if not phase.size or phase.model.per_sample <= 0:
                continue
            fits = max(1, phase.largest(start, target, phase.ceiling or phase.size, self.batch))
            chunk = largest_chunk(self.batch, fits)
            if chunk == largest_chunk(self.batch, phase.size):
                continue  # the same chunks of a batch: nothing would change
            after = start + phase.extra(chunk)
            if missed and fits < phase.size:
                self.events.emit(ev.Shrink(phase=phase.name, from_=phase.size, to=fits,
                                           reason=f"epoch {epoch} peaked at {format_bytes(measured)}, above "
                                                  f"the {format_bytes(predicted)} predicted",
                                           predicted=after))
                phase.size = fits
            elif not missed and fits > phase.size:
                confirmed = self.caution.confirmed
                self.events.emit(ev.Grow(phase=phase.name, from_=phase.size, to=fits,
                                         reason=f"{confirmed} epoch{'s' if confirmed != 1 else ''} peaked "
                                                f"within the prediction's margin",
                                         predicted=after))
                phase.size = fits

    def failed(self, phase: Phase, size: int, peak: int | None, error: str,
               last_resort: Callable[[NoFitError], bool] | None = None) -> None:
        """A microbatch of ``size`` ran out of memory: shrink (the caller redoes), or raise at size 1.

        At size 1, ``last_resort`` hears the refusal first: True when it made the step fit otherwise (the
        Guard's memory savers; the caller redoes), False to refuse; it may raise a refusal of its own.
        """
        self.device.empty_cache()
        self._lower_limit()
        self.events.emit(ev.Oom(phase=phase.name, microbatch=phase.size, peak=peak, budget=self.budget.limit,
                                error=error))
        if size <= 1:
            refusal = self._no_fit(phase, peak)
            if last_resort is not None and last_resort(refusal):
                return
            self.events.emit(refusal.event)
            raise refusal
        self._shrink(phase, size, *failure_bound(peak, self.budget.limit, error), error)

    def _no_fit(self, phase: Phase, peak: int | None) -> NoFitError:
        """Microbatch 1 failed: the refusal, with what is held between steps (measured now, after the
        cache was emptied) on memory shared with the host."""
        head = (f"{phase.words} does not fit the memory budget even at microbatch 1: the step peaked at "
                f"{format_bytes(peak)} against {self.budget.describe()}")
        before = self.meter.reading()
        if before is None:  # a discrete GPU: the host's memory is not what ran out
            refusal = refuse(phase.name, peak or 0, self.budget.limit, None, head)
            fixes = "raise memory_limit, lower imgsz (or the input size), or use a smaller model"
            return NoFitError(f"{head}; {fixes}", refusal.event)
        split = in_use(before, self.device.reserved(), self.data_held())
        own = self.base - split.workers - split.others  # this process between steps, last measured clean
        if 0 < own < split.process:  # the failed step's heap may linger in its pages still
            split = replace(split, total=split.total - split.process + own, process=own)
        return refuse(phase.name, peak or 0, self.budget.limit, split, head)

    def _lower_limit(self) -> None:
        """On a discrete GPU, an OOM under the budget means another process holds the rest of the card:
        the working limit drops at once to what this process can reach (what it holds plus what is
        free), instead of shrinking step by redone step towards it."""
        limit = self.budget.limit
        if self.device.unified or not self.device.has_hard_limit or limit is None:
            return
        reachable = self.meter.current() + self.device.available_memory()
        if reachable >= LOWER_BELOW * limit:
            return
        self.budget = Budget(reachable, f"lowered from {format_bytes(limit)}: the device had only "
                                        f"{format_bytes(reachable)} for this process after an out-of-memory "
                                        "under the budget (another process holds the rest)")
        self.device.set_hard_limit(reachable)

    def over_target(self, phase: Phase, size: int, peak: int) -> bool:
        """A step that fitted but peaked above the target: the next ones run smaller (no redo)."""
        if size <= 1 or self.budget.limit is None or peak <= self.target():
            return False
        self._shrink(phase, size, peak, True,
                     f"step peaked at {format_bytes(peak)}, above the {format_bytes(self.target())} target")
        return True

    def _start(self) -> int:
        """What the process holds between steps, the allocator's free cache handed back first.

        On CPU, glibc keeps freed heap pages in RSS; counted as held, they would
        make every size look too big.
        """
        self.device.release_cache()
        self.base = self.meter.current()
        return self.base

    def _shrink(self, phase: Phase, size: int, bound: int | None, measured: bool, reason: str) -> None:
        start = self._start()
        new, model = shrink(phase.model, size, start, bound, self.target(bound), measured)
        self.events.emit(ev.Shrink(phase=phase.name, from_=phase.size, to=new, reason=reason,
                                   predicted=model.predict(start, new)))
        phase.size, phase.model, phase.may_grow = new, model, True
        self.quiet = 0
        self.check_at = self.grow_after

    def halve(self, phase: Phase, reason: str) -> int:
        """One rung down on request (memory pressure from outside): no redo, and no growing back past it."""
        if phase.size <= 1:
            return phase.size
        start = self._start()
        new = phase.size // 2
        self.events.emit(ev.Shrink(phase=phase.name, from_=phase.size, to=new, reason=reason,
                                   predicted=phase.model.predict(start, new)))
        phase.size, phase.may_grow, phase.safe = new, True, min(phase.safe, new)
        self.quiet, self.check_at = 0, self.grow_after
        return new

    def calibrate(self, phase: Phase) -> None:
        """A plan was just adopted: check it against the peaks of the first real steps soon."""
        phase.may_grow = True
        self.quiet, self.check_at = 0, min(2, self.grow_after)

    def fitted(self, phase: Phase, size: int, peak: int) -> None:
        """One more quiet step; after ``grow_after`` of them a shrunk phase may grow back.

        On a GPU it grows to what the measured slope says fits, up to the
        ceiling: a wrong guess costs one redone step. On host memory a wrong
        guess is real memory taken, and the allocator's heap makes memory grow
        faster than linearly with the microbatch, so it grows back only up to
        the largest size that has already run quietly.
        """
        self.quiet += 1
        if self.quiet < self.check_at:
            return
        calibrating = self.check_at < self.grow_after
        self.quiet, self.check_at = 0, self.grow_after
        phase.safe = max(phase.safe, phase.size)
        top = min(phase.ceiling or 0, phase.safe) if self.device.unified else phase.ceiling or 0
        if not phase.may_grow or phase.size >= top:
            return
        start = self._start()
        new, model = grow(phase.model, size, start, peak, self.target(), top)
        if new <= phase.size:
            return
        reason = "the first steps peaked under the plan" if calibrating else (
            f"{self.grow_after} steps without running out of memory")
        self.events.emit(ev.Grow(phase=phase.name, from_=phase.size, to=new, reason=reason,
                                 predicted=model.predict(start, new)))
        phase.size, phase.model = new, model
        if not calibrating:
            self.grow_after *= 2  # a grow that fails again costs a redone step: try less and less often
            self.check_at = self.grow_after

    def make_room(self, n: int) -> None:
        """Keep ``n`` bytes free for a snapshot (the largest asked counts); what no longer fits shrinks.

        Each call is a snapshot taken: the epoch in progress has one in flight (its ``peak_check``
        counts it; an epoch without one, like a fresh run's first, does not).
        """
        self.observed.snapshot = max(self.observed.snapshot, int(n))
        if n <= self.reserve:
            return  # the room is kept already
        self.reserve = int(n)
        if not self.device.unified or self.budget.limit is None:
            return
        # What was held between steps before the snapshot: a reading now would count the copy just taken
        # (it is being written) besides the room kept for it.
        start = self.base
        for phase in (self.train, self.eval):
            if not phase.size or phase.model.per_sample <= 0:
                continue
            fits = max(1, phase.largest(start, self.target(), phase.size, self.batch))
            if fits < phase.size:
                self.events.emit(ev.Shrink(phase=phase.name, from_=phase.size, to=fits,
                                           reason=f"room for a {format_bytes(n)} checkpoint snapshot",
                                           predicted=phase.model.predict(start, fits)))
                phase.size = fits

    def state_dict(self) -> dict[str, int | float]:
        state: dict[str, int | float] = {"grow_after": self.grow_after, "reserve": self.reserve,
                                         "batch": self.batch, **self.caution.state_dict()}
        if self.prediction is not None:
            state.update({f"predicted_{name}": value for name, value in self.prediction.parts.items()})
        for phase in (self.train, self.eval):
            prefix = "" if phase.name == "train" else "eval_"
            state[f"{prefix}microbatch"] = phase.size
            state[f"{prefix}ceiling"] = phase.ceiling or 0
            state[f"{prefix}fixed"] = float(phase.model.fixed)
            state[f"{prefix}per_sample"] = float(phase.model.per_sample)
            state[f"{prefix}measured"] = float(phase.model.measured)
            state[f"{prefix}may_grow"] = int(phase.may_grow)
            state[f"{prefix}safe"] = phase.safe
            state[f"{prefix}growth"] = phase.growth
        return state

    def load_state_dict(self, state: dict[str, int | float]) -> None:
        self.grow_after = int(state.get("grow_after", self.grow_after))
        self.reserve = max(self.reserve, int(state.get("reserve", 0)))
        self.caution.load_state_dict(state)
        self.batch = int(state.get("batch", self.batch))
        parts = {key.removeprefix("predicted_"): int(value) for key, value in state.items()
                 if key.startswith("predicted_")}
        if parts:
            self.prediction = Prediction(parts)
        for phase in (self.train, self.eval):
            prefix = "" if phase.name == "train" else "eval_"
            size = int(state.get(f"{prefix}microbatch", 0))
            if size and phase.auto:
                phase.size = size
                phase.ceiling = int(state.get(f"{prefix}ceiling", 0)) or phase.ceiling
            elif size and phase.size:
                phase.size = min(phase.size, size)  # a run that had to shrink resumes at the smaller size
            phase.model = MemoryModel(float(state.get(f"{prefix}fixed", phase.model.fixed)),
                                      float(state.get(f"{prefix}per_sample", phase.model.per_sample)),
                                      float(state.get(f"{prefix}measured", phase.model.measured)))
            phase.may_grow = bool(state.get(f"{prefix}may_grow", phase.may_grow))
            phase.safe = int(state.get(f"{prefix}safe", phase.safe))
            phase.growth = float(state.get(f"{prefix}growth", phase.growth))
