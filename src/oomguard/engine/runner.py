"""One pass over a batch in microbatches: forward and weighted backward, or evaluation.

Every function here either finishes its work or raises; catching out-of-memory
and deciding what to do next is the Guard's job. On CPU and unified memory the
runner raises :class:`OverBudget` itself when the process's measured peak
crossed the budget, so that over-budget and a real OOM take the same road.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from oomguard.devices.base import Device, OverBudget
from oomguard.engine.ddp import StepSync
from oomguard.engine.split import detach_cpu, iter_chunks, to_device
from oomguard.engine.update import Update
from oomguard.memory.meter import MemoryMeter
from oomguard.memory.tensors import tensors_in

LossFn = Callable[[nn.Module, Any], torch.Tensor]
EvalFn = Callable[[nn.Module, Any], Any]
_HALF = (torch.float16, torch.bfloat16)


class Runner:
    """Runs microbatches of one model and optimizer under one memory check."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: Device,
        meter: MemoryMeter,
        limit: int | None,
        scaler: torch.amp.GradScaler | None = None,
        amp_dtype: torch.dtype | None = None,
        clip_grad_norm: float | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.device = device
        self.meter = meter
        #: Bytes the measured peak may reach before a step counts as out of memory (None: no check).
        self.limit = limit
        self.scaler = scaler
        self.amp_dtype = amp_dtype
        #: The optimizer step: unscale and clip once, all or nothing on an out-of-memory.
        self.update = Update(optimizer, scaler, clip_grad_norm)
        #: Evaluation runs the plain module: a DDP wrapper's forward is for training steps.
        self.eval_model = model.module if isinstance(model, DistributedDataParallel) else model
        #: The peak measured at the last check (bytes), for growth and the loop's records.
        self.last_peak: int | None = None
        #: Around each backward (activation checkpointing puts BatchNorm's statistics back after it).
        self.around_backward: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext

    def set_precision(self, dtype: torch.dtype | None, scaler: torch.amp.GradScaler | None) -> None:
        """Mixed precision from the next microbatch on (``dtype`` None: full precision)."""
        self.amp_dtype = dtype
        self.scaler = self.update.scaler = scaler

    def state_tensors(self) -> Iterator[torch.Tensor]:
        """The model's weights, buffers and gradients and the optimizer's state: not data a user holds."""
        yield from self.model.parameters()
        yield from self.model.buffers()
        yield from (p.grad for p in self.model.parameters() if p.grad is not None)
        yield from tensors_in(self.optimizer.state_dict()["state"])

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.torch_device.type, dtype=self.amp_dtype)

    def check(self) -> None:
        """Raise OverBudget when the peak since the last mark crossed the limit (CPU, unified memory)."""
        if self.limit is None:
            return
        peak = self.meter.peak()
        self.last_peak = peak
        if peak > self.limit:
            raise OverBudget(peak, self.limit)

    def accumulate(self, batch: Any, total: int, spans: list[tuple[int, int]], loss_fn: LossFn,
                   sync: StepSync | None = None, scale: float = 1.0) -> torch.Tensor:
        """Forward and backward each span, each loss weighted by its share of ``total`` samples.

        The gradients add up to those of the mean loss over all spans (times
        ``scale``, a rank's share of a group's batch); the return value is that
        mean loss, unscaled, detached, without a device sync. Under DDP (``sync``)
        every span but the last accumulates without the gradient all-reduce.
        """
        whole: torch.Tensor | None = None
        single = len(spans) == 1 and spans[0][1] - spans[0][0] == total
        last = len(spans) - 1
        for index, (chunk, count) in enumerate(iter_chunks(batch, total, spans)):
            local = sync.no_sync() if sync is not None and index < last else contextlib.nullcontext()
            gate = sync.gate if sync is not None and index == last else None
            with local:
                value = self._forward_backward(chunk, count, total, single, scale, loss_fn, gate)
            whole = value if whole is None else whole + value
            self.check()
        assert whole is not None, "no samples to train on"
        return whole

    def _forward_backward(self, chunk: Any, count: int, total: int, single: bool, scale: float,
                          loss_fn: LossFn, gate: Callable[[], None] | None = None) -> torch.Tensor:
        """One span's forward and weighted backward; its share of the mean loss, detached.

        ``gate`` runs between the two (a group's agreement before the gradient all-reduce).
        """
        microbatch = to_device(chunk, self.device.torch_device)
        with self.autocast():
            loss = loss_fn(self.model, microbatch)
        del microbatch
        if gate is not None:
            gate()
        weighted = loss if single else loss * (count / total)
        if scale != 1.0:
            weighted = weighted * scale
        if self.scaler is not None:
            weighted = self.scaler.scale(weighted)
        with self.around_backward():
            weighted.backward()
        value = loss.detach()
        if value.dtype in _HALF:
            value = value.float()
        return value if single else value * (count / total)

    def evaluate(self, batch: Any, total: int, spans: list[tuple[int, int]], fn: EvalFn,
                 outputs: list[Any]) -> None:
        """Run ``fn`` on each span without gradients, appending detached CPU outputs as each finishes."""
        with torch.no_grad():
            for chunk, _count in iter_chunks(batch, total, spans):
                microbatch = to_device(chunk, self.device.torch_device)
                with self.autocast():
                    out = fn(self.eval_model, microbatch)
                del microbatch
                outputs.append(detach_cpu(out))
                del out
                self.check()

    def drop_gradients(self) -> None:
        """Forget a partial step: gradients to None (their memory back), nothing else touched."""
        self.optimizer.zero_grad(set_to_none=True)
        self.model.zero_grad(set_to_none=True)
