"""Optimizer state in host memory: on the device only while the optimizer steps.

Adam keeps two tensors the size of the weights; between steps they sit idle
on the GPU while the forward and backward need the room. With offload on,
every state tensor lives in a host buffer (pinned, so the copies are
asynchronous) and comes to the parameter's device for the optimizer step
only. Hooks on the optimizer do it, so whoever calls ``optimizer.step()``
(the Guard's update, a GradScaler, the probe) gets the same: fetched before,
stashed after. A ``load_state_dict`` (a resume, the probe putting the state
back) moves the state to the device; the state goes back to the host at once.

Exact: the state is copied, never converted, and the step runs on the device
as before. On a unified-memory device (CPU, Apple silicon) the host is the
device and offload saves nothing; the Guard offers it on CUDA only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class OptimizerOffload:
    """Keeps ``optimizer``'s state tensors in host memory between steps, once :meth:`enable` d."""

    def __init__(self, optimizer: torch.optim.Optimizer, synchronize: Callable[[], None],
                 pin: bool = False) -> None:
        self.optimizer = optimizer
        self.synchronize = synchronize
        self.pin = pin
        self.on = False
        self._handles: list[Any] = []
        #: The host buffer of each state tensor, reused from step to step.
        self._host: dict[int, dict[str, torch.Tensor]] = {}  # by id() of the parameter

    def enable(self) -> None:
        if self.on:
            return
        optimizer = self.optimizer
        self._handles = [
            optimizer.register_step_pre_hook(lambda *_: self.fetch()),
            optimizer.register_step_post_hook(lambda *_: self.stash()),
            optimizer.register_load_state_dict_post_hook(lambda *_: self.stash()),
        ]
        self.on = True
        self.stash()

    def disable(self) -> None:
        if not self.on:
            return
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.fetch()
        self._host.clear()
        self.on = False

    def _buffer(self, param: torch.Tensor, name: str, value: torch.Tensor) -> torch.Tensor:
        buffers = self._host.setdefault(id(param), {})
        buffer = buffers.get(name)
        if buffer is None or buffer.shape != value.shape or buffer.dtype != value.dtype:
            buffer = torch.empty(value.shape, dtype=value.dtype, device="cpu", pin_memory=self.pin)
            buffers[name] = buffer
        return buffer

    def _tensors(self) -> list[tuple[torch.Tensor, dict[str, Any], str, torch.Tensor]]:
        """``(param, its state, key, value)`` of every state tensor but scalars (a step count, which the
        optimizer keeps where it wants it)."""
        out = []
        for param, state in self.optimizer.state.items():
            if not isinstance(param, torch.Tensor):
                continue
            for name, value in state.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    out.append((param, state, name, value))
        return out

    def stash(self) -> None:
        """Every state tensor into its host buffer; the device's copies are freed."""
        moved = False
        for param, state, name, value in self._tensors():
            if self._host.get(id(param), {}).get(name) is value:
                continue  # already there
            buffer = self._buffer(param, name, value)
            buffer.copy_(value, non_blocking=self.pin)
            state[name] = buffer
            moved = True
        if moved and self.pin:
            self.synchronize()  # the buffers are read on the host (checkpoints) before the next step

    def fetch(self) -> None:
        """Every state tensor on its parameter's device, for the optimizer step (a copy: the host buffer
        stays for the next stash)."""
        for param, state, name, value in self._tensors():
            if value.device != param.device or self._host.get(id(param), {}).get(name) is value:
                state[name] = value.to(param.device, copy=True, non_blocking=self.pin)
