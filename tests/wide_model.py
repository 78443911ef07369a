"""A model with few weights and big activations, for tests that need real host memory per sample."""

from __future__ import annotations

import torch
from torch import nn


class Wide(nn.Module):
    """Each sample keeps 96x2048 values alive a few times over until backward (~4.5 MB in float64)."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.inp = nn.Linear(16, 96, dtype=dtype)
        self.expand = nn.Parameter(torch.randn(96, 2048, dtype=dtype) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.tanh(self.inp(x).unsqueeze(-1) * self.expand)
        return (z * z).mean(dim=(1, 2))


Batch = tuple[torch.Tensor, torch.Tensor]


def wide_setup(batch: int, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, Batch]:
    """A fresh seeded model and a batch of ``batch`` inputs and targets."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 16, generator=generator, dtype=dtype)
    return Wide(dtype), (x, torch.rand(batch, generator=generator, dtype=dtype))


def squared_error(model: nn.Module, batch: Batch) -> torch.Tensor:
    return ((model(batch[0]) - batch[1]) ** 2).mean()
