"""The Guard: train and evaluate in microbatches that fit the memory budget, and never lose a step.

::

    guard = Guard(model, optimizer, memory_limit="2GB", run_dir="runs/mine")
    loss = guard.step(batch, loss_fn)          # loss_fn(model, microbatch) -> mean loss
    outputs = guard.evaluate(batch, eval_fn)   # eval_fn(model, microbatch) -> batch-first outputs

``step`` splits the batch, accumulates gradients weighted by each chunk's
share of samples (the update equals the whole batch's), then steps the
optimizer. On an OOM, or on CPU and unified memory when the measured peak
crossed the budget, it drops the partial step, empties the cache, shrinks to
the largest size the measurements say fits and redoes the same batch.
Evaluation has its own microbatch and shrinks on its own.

With a DistributedDataParallel model every rank agrees on each attempt's
microbatch and on any failure before anything collective happens
(:mod:`oomguard.engine.ddp`), so ranks shrink together and never deadlock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from oomguard import environment, host
from oomguard import events as ev
from oomguard.devices import Device, device_of, get_device
from oomguard.devices.base import OverBudget, is_oom
from oomguard.engine.ddp import PeerOutOfMemory, StepSync
from oomguard.engine.plan import Plan
from oomguard.engine.prediction import Prediction
from oomguard.engine.probe import grad_bytes, probe
from oomguard.engine.probe_result import ProbeResult
from oomguard.engine.protection import Protection, Unprotected
from oomguard.engine.recompute import Blocks
from oomguard.engine.recovery import MemoryModel
from oomguard.engine.refusal import NoFitError
from oomguard.engine.resumable import LoopCheckpoints
from oomguard.engine.runner import EvalFn, LossFn, Runner
from oomguard.engine.saver_choice import SaverSearch, Trial, fitted, refused
from oomguard.engine.savers import Savers
from oomguard.engine.sizing import Phase, Sizer
from oomguard.engine.split import batch_size, chunk_spans, concat
from oomguard.engine.update import UpdateRecovery
from oomguard.errors import ConfigError
from oomguard.events import EventLog
from oomguard.memory.budget import Budget, resolve_budget
from oomguard.memory.meter import MemoryMeter
from oomguard.memory.sampler import MemorySampler
from oomguard.memory.tensors import held_bytes
from oomguard.memory.watch import MemoryWatch, to_stderr
from oomguard.units import parse_duration, parse_memory_limit

#: Share of a host-memory budget above which the heap is trimmed before each step.
NEAR_BUDGET = 0.75


def _size_arg(name: str, value: int | str) -> int:
    if value == "auto":
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r}: expected 'auto' or a positive integer; pass e.g. {name}=8")
    return value


def _limit_arg(value: str | float | int) -> str | float | int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 1:
        return value  # bytes, from Python
    try:
        return parse_memory_limit(value)
    except ValueError as err:
        raise ConfigError(f"memory_limit={value!r}: expected auto, off, a size like 2GB or a fraction "
                          f"like 0.8 ({err})") from None


def _run_dir(given: str | Path | None, console: Callable[[str], None]) -> Path | None:
    """Where the Guard writes: ``oomguard run``'s run directory for this command when it names one."""
    named = os.environ.get(environment.RUN_DIR)
    if not named:
        return Path(given) if given is not None else None
    if given is not None and Path(given).resolve() != Path(named).resolve():
        console(f"under oomguard run this Guard writes to its run directory {named}, not {given}")
    return Path(named)


def _duration_arg(name: str, value: str | float | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as err:
        raise ConfigError(f"{name}={value!r}: {err}") from None


def _device_of(model: nn.Module, device: Device | str | None) -> Device:
    if isinstance(device, Device):
        return device
    if isinstance(device, str):
        return get_device(device)
    return device_of(model)


class Guard:
    """Fits each step and each evaluation to the memory budget; see the module docstring."""

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, memory_limit: str | float | int = "auto",
        run_dir: str | Path | None = None, *, microbatch: int | str = "auto",
        eval_microbatch: int | str = "auto", ceiling: int | None = None, device: Device | str | None = None,
        scaler: torch.amp.GradScaler | None = None, amp_dtype: torch.dtype | None = None,
        events: EventLog | None = None, sampler: MemorySampler | None = None,
        clip_grad_norm: float | None = None, grow_after: int = 50, headroom: float = 0.9,
        memory_cap: int | None = None, budget_share: int = 1, checkpoint_every: str | float | None = "5m",
        scheduler: Any = None, keep: int = 2, min_available: str | int = "auto",
        console: Callable[[str], None] = to_stderr, savers: str | list[str] = "auto",
        amp: bool | str = False, blocks: Blocks | None = None,
    ) -> None:
        if not 0 < headroom <= 1:
            raise ConfigError(f"headroom={headroom!r}: expected a fraction in (0, 1], e.g. 0.9")
        if grow_after < 1:
            raise ConfigError(f"grow_after={grow_after!r}: expected a positive number of steps, e.g. 50")
        train_size = _size_arg("microbatch", microbatch)
        ladder = os.environ.get(environment.MICROBATCH)  # oomguard run: smaller after a memory kill
        if ladder and ladder.isdigit() and int(ladder) > 0:
            train_size = min(train_size or int(ladder), int(ladder))
        eval_size = _size_arg("eval_microbatch", eval_microbatch)
        self.model, self.optimizer = model, optimizer
        self.device = _device_of(model, device)
        budget = resolve_budget(_limit_arg(memory_limit), self.device, cap=memory_cap, share=budget_share)
        if budget.limit is not None and self.device.has_hard_limit:
            self.device.set_hard_limit(budget.limit, host.tree_memory().total if self.device.unified else 0)
        run = _run_dir(run_dir, console)
        self.events = events if events is not None else EventLog(run / "events.jsonl" if run else None)
        self._own_sampler = sampler is None and run is not None
        if run is not None and sampler is None:
            # Under oomguard run the timeline is the supervisor's (one series for every attempt).
            timeline = None if os.environ.get(environment.RUN_DIR) else run / "memory.csv"
            sampler = MemorySampler(self.device, timeline, events=self.events).start()
        self.sampler = sampler
        self.meter = MemoryMeter(self.device, sampler)
        check = budget.limit if self.device.unified else None  # the OS kills before a hard limit is reached
        self.runner = Runner(model, optimizer, self.device, self.meter, check, scaler, amp_dtype,
                             clip_grad_norm)
        #: Activation checkpointing, mixed precision, optimizer state in host memory: on where they make the
        #: step fit (see :mod:`oomguard.engine.savers`); ``amp`` True, False or "auto" (only where needed).
        self.savers = Savers(self.runner, self.device, self.events, savers, amp, blocks)
        self.saver_search = SaverSearch(self.savers, self.events,
                                        grouped=isinstance(model, DistributedDataParallel))
        train_size = min(train_size, ceiling) if ceiling and train_size else train_size
        top = train_size or ceiling or None
        train = Phase("train", train_size, top, MemoryModel(fixed=grad_bytes(model)), auto=not train_size)
        evaluation = Phase("eval", eval_size, eval_size or ceiling, auto=not eval_size)
        self.sizer = Sizer(train, evaluation, budget, self.device, self.meter, self.events, headroom,
                           grow_after, lambda: held_bytes(self.runner.state_tensors()))
        self.last_plan: Plan | None = None
        #: Sets of loader workers the last plan counted (a saver's probe after a step counts the same).
        self._worker_sets = 1.0
        self.sync: StepSync | None = None
        if isinstance(model, DistributedDataParallel):
            from oomguard.distributed.group import Group

            self.sync = StepSync(Group.join(self.device), model)
        self.steps = 0
        #: Largest peak (budget bytes) measured in a step or evaluation so far.
        self.peak_memory = 0
        self.last_step_peak = 0
        #: Trim the heap before the next step near a host budget (after a plan, an evaluation, or a step
        #: over its target on a heap not trimmed: ``_untrimmed``); before every one (``_trim_always``) once
        #: such a step showed that this heap keeps enough to matter, until the next plan.
        self._trim_next, self._untrimmed, self._trim_always = True, False, False
        self.console = console
        #: Pressure, leaks and fragmentation, checked between steps (one implementation for every loop).
        self.watch = MemoryWatch(self.events, budget.limit, min_available, console)
        #: Who checkpoints: this Guard's own checkpoints of a hand-written loop with ``run_dir``, the built-in
        #: loop's (:meth:`protect`), or nobody.
        self.protection: Protection = Unprotected()
        self.checkpoints: LoopCheckpoints | None = None
        if run is not None:
            every = _duration_arg("checkpoint_every", checkpoint_every)
            self.checkpoints = LoopCheckpoints(self, run, every, scheduler, keep, console)
            self.protection = self.checkpoints
        #: The optimizer step of every ``step``: copied first when at risk, redone on an out-of-memory.
        self.updates = UpdateRecovery(self.runner.update, self.device, self.meter)
        self.savers.start()

    @property
    def budget(self) -> Budget:
        """The budget in force: ``memory_limit``'s, or lower once the device showed it has less free."""
        return self.sizer.budget

    @property
    def microbatch(self) -> int:
        """The training microbatch now (0 while ``auto`` has not planned yet)."""
        return self.sizer.train.size

    @property
    def eval_microbatch(self) -> int:
        """The evaluation microbatch now (0 while ``auto`` has not planned yet)."""
        return self.sizer.eval.size

    @property
    def grow_after(self) -> int:
        return self.sizer.grow_after

    def step(self, batch: Any, loss_fn: LossFn) -> torch.Tensor:
        """Train on ``batch``; the mean loss of the whole batch, detached (no sync).

        Before anything changes: a timed checkpoint when one is due, and the
        pressure check (which may checkpoint, shrink, or stop the run).
        """
        self._between_steps()
        total = batch_size(batch)
        phase = self.sizer.train
        if not phase.size:
            self.plan(batch, loss_fn)
        self._release_if_near_budget()
        self.sizer.observed.between_steps(self.meter.current(fresh=False))
        while True:
            scale = self._agree(phase, total) if self.sync is not None else 1.0
            spans = chunk_spans(total, phase.size)
            self.meter.mark()
            failure = None
            peer = over = False
            try:
                loss = self.runner.accumulate(batch, total, spans, loss_fn, self.sync, scale)
            except PeerOutOfMemory:
                peer = True
            except Exception as exc:
                if not is_oom(exc):
                    raise
                failure, over = self._failure(exc), isinstance(exc, OverBudget)
            # Out of the except block: the traceback and the tensors its frames held are gone.
            if self.sync is not None:
                peer = self.sync.settle(failure is not None) and failure is None
            if failure is None and not peer:
                break
            self.runner.drop_gradients()
            if self.sync is not None:
                self.sync.reset()
            if over and self._untrimmed:
                # Pages an earlier step freed may be in that peak: the same size again, on a trimmed heap.
                self._untrimmed, self._trim_always = False, True
                self.device.release_host_heap()
                continue
            if failure is not None:
                self._note(failure[0])
                self.sizer.failed(phase, spans[0][1] - spans[0][0], *failure,
                                  last_resort=lambda refusal: self._fit_with_savers(batch, loss_fn, refusal))
        # The microbatches' peak decides sizes; the optimizer step's own (its state, made on the first
        # step) does not depend on them, and is measured on its own for the next update's risk.
        accumulated = self.runner.last_peak if self.runner.limit is not None else self.meter.peak()
        update_peak = self.updates.step(self.budget, self._optimizer_oom)
        peak = self.last_step_peak = max(accumulated or 0, update_peak)
        self._note(peak)
        largest = spans[0][1] - spans[0][0]
        if self.runner.limit is not None and peak > self.runner.limit and not self._untrimmed:
            # Over budget in the optimizer step: the update is done and stays; the next steps run smaller.
            self.sizer.failed(phase, largest, peak, "over budget after the optimizer step")
        elif self._untrimmed and (accumulated or peak) > self.sizer.target():
            self._trim_always = True  # pages an earlier step freed may be in that peak: judge it trimmed
        elif not self.sizer.over_target(phase, largest, accumulated or peak):
            self.sizer.fitted(phase, largest, accumulated or peak)
        self.steps += 1
        if self.sampler is not None:
            self.sampler.step = self.steps
        self.protection.after_step()
        used = self.meter.current(fresh=False)
        self.sizer.observe(phase, largest, accumulated or peak)
        if self.watch.after_step(self.protection.step_number(), used, self.device.allocated(),
                                 self.device.reserved()):
            self.device.release_cache()
        return loss

    def _between_steps(self) -> None:
        """The pressure check, then a timed checkpoint when one is due (see :mod:`oomguard.memory.watch`)."""
        latest = self.sampler.latest if self.sampler is not None else None
        decision = self.watch.check_pressure(latest.system_available if latest is not None else None,
                                             self.peak_memory, can_shrink=self.microbatch > 1)
        if decision is None:
            self.protection.before_step()
            return
        action = "exit" if decision.exits else "shrink"
        self.events.emit(ev.Pressure(step=self.protection.step_number(), available=decision.available,
                                     min_available=decision.min_available, need=decision.need,
                                     microbatch=self.microbatch, action=action))
        if decision.exits:
            self.protection.stop_for_pressure(decision)
            return
        self.protection.save_now()
        self.device.empty_cache()
        if self.microbatch > 1:
            self.shrink("memory pressure")
        self.console(f"{decision.words()}; checkpointed, caches released, microbatch {self.microbatch}")

    def protect(self, protection: Protection, console: Callable[[str], None] | None = None) -> None:
        """Let ``protection`` checkpoint and stop the run (the built-in loop); its console for warnings."""
        self.protection = protection
        if console is not None:
            self.console = self.watch.leaks.console = self.watch.fragmentation.console = console

    def restore(self, state: MutableMapping[str, Any] | None = None) -> bool:
        """Resume a hand-written loop from the newest valid checkpoint in ``run_dir``; True when it did.

        ``state`` (e.g. ``{"epoch": 0, "loader": loader}``) is remembered and saved with every checkpoint:
        objects with ``state_dict()``/``load_state_dict()`` are restored in place, plain values replaced.
        See :mod:`oomguard.engine.resumable`.
        """
        return self._own_checkpoints("restore").restore(state)

    def save(self) -> None:
        """A checkpoint of everything now (the end of a loop), written before this returns."""
        self._own_checkpoints("save").save()

    def _own_checkpoints(self, what: str) -> LoopCheckpoints:
        if self.checkpoints is None:
            raise ConfigError(f"guard.{what}() needs a run directory: "
                              "Guard(model, optimizer, run_dir='runs/mine')")
        return self.checkpoints

    def _agree(self, phase: Phase, total: int) -> float:
        """Take the group's microbatch for this attempt (the smallest proposed); this rank's loss weight."""
        assert self.sync is not None
        agreed, scale = self.sync.begin(total, phase.size)
        if agreed < phase.size:
            self.events.emit(ev.Shrink(phase=phase.name, from_=phase.size, to=agreed,
                                       reason="another rank of the group runs smaller", predicted=None))
            phase.size = agreed
        return scale

    def _release_if_near_budget(self) -> None:
        """Near a host-memory budget, hand the heap's free pages back before a step that will be judged.

        glibc keeps pages freed by the last step (or by validation, or the
        probe's copies) in RSS, so a step's measured peak would hold them too
        and sizes would shrink for memory no tensor uses. Trimming before every
        step costs the re-faulting of those pages (measured: 12-15% of a step on
        the CPU near a budget), so it is done after a plan or an evaluation, and
        after a step on an untrimmed heap peaked over its target; that step is
        judged again on a trimmed heap rather than shrunk, and one that went
        over the budget is redone at the same size on a trimmed heap before it
        counts as a failure (:attr:`_untrimmed`). After either, this heap has
        shown that it keeps enough to matter: every step is trimmed until the
        next plan.
        It is the C heap's trim only: the device's cache (Metal's on a Mac) stays.
        """
        limit = self.budget.limit
        self._untrimmed = False
        if limit is None or not self.device.unified or self.last_step_peak <= NEAR_BUDGET * limit:
            return
        if not (self._trim_next or self._trim_always):
            self._untrimmed = True
            return
        self._trim_next = False
        self.device.release_host_heap()

    def _optimizer_oom(self, exc: BaseException) -> None:
        peak, error = self._failure(exc)
        self._note(peak)
        self.events.emit(ev.Oom(phase="train", microbatch=self.microbatch, peak=peak,
                                budget=self.budget.limit, error=f"optimizer step: {error}"))

    def _failure(self, exc: BaseException) -> tuple[int | None, str]:
        peak = exc.peak if isinstance(exc, OverBudget) else self.meter.peak()
        text = str(exc).strip()
        return peak, text.splitlines()[0][:200] if text else type(exc).__name__

    def _note(self, peak: int | None) -> None:
        self.peak_memory = max(self.peak_memory, peak or 0)

    def evaluate(self, batch: Any, fn: EvalFn) -> Any:
        """``fn`` over ``batch`` in eval microbatches, without gradients; outputs joined, detached, on CPU.

        Train/eval mode is the caller's. An OOM shrinks the eval microbatch only
        and carries on from the microbatch that failed.
        """
        total = batch_size(batch)
        phase = self.sizer.eval
        if not phase.size:
            self._plan(batch, None, fn)
        outputs: list[Any] = []
        offset = 0
        while offset < total:
            spans = [(offset + a, offset + b) for a, b in chunk_spans(total - offset, phase.size)]
            done = len(outputs)
            self.meter.mark()
            failure = None
            try:
                self.runner.evaluate(batch, total, spans, fn, outputs)
            except Exception as exc:
                if not is_oom(exc):
                    raise
                failure = self._failure(exc)
            finished = len(outputs) - done
            offset = spans[finished - 1][1] if finished else offset
            if failure is None:
                peak = self.meter.peak()
                self._note(peak)
                self.sizer.observe(phase, max(b - a for a, b in spans), peak)
                break
            self._note(failure[0])
            if offset < total:
                failed = spans[min(finished, len(spans) - 1)]
                self.sizer.failed(phase, failed[1] - failed[0], *failure)
        self._trim_next = True
        return concat(outputs)

    def plan(self, batch: Any, loss_fn: LossFn, eval_fn: EvalFn | None = None, worker_sets: float = 1.0
             ) -> Plan:
        """Probe the model on ``batch``; phases that are ``auto`` take the plan's sizes.

        ``worker_sets``: how many sets of loader workers like those running now the epoch will hold
        (2 when an evaluation loader starts its own), for the predicted peak.
        """
        return self._plan(batch, loss_fn, eval_fn, worker_sets)

    @property
    def prediction(self) -> Prediction | None:
        """The epoch's peak predicted for the sizes in force, part by part (None before a plan)."""
        return self.sizer.predict()

    def epoch_end(self, epoch: int, peak: int) -> ev.PeakCheck | None:
        """An epoch (numbered from 1) peaked at ``peak`` bytes: held against the prediction, the margin
        follows the evidence and the sizes follow the margin (``peak_check``, ``grow``/``shrink`` events)."""
        return self.sizer.epoch_end(epoch, peak)

    def probe(self, batch: Any, loss_fn: LossFn, eval_fn: EvalFn | None = None) -> ProbeResult:
        """:meth:`plan`, wrapped for printing (``oomguard probe``)."""
        plan = self._plan(batch, loss_fn, eval_fn)
        return ProbeResult(plan=plan, device=str(self.device.torch_device), budget=self.budget.describe())

    def _probe(self, batch: Any, loss_fn: LossFn | None, eval_fn: EvalFn | None, worker_sets: float = 1.0
               ) -> Plan:
        train, evaluation = self.sizer.train, self.sizer.eval
        total = batch_size(batch)
        local = self.sync.no_sync() if self.sync is not None else contextlib.nullcontext()
        with local:  # each rank probes on its own: no gradient all-reduce, whatever sizes it tries
            return probe(self.runner, batch, total, loss_fn, eval_fn, ceiling=train.ceiling or total,
                         eval_ceiling=evaluation.ceiling or total, budget=self.budget.limit,
                         headroom=self.sizer.headroom,
                         reserve=self.sizer.reserve if self.device.unified else 0,
                         worker_sets=worker_sets)

    def _plan(self, batch: Any, loss_fn: LossFn | None, eval_fn: EvalFn | None, worker_sets: float = 1.0
              ) -> Plan:
        """Probe with the savers in force; with others where microbatch 1 does not fit, or where a larger
        microbatch may run faster (an accelerator): the fastest measured combination that fits."""
        in_force = self.savers.in_force
        self._worker_sets = worker_sets  # the savers' probes count the same workers
        try:
            plan = self._probe(batch, loss_fn, eval_fn, worker_sets)
        except NoFitError as refusal:
            if refusal.event.phase != "train" or loss_fn is None:
                self.events.emit(refusal.event)  # the run directory says why, as well as the error
                raise
            chosen = self._with_savers(batch, loss_fn, eval_fn, [refused(in_force, refusal)], refusal)
            assert chosen is not None  # or it raised
            plan = chosen
        else:
            room = plan.microbatch < plan.ceiling and self.device.larger_batches_faster
            if loss_fn is not None and room:
                trials = [fitted(in_force, plan)]
                plan = self._with_savers(batch, loss_fn, eval_fn, trials) or plan
        self._adopt_plan(plan, loss_fn is not None, eval_fn is not None)
        return plan

    def _with_savers(self, batch: Any, loss_fn: LossFn, eval_fn: EvalFn | None, trials: list[Trial],
                     refusal: NoFitError | None = None) -> Plan | None:
        ceiling = self.sizer.train.ceiling or batch_size(batch)
        return self.saver_search.plan(lambda: self._probe(batch, loss_fn, eval_fn, self._worker_sets), trials,
                                      ceiling, refusal)

    def _fit_with_savers(self, batch: Any, loss_fn: LossFn, refusal: NoFitError) -> bool:
        """Microbatch 1 of a step ran out of memory: plan again with other savers and redo (True), or
        refuse naming those tried; False where none were (the sizer's own refusal)."""
        ceiling = self.sizer.train.ceiling or batch_size(batch)
        plan = self.saver_search.after_step(lambda: self._probe(batch, loss_fn, None, self._worker_sets),
                                            ceiling, refusal)
        if plan is None:
            return False
        self._adopt_plan(plan, True, False)
        return True

    def _adopt_plan(self, plan: Plan, train_planned: bool, eval_planned: bool) -> None:
        train, evaluation = self.sizer.train, self.sizer.eval
        self.sizer.reserve = max(self.sizer.reserve, plan.snapshot_bytes)
        self.sizer.base = plan.start
        self.sizer.adopt(plan)
        if train_planned:
            _adopt(train, plan.microbatch, plan.ceiling, plan.train_model())
            if train.auto:
                self.sizer.calibrate(train)
        if eval_planned:
            _adopt(evaluation, plan.eval_microbatch or 1, plan.eval_ceiling, plan.eval_model())
        plan.savers = list(self.savers.in_force)
        # What the first step is expected to peak at: near a host budget it starts on a trimmed heap too
        # (the probe's copies leave freed pages that would otherwise count in its peak).
        fitting = [row.peak for row in plan.table if row.ok and row.size <= max(1, plan.microbatch)]
        self.last_step_peak = max(fitting, default=self.last_step_peak)
        self._trim_next, self._trim_always = True, False
        self.last_plan = plan
        # A phase planned earlier keeps its size: the event says the whole plan in force now.
        self.events.emit(plan.event(self.microbatch, self.eval_microbatch or None, self.sizer.predict()))

    def shrink(self, reason: str) -> int:
        """Halve the training microbatch now, for a reason from outside the step (``shrink`` event)."""
        return self.sizer.halve(self.sizer.train, reason)

    def add_snapshot_bytes(self, n: int) -> None:
        """Room to keep free for the checkpointer's in-memory snapshot; sizes that no longer fit shrink."""
        self.sizer.make_room(n)

    def state_dict(self) -> dict[str, int | float]:
        """The plan as numbers, for checkpoints: a resumed run skips the probe (the savers in force too)."""
        return {**self.sizer.state_dict(), **self.savers.state_dict()}

    def load_state_dict(self, state: dict[str, int | float]) -> None:
        self.sizer.load_state_dict(state)
        self.savers.load_state_dict(state)

    def close(self) -> None:
        """Finish the checkpoint in flight, free the run directory and stop the sampler this Guard started."""
        if self.checkpoints is not None:
            self.checkpoints.close()
            self.checkpoints = None
        if self._own_sampler and self.sampler is not None:
            self.sampler.stop()
            self._own_sampler = False

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _adopt(phase: Phase, size: int, ceiling: int | None, model: MemoryModel | None) -> None:
    """Take a plan's memory model, and its size and ceiling when the phase is ``auto``."""
    if model is not None:
        phase.model = model
    if phase.auto:
        phase.size = size
        phase.ceiling = min(phase.ceiling or ceiling or size, ceiling or size)
