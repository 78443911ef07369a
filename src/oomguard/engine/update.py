"""One optimizer update, all or nothing: an out-of-memory inside it never leaves half an update behind.

An update is several passes over the weights, in place: under AMP the
GradScaler unscales the gradients (once: a second ``unscale_`` is an error),
clipping scales them, and the optimizer step itself runs in stages (a foreach
Adam bumps its step counts and moments, then allocates temporaries the size of
the weights, then moves the weights). An out-of-memory can come between any two.
So an :class:`Update`:

- unscales the gradients once per update and remembers it (the scaler's step
  then skips its own unscale); clipping runs again on a retry, which changes
  nothing (clipped gradients are under the norm);
- before a step that may fail (``risky``: the caller knows the memory), copies
  the weights and the optimizer state to host memory, and puts them back when
  the step fails, so a retry starts from exactly where the first began and the
  result is the update a run without the failure makes;
- without a copy, a step that failed cannot be undone, so it is never redone:
  :class:`MemoryBudgetError` says to resume from the last checkpoint (the
  supervisor does that by itself).

All allocations of ``unscale_`` and of clipping come before their in-place
work on one device (the found-inf flag, the norms), so a failure there leaves
the gradients as they were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from oomguard.devices.base import Device, is_oom
from oomguard.errors import MemoryBudgetError
from oomguard.memory.budget import Budget
from oomguard.memory.meter import MemoryMeter

#: An optimizer step predicted to reach this share of a hard limit is copied first, so it can be redone.
UPDATE_MARGIN = 0.9
#: Tries of one optimizer update: as it is, after emptying the cache, tensor by tensor.
UPDATE_ATTEMPTS = 3


class _Copy:
    """The weights and optimizer state before a step, on the host, to put back in place."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
        self.params = [p.detach().to("cpu", copy=True) for p in params]
        #: Each state value as it was: a tensor as (host copy, its device), anything else as itself.
        self.state = {key: {name: _host(value) for name, value in entry.items()}
                      for key, entry in optimizer.state.items()}

    def restore(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for param, saved in zip(params, self.params, strict=True):
                param.copy_(saved)
            for key in [key for key in optimizer.state if key not in self.state]:
                del optimizer.state[key]  # state the failed step made lazily
            for key, saved_entry in self.state.items():
                live = optimizer.state[key]
                for name in [name for name in live if name not in saved_entry]:
                    del live[name]
                for name, (value, device) in saved_entry.items():
                    current = live.get(name)
                    if device is None:
                        live[name] = value
                    elif isinstance(current, torch.Tensor) and current.shape == value.shape \
                            and current.dtype == value.dtype and current.device == device:
                        current.copy_(value)  # in place: no second copy of the state on the device
                    else:
                        live[name] = value.to(device, copy=True)


def _host(value: Any) -> tuple[Any, torch.device | None]:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True), value.device
    return value, None


@contextlib.contextmanager
def _per_tensor(optimizer: torch.optim.Optimizer, on: bool) -> Iterator[None]:
    """The optimizer's per-tensor implementation for one step (no foreach temporaries the size of the
    weights), then its own choice again."""
    if not on:
        yield
        return
    before = [group.get("foreach") for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        if "foreach" in group:
            group["foreach"] = False
    try:
        yield
    finally:
        for group, value in zip(optimizer.param_groups, before, strict=True):
            if "foreach" in group:
                group["foreach"] = value


class Update:
    """Unscale, clip, step and free the gradients of one optimizer; see the module docstring."""

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None,
                 clip_grad_norm: float | None = None) -> None:
        self.optimizer, self.scaler, self.clip_grad_norm = optimizer, scaler, clip_grad_norm
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self._unscaled = False  # this update's gradients are unscaled already
        self._stepped = False  # this update's optimizer step is done (only the scaler's update is left)
        #: Steps made so far (a failed one not counted): the first one makes the optimizer's state.
        self.count = 0

    def run(self, risky: bool, per_tensor: bool = False) -> None:
        """Finish this update: what a failed attempt did is kept or undone, never done twice.

        ``risky``: copy the weights and state first, so that a failing step can be redone.
        ``per_tensor``: step with the per-tensor implementation (a retry that needs less memory).
        """
        if not self._stepped:
            self._prepare_gradients()
            saved = _Copy(self.optimizer, self.params) if risky else None
            try:
                with _per_tensor(self.optimizer, per_tensor):
                    if self.scaler is not None:
                        self.scaler.step(self.optimizer)
                    else:
                        self.optimizer.step()
            except Exception as exc:
                if not is_oom(exc):
                    raise
                if saved is None:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                    raise MemoryBudgetError(
                        "the optimizer step ran out of memory part-way through its update, which cannot "
                        "be undone; resume from the last checkpoint (a supervised run does so by itself, "
                        f"with a smaller plan) or raise memory_limit ({first})") from None
                saved.restore(self.optimizer, self.params)
                raise
            self._stepped = True
        if self.scaler is not None:
            self.scaler.update()
        self._unscaled = self._stepped = False
        self.count += 1
        # Flush the gradients as soon as the step is done: validation and checkpoints need the room.
        self.optimizer.zero_grad(set_to_none=True)

    def _prepare_gradients(self) -> None:
        if self.scaler is not None and not self._unscaled:
            self.scaler.unscale_(self.optimizer)  # once per update; the scaler's step then skips it
            self._unscaled = True
        if self.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.params, self.clip_grad_norm)


class UpdateRecovery:
    """The Guard's optimizer step: measured, copied first when it may fail, redone when it does.

    An update is at risk on a device with a hard limit when it is the first
    (it makes the optimizer's state) or when the last one reached (or added,
    over where this one starts) more than ``UPDATE_MARGIN`` of the limit; on a
    discrete GPU the limit is also what the card still has free for us. A
    failed update is redone from where it began after the cache is emptied,
    then with the optimizer's per-tensor implementation, which is kept from
    then on; a third failure stops with what to change.
    """

    def __init__(self, update: Update, device: Device, meter: MemoryMeter) -> None:
        self.update, self.device, self.meter = update, device, meter
        #: The optimizer steps tensor by tensor from now on: its foreach update did not fit.
        self.per_tensor = False
        #: Bytes the last update added over its start, and its peak (None: not measured since a failure).
        #: With a warm cache the extra can be 0 while the peak sits near the limit.
        self.extra: int | None = None
        self.peak = 0

    def at_risk(self, before: int, budget: Budget) -> bool:
        device = self.device
        if not device.has_hard_limit:
            return False  # the OS kills before an exception: nothing to redo
        if self.extra is None or self.update.count == 0:
            return True
        limit = budget.limit or device.total_memory()
        if not device.unified:
            limit = min(limit, before + device.available_memory())
        return max(before + self.extra, self.peak) > UPDATE_MARGIN * limit

    def step(self, budget: Budget, on_oom: Callable[[BaseException], None]) -> int:
        """Run the update to its end; its peak in budget bytes. ``on_oom`` hears of each failed try."""
        before = self.meter.current()
        self.meter.mark()
        for attempt in range(UPDATE_ATTEMPTS):
            per_tensor = self.per_tensor or attempt >= 2
            try:
                self.update.run(self.at_risk(before, budget), per_tensor=per_tensor)
            except MemoryBudgetError:
                raise
            except Exception as exc:
                if not is_oom(exc):
                    raise
                on_oom(exc)
            else:
                self.per_tensor = per_tensor
                self.peak = self.meter.peak()
                self.extra = max(0, self.peak - before)
                return self.peak
            self.extra = None  # what it needs is unknown now: copy before every try
            self.device.empty_cache()  # out of the except block: the failure's frames are gone
        raise MemoryBudgetError(
            f"the optimizer step does not fit the memory budget ({budget.describe()}) even after emptying "
            "the cache and stepping tensor by tensor; raise memory_limit, use a smaller model, or an "
            "optimizer with less state (sgd)")
