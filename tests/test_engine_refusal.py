"""A refusal that explains itself: the advice follows the numbers, and the data held is measured."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from oomguard import Guard, host
from oomguard.engine.refusal import advice, refuse
from oomguard.errors import MemoryBudgetError
from oomguard.memory.in_use import InUse
from oomguard.memory.tensors import held_bytes

MB = 1000**2


def before(process: int = 300, data: int = 0, workers: int = 0, workers_private: int = 0,
           worker_count: int = 0) -> InUse:
    return InUse(total=(process + workers) * MB, process=process * MB, data=data * MB, workers=workers * MB,
                 workers_private=workers_private * MB, worker_count=worker_count, others=0, other_count=0,
                 counted_as="pss")


def test_fewer_workers_is_advised_only_when_their_own_memory_covers_the_excess() -> None:
    busy = before(workers=400, workers_private=300, worker_count=2)
    assert advice(800 * MB, 600 * MB, busy)[0] == ("use fewer loader workers (workers=0 / num_workers=0 "
                                                   "gives back the 300.0 MB they hold of their own)")
    lean = before(workers=400, workers_private=20, worker_count=2)  # shared pages: they stay when workers go
    assert not any("workers" in line for line in advice(800 * MB, 600 * MB, lean))


def test_less_data_in_memory_when_the_tensors_held_cover_the_excess() -> None:
    [data, limit] = advice(500 * MB, 400 * MB, before(process=450, data=150))
    assert data.startswith("hold less data in memory: this process holds 150.0 MB in tensors and arrays")
    assert limit == "raise memory_limit to at least 600.0 MB"  # 10% above what it needed, in 100 MB steps


def test_workers_and_data_together_when_neither_alone_is_enough() -> None:
    lines = advice(600 * MB, 400 * MB, before(data=120, workers=200, workers_private=100, worker_count=2))
    assert lines[0] == "use fewer loader workers and hold less data in memory (together 220.0 MB)"


def test_a_smaller_input_or_model_when_one_sample_is_the_excess() -> None:
    lines = advice(1000 * MB, 500 * MB, before(process=300))
    assert lines == ["lower imgsz (or the input size) or use a smaller model: one sample adds 700.0 MB",
                     "raise memory_limit to at least 1.1 GB"]
    assert advice(420 * MB, 400 * MB, before(process=410)) == ["raise memory_limit to at least 500.0 MB"]


def test_the_message_is_two_lines_and_the_event_carries_the_numbers() -> None:
    error = refuse("train", 800 * MB, 600 * MB, before(workers=400, workers_private=300, worker_count=2))
    first, second = str(error).splitlines()
    assert first == ("one sample does not fit the memory budget in training: it needs at least 800.0 MB "
                     "against a budget of 600.0 MB; already in use before the step: 700.0 MB (this process "
                     "300.0 MB, 2 loader workers 400.0 MB (300.0 MB of it their own)), and one sample adds "
                     "100.0 MB")
    assert second.startswith("to make it fit: use fewer loader workers")
    event = error.event
    assert (event.workers_private, event.sample, event.worker_count) == (300 * MB, 100 * MB, 2)
    assert error.event.advice == advice(800 * MB, 600 * MB, before(workers=400, workers_private=300,
                                                                   worker_count=2))


def test_held_bytes_counts_each_buffer_once_besides_the_model() -> None:
    model = nn.Linear(2000, 2000)  # 16 MB of weights: not data
    baseline = held_bytes(model.parameters())
    array = np.ones(30 * MB // 8)
    shared = torch.from_numpy(array)  # the same buffer as the array: counted once
    tensor = torch.ones(50 * MB // 4)
    view = tensor[: len(tensor) // 2]  # a view: no buffer of its own
    grown = held_bytes(model.parameters()) - baseline
    assert grown == pytest.approx(80 * MB, abs=2 * MB)
    del array, shared, tensor, view


class Wide(nn.Module):
    """Few weights, big activations: one sample keeps ~40 MB of float64 alive until backward."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Parameter(torch.randn(64, 40_000, dtype=torch.float64) * 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.tanh(x.unsqueeze(-1) * self.expand)
        return (z * z).mean(dim=(1, 2))


@pytest.mark.slow
def test_microbatch_one_over_a_real_host_budget_says_what_is_held_and_writes_no_fit() -> None:
    torch.manual_seed(0)
    model = Wide()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # the first optimizer imports ~70 MB of torch
    budget = host.tree_memory(fresh=True).total + 15 * MB  # far less than one sample needs
    guard = Guard(model, optimizer, memory_limit=budget, microbatch=1)
    batch = (torch.randn(4, 64, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))

    def loss_fn(net: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return ((net(b[0]) - b[1]) ** 2).mean()

    with pytest.raises(MemoryBudgetError) as err:
        guard.step(batch, loss_fn)
    first, second = str(err.value).splitlines()
    assert first.startswith("training does not fit the memory budget even at microbatch 1: the step peaked ")
    assert "already in use before the step: " in first and "one sample adds" in first
    assert second.startswith("to make it fit: lower imgsz (or the input size) or use a smaller model")
    [refusal] = [e for e in guard.events.history if e["event"] == "no_fit"]
    assert refusal["needed"] > budget and refusal["budget"] == budget
    assert refusal["sample"] > 15 * MB and refusal["counted_as"] in ("pss", "cgroup", "footprint", "rss")
