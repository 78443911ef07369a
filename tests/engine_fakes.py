"""A scripted device for the engine tests: memory that is exactly linear in the microbatch size.

It stands in for a GPU (a hard allocator limit, an allocator peak): the loss
or eval function calls ``use(n)``, which raises the allocator's OOM when
``base + pressure + fixed + per_sample * n`` would cross the limit the Guard
set, and records every size it was asked for.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from oomguard.devices.base import Device

MB = 1_000_000


class FakeDevice(Device):
    kind = "fake"
    unified = False
    has_hard_limit = True

    def __init__(self, base: int = 100 * MB, per_sample: float = 1 * MB, fixed: int = 0,
                 eval_per_sample: float | None = None, tell_request: bool = False) -> None:
        super().__init__(torch.device("cpu"))
        self.base = base
        self.per_sample = per_sample
        self.eval_per_sample = per_sample / 3 if eval_per_sample is None else eval_per_sample
        self.fixed = fixed
        self.tell_request = tell_request
        #: Extra bytes held by something else (a spike); ``fail_once`` clears it after one OOM.
        self.pressure = 0
        self.fail_once = False
        self.limit: int | None = None
        self.peak = base
        self.tried: list[int] = []
        self.eval_tried: list[int] = []

    def total_memory(self) -> int:
        return 1000 * 1000 * MB

    def available_memory(self) -> int:
        return self.total_memory() - self.allocated()

    def allocated(self) -> int:
        return self.base + self.pressure

    def reserved(self) -> int:
        return self.allocated()  # no fragmentation: tests/device_doubles.py models that

    def peak_allocated(self) -> int:
        return self.peak

    def peak_reserved(self) -> int | None:
        return self.peak

    def reset_peak(self) -> None:
        self.peak = self.allocated()

    def set_hard_limit(self, limit_bytes: int, host_bytes: int = 0) -> bool:
        self.limit = limit_bytes
        return True

    def use(self, n: int, evaluating: bool = False) -> None:
        """A microbatch of ``n`` samples allocates its memory: fits, or raises the allocator's OOM."""
        (self.eval_tried if evaluating else self.tried).append(n)
        per_sample = self.eval_per_sample if evaluating else self.per_sample
        need = int(self.allocated() + (0 if evaluating else self.fixed) + per_sample * n)
        if self.limit is not None and need > self.limit:
            request = f" Tried to allocate {need - self.peak} B." if self.tell_request else ""
            if self.fail_once:
                self.pressure, self.fail_once = 0, False
            raise torch.OutOfMemoryError(f"CUDA out of memory.{request}")
        self.peak = max(self.peak, need)


def regression(device: FakeDevice, features: int = 4) -> tuple[nn.Module, Any, Any]:
    """A linear model, a loss and an eval function that report their microbatch to ``device``."""
    model = nn.Linear(features, 1)

    def loss_fn(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        device.use(len(x))
        return ((net(x) - y) ** 2).mean()

    def eval_fn(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        device.use(len(batch[0]), evaluating=True)
        return net(batch[0])

    return model, loss_fn, eval_fn


def data(n: int, features: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=generator), torch.randn(n, 1, generator=generator)


def events(guard: Any, kind: str) -> list[dict[str, Any]]:
    return [event for event in guard.events.history if event["event"] == kind]
