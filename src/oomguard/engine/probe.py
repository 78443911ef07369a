"""The probe: measure peak memory against microbatch size on the real model and batch, then plan.

On the run's own model and batch it takes one checkpoint snapshot (the copy it
restores from, and the size the checkpointer's snapshot will have), runs a
warm-up and an optimizer step (at learning rate 0, to create its state), then
two accumulated microbatches of each size 1, 2, 4, ... up to the ceiling, and
the same without gradients for evaluation. It stops before a size the points
so far predict over the target and at the first size that did not fit, so
probing never asks for much more than the plan could give. Weights, optimizer
state, RNGs and train/eval modes are put back afterwards: a run that probed
draws the same numbers as one that did not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from oomguard.checkpoint.rng import capture_rng, restore_rng
from oomguard.checkpoint.snapshots import snapshot, snapshot_bytes
from oomguard.devices.base import is_oom
from oomguard.engine.plan import Fit, Plan, Row, choose, fit_line, model_from_rows
from oomguard.engine.recovery import target_bytes
from oomguard.engine.refusal import NoFitError, refuse
from oomguard.engine.runner import EvalFn, LossFn, Runner
from oomguard.host import TreeMemory
from oomguard.memory.in_use import in_use
from oomguard.memory.tensors import held_bytes, tensors_in

Spans = list[tuple[int, int]]
#: On memory shared with the host the first choice assumes this much more per sample than two
#: microbatches showed: glibc's heap keeps growing over the microbatches of a step before it levels
#: off. The first real steps then calibrate the size on what they peak at (see Sizer.calibrate).
HOST_HEAP_GROWTH = 1.5


def probe_sizes(ceiling: int) -> list[int]:
    """1, 2, 4, ... below ``ceiling``, then ``ceiling`` itself."""
    sizes, size = [], 1
    while size < ceiling:
        sizes.append(size)
        size *= 2
    return [*sizes, ceiling]


def grad_bytes(model: nn.Module) -> int:
    """Bytes the gradients of ``model`` take once a backward has run."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


@dataclass
class _Saved:
    model: dict[str, Any]
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    modes: list[bool]


def _save(runner: Runner) -> _Saved:
    return _Saved(
        model=snapshot(runner.model.state_dict()),
        optimizer=snapshot(runner.optimizer.state_dict()),
        rng=capture_rng(runner.device),
        modes=[module.training for module in runner.model.modules()],
    )


def _restore(runner: Runner, saved: _Saved) -> None:
    runner.drop_gradients()
    runner.model.load_state_dict(saved.model)
    runner.optimizer.load_state_dict(saved.optimizer)
    restore_rng(saved.rng, runner.device)
    for module, training in zip(runner.model.modules(), saved.modes, strict=True):
        module.training = training


class _Sweep:
    """Peaks of single microbatches of growing size, each measured from a cleaned-up start.

    ``offset`` is added to each row's ``extra`` so that it counts from a start
    without gradients (the training sweep keeps them allocated, as they are for
    every microbatch after a step's first).
    """

    def __init__(self, runner: Runner, run: Callable[[Spans], object], budget: int | None = None,
                 headroom: float = 1.0, offset: int = 0) -> None:
        self.runner = runner
        self.run = run
        self.budget, self.headroom = budget, headroom
        self.offset = offset
        self.rows: list[Row] = []

    def one(self, size: int) -> bool:
        """Measure ``size`` samples; False when it did not fit or a larger size is not worth trying."""
        device, meter = self.runner.device, self.runner.meter
        device.release_cache()  # a cache left by the previous size would otherwise be reused, unseen
        meter.mark()
        start = meter.current()
        limit = None if self.budget is None else target_bytes(start, self.budget, self.headroom)
        fitted = [(row.size, row.extra - self.offset) for row in self.rows if row.ok]
        if fitted and limit is not None:
            intercept, slope = fit_line(fitted)
            if start + intercept + slope * size > limit:
                return False
        ok = True
        began = time.perf_counter()
        try:
            # Two microbatches: the second meets the first one's gradients and, on CPU, the heap the
            # first left behind (glibc keeps freed chunks): one alone would promise too much.
            self.run([(0, size), (0, size)])
            device.synchronize()
        except Exception as exc:
            if not is_oom(exc):
                raise
            ok = False
        seconds = time.perf_counter() - began
        peak = meter.peak()
        self.rows.append(Row(size=size, peak=peak, extra=peak - start + self.offset, ok=ok, seconds=seconds))
        if not ok:
            self.runner.drop_gradients()
            device.empty_cache()  # with a collection: the failure's traceback may have left cycles
        return ok and (limit is None or peak <= limit)

    def sweep(self, ceiling: int) -> None:
        for size in probe_sizes(ceiling):
            if not self.one(size):
                break


def _step_without_moving(optimizer: torch.optim.Optimizer) -> None:
    """An optimizer step that creates the state the first real step will (its memory), at lr 0.

    The weights stay finite for the rest of the sweep (a scaled or huge
    gradient would otherwise make them inf); the restore puts everything back.
    """
    rates = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * 0 if isinstance(group["lr"], torch.Tensor) else 0.0
    try:
        optimizer.step()
    finally:
        for group, rate in zip(optimizer.param_groups, rates, strict=True):
            group["lr"] = rate


def _too_big(runner: Runner, phase: str, budget: int | None, before: TreeMemory | None,
             saved: _Saved) -> NoFitError:
    """Microbatch 1 did not fit: the refusal, with what was in use when the probe began."""
    needed = runner.meter.peak()
    split = None
    if before is not None:
        state = [*runner.state_tensors(), *tensors_in(saved.model), *tensors_in(saved.optimizer)]
        split = in_use(before, runner.device.reserved(), held_bytes(state))
    return refuse(phase, needed, budget, split)


def probe(runner: Runner, batch: Any, total: int, loss_fn: LossFn | None, eval_fn: EvalFn | None, *,
          ceiling: int, budget: int | None, headroom: float, reserve: int,
          eval_ceiling: int | None = None) -> Plan:
    """Measure, put the run's state back, and choose the train (with ``loss_fn``) and eval microbatch.

    ``reserve`` is memory that must stay free besides the step (the
    checkpointer's snapshot); on memory shared with the host it is at least the
    snapshot this probe measured.
    """
    began = time.perf_counter()
    ceiling = max(1, min(ceiling, total))
    eval_ceiling = max(1, min(eval_ceiling or ceiling, total))
    device, meter, optimizer = runner.device, runner.meter, runner.optimizer
    state_before = snapshot_bytes(optimizer.state_dict()["state"])
    before = meter.reading()  # what is in use before any step: a refusal's explanation
    saved = _save(runner)
    optimizer_peak, growth = 0, 0
    taken = snapshot_bytes(saved.model) + snapshot_bytes(saved.optimizer)
    train_rows: list[Row] = []
    eval_rows: list[Row] = []
    try:
        runner.drop_gradients()
        if loss_fn is not None:
            train = _Sweep(runner, lambda spans: runner.accumulate(batch, total, spans, loss_fn), budget,
                           headroom, grad_bytes(runner.model))
            if not _Sweep(runner, train.run).one(1):  # warm-up: lazy init, gradients allocated
                raise _too_big(runner, "train", budget, before, saved)
            meter.mark()
            _step_without_moving(optimizer)
            optimizer_peak = meter.peak()
            growth = snapshot_bytes(optimizer.state_dict()["state"]) - state_before
            taken = snapshot_bytes(runner.model.state_dict()) + snapshot_bytes(optimizer.state_dict())
            train.sweep(ceiling)
            train_rows = train.rows
        if eval_fn is not None:
            runner.drop_gradients()
            runner.model.eval()
            evaluation = _Sweep(runner, lambda spans: runner.evaluate(batch, total, spans, eval_fn, []),
                                budget, headroom)
            if not _Sweep(runner, evaluation.run).one(1):
                raise _too_big(runner, "eval", budget, before, saved)
            evaluation.sweep(eval_ceiling)
            eval_rows = evaluation.rows
    finally:
        _restore(runner, saved)
        del saved
        device.release_cache()
    # The state the probe's optimizer step created went with the restore; the first real step makes it again.
    start = meter.current() + max(0, growth)
    reserve = max(reserve, taken if device.unified else 0)
    target = None if budget is None else target_bytes(start, budget, headroom, reserve)
    return _plan(train_rows, eval_rows, start, target, budget, (ceiling, eval_ceiling), optimizer_peak,
                 reserve, time.perf_counter() - began, HOST_HEAP_GROWTH if device.unified else 1.0)


def _plan(train_rows: list[Row], eval_rows: list[Row], start: int, target: float | None,
          budget: int | None, ceilings: tuple[int, int], optimizer_peak: int, reserve: int, seconds: float,
          growth: float) -> Plan:
    """Choose from the rows; ``start`` is what the process will hold between steps."""
    train_model = model_from_rows(train_rows)
    eval_model = model_from_rows(eval_rows)
    microbatch = eval_microbatch = None
    ceiling, eval_ceiling = ceilings
    if train_rows:
        cautious = replace(train_model, per_sample=train_model.per_sample * growth)
        microbatch = max(1, choose(cautious, start, target, ceiling, train_rows))
    if eval_rows:
        cautious = replace(eval_model, per_sample=eval_model.per_sample * growth)
        eval_microbatch = max(1, choose(cautious, start, target, eval_ceiling, eval_rows))
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
    )
