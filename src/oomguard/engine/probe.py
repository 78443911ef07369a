"""The probe: measure peak memory against microbatch size on the real model and batch, then plan.

On the run's own model and batch it takes one checkpoint snapshot (the copy it
restores from, and the size the checkpointer's snapshot will have), runs a
warm-up and an optimizer step (at learning rate 0, to create its state), then
two accumulated microbatches of each size 1, 2, 4, ... up to the ceiling, and
the same without gradients for evaluation. It stops before a size the points
so far predict over the target and at the first size that did not fit, so
probing never asks for much more than the plan could give. It measures what is
held between steps once the optimizer has its state (and what the loader
workers hold alone), and where the chosen size splits the batch, a whole step
at it (:mod:`oomguard.engine.choice`). The plan predicts the epoch's peak from
those parts (:mod:`oomguard.engine.prediction`). Weights, optimizer state,
RNGs and train/eval modes are put back afterwards: a run that probed draws the
same numbers as one that did not.
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
from oomguard.devices.base import Device, is_oom
from oomguard.engine.choice import Choice, make_plan
from oomguard.engine.plan import Plan, Row, fit_line
from oomguard.engine.prediction import Prediction
from oomguard.engine.recovery import target_bytes
from oomguard.engine.refusal import NoFitError, refuse
from oomguard.engine.runner import EvalFn, LossFn, Runner
from oomguard.host import TreeMemory
from oomguard.memory.in_use import in_use
from oomguard.memory.tensors import held_bytes, tensors_in

Spans = list[tuple[int, int]]


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

    def one(self, size: int, spans: Spans | None = None) -> bool:
        """Measure ``size`` samples (twice, or as ``spans``: a whole step's chunks of that size); False
        when it did not fit or a larger size is not worth trying."""
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
        seconds = 0.0
        timed = spans or [(0, size)]
        try:
            # Two microbatches: the second meets the first one's gradients and, on CPU, the heap the
            # first left behind (glibc keeps freed chunks): one alone would promise too much. Only the
            # second is timed: the first at a new size pays for the allocator's new blocks and, on a
            # GPU, cuDNN's choice of kernels for the new shapes, once per shape and run (so a saver
            # probed after another would look faster for it).
            if spans is None:
                self.run([(0, size)])
            seconds = _timed(device, lambda: self.run(timed)) / len(timed)
        except Exception as exc:
            if not is_oom(exc):
                raise
            ok = False
        peak = meter.peak()
        self.rows.append(Row(size=size, peak=peak, extra=peak - start + self.offset, ok=ok,
                             whole=spans is not None, seconds=seconds))
        if not ok:
            self.runner.drop_gradients()
            device.empty_cache()  # with a collection: the failure's traceback may have left cycles
        return ok and (limit is None or peak <= limit)

    def row(self, size: int, spans: Spans) -> Row:
        """The row of ``size`` measured as ``spans`` (a whole step)."""
        self.one(size, spans)
        return self.rows[-1]

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


@dataclass(frozen=True)
class _Held:
    """What the process held between steps in the probe, the optimizer state made (bytes, as ``current``)."""

    total: int
    #: Of ``total``: what the loader workers hold alone, and the probe's own copies that go with the restore.
    children: int = 0
    copies: int = 0
    optimizer: int = 0
    #: The optimizer step's peak (with the gradients it steps from).
    step_peak: int = 0

    @property
    def after(self) -> int:
        """What ``meter.current()`` will read between steps once training runs."""
        return max(0, self.total - self.copies)


def _held(runner: Runner, copies: int, step_peak: int) -> _Held:
    """Measure what is held between steps now: no gradients, the allocator's free cache handed back."""
    runner.drop_gradients()
    runner.device.release_cache()
    # Each process measured now (host memory only). The workers count for the pages they hold alone:
    # those they share with this process are counted once already, and more workers share them too.
    reading = runner.meter.reading()
    alone = reading.children_private if reading is not None else 0
    state = snapshot_bytes(runner.optimizer.state_dict()["state"])
    return _Held(total=runner.meter.current(), children=alone, copies=copies, optimizer=state,
                 step_peak=step_peak)


def model_bytes(model: nn.Module) -> int:
    """Bytes of the weights and buffers of ``model`` (each tensor once)."""
    return snapshot_bytes([*model.parameters(), *model.buffers()])


def probe(runner: Runner, batch: Any, total: int, loss_fn: LossFn | None, eval_fn: EvalFn | None, *,
          ceiling: int, budget: int | None, headroom: float, reserve: int,
          eval_ceiling: int | None = None, worker_sets: float = 1.0) -> Plan:
    """Measure, put the run's state back, and choose the train (with ``loss_fn``) and eval microbatch.

    ``reserve`` is memory that must stay free besides the step (the
    checkpointer's snapshot); on memory shared with the host it is at least the
    snapshot this probe measured. ``worker_sets``: how many sets of loader
    workers like the ones running now will run (the built-in loop's evaluation
    loader brings a second). ``headroom``: the share of the room the plan may
    use before the probe's own scatter narrows it (:class:`Caution`).
    """
    began = time.perf_counter()
    ceiling = max(1, min(ceiling, total))
    eval_ceiling = max(1, min(eval_ceiling or ceiling, total))
    device, meter, optimizer = runner.device, runner.meter, runner.optimizer
    before = meter.reading()  # what is in use before any step: a refusal's explanation
    saved = _save(runner)
    copies = snapshot_bytes(saved.model) + snapshot_bytes(saved.optimizer) if device.unified else 0
    taken = snapshot_bytes(saved.model) + snapshot_bytes(saved.optimizer)
    train_rows: list[Row] = []
    eval_rows: list[Row] = []
    held: _Held | None = None
    update_seconds = 0.0
    try:
        runner.drop_gradients()
        if loss_fn is not None:
            train = _Sweep(runner, lambda spans: runner.accumulate(batch, total, spans, loss_fn), budget,
                           headroom, grad_bytes(runner.model))
            if not _Sweep(runner, train.run).one(1):  # warm-up: lazy init, gradients allocated
                raise _too_big(runner, "train", budget, before, saved)
            meter.mark()
            _step_without_moving(optimizer)
            step_peak = meter.peak()
            update_seconds = _timed(device, lambda: _step_without_moving(optimizer))  # its state made
            taken = snapshot_bytes(runner.model.state_dict()) + snapshot_bytes(optimizer.state_dict())
            train.sweep(ceiling)
            held = _held(runner, copies, step_peak)  # the optimizer state as the first real step makes it
            reserve = max(reserve, taken if device.unified else 0)
            choice = Choice(held.after, budget, reserve, headroom, ceiling, total)
            train_rows = choice.confirmed(train.rows, _Sweep(runner, train.run).row)
        if eval_fn is not None:
            runner.drop_gradients()
            runner.model.eval()
            evaluation = _Sweep(runner, lambda spans: runner.evaluate(batch, total, spans, eval_fn, []),
                                budget, headroom)
            if not _Sweep(runner, evaluation.run).one(1):
                raise _too_big(runner, "eval", budget, before, saved)
            evaluation.sweep(eval_ceiling)
            held = held or _held(runner, copies, 0)
            choice = Choice(held.after, budget, reserve, headroom, eval_ceiling, total)
            eval_rows = choice.confirmed(evaluation.rows, _Sweep(runner, evaluation.run).row)
    finally:
        _restore(runner, saved)
        del saved
        device.release_cache()
    assert held is not None, "probe() needs a loss_fn or an eval_fn"
    base = Prediction({
        "model": model_bytes(runner.model), "optimizer": held.optimizer, "snapshot": reserve,
        "workers": round(held.children * worker_sets),
        "optimizer_step": max(0, held.step_peak - held.total) if held.step_peak else 0,
    })
    base = base.with_parts(process=held.after - held.children - base.part("model") - base.part("optimizer"))
    plan = make_plan(train_rows, eval_rows, held.after, base, budget, (ceiling, eval_ceiling), held.step_peak,
                     headroom, time.perf_counter() - began, total)
    return replace(plan, update_seconds=update_seconds)


def _timed(device: Device, work: Callable[[], object]) -> float:
    """Seconds ``work`` took on ``device``, its queued kernels finished."""
    device.synchronize()
    began = time.perf_counter()
    work()
    device.synchronize()
    return time.perf_counter() - began
