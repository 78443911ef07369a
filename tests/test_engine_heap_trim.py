"""Near a host-memory budget the Guard trims the C heap only before the steps it must judge afresh.

Real CPU steps, real RSS. Trimming before every step made the CPU re-fault the
pages each step reuses (12-15% of a step in ``benchmarks/budget.py``); the
Guard trims after a plan or an evaluation, and after a step on an untrimmed
heap peaked over its target, which it then judges again on a trimmed heap
instead of shrinking for pages no tensor uses.
"""

from __future__ import annotations

import torch
from torch import nn

from oomguard import Guard, host
from oomguard.devices import release_host_memory
from oomguard.devices.cpu import CPUDevice
from wide_model import squared_error, wide_setup

MB = 1_000_000
BATCH = 32


class CountingCPU(CPUDevice):
    """The CPU, counting the heap trims asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.trims = 0

    def release_host_heap(self) -> None:
        self.trims += 1
        super().release_host_heap()


def setup() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    return wide_setup(BATCH)


loss_fn = squared_error


def test_near_a_host_budget_the_heap_is_trimmed_after_a_plan_and_an_evaluation_not_every_step() -> None:
    model, batch = setup()
    device = CountingCPU()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn(model, batch).backward()  # gradients and the optimizer's first step exist before the budget
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    release_host_memory()
    start = host.tree_memory(precise=True).total
    guard = Guard(model, optimizer, memory_limit=start + 150 * MB, device=device)
    guard.plan(batch, loss_fn)
    assert guard.last_step_peak > 0.75 * guard.budget.limit  # near the budget: where trims are considered

    steps = 12
    for _ in range(steps):
        guard.step(batch, loss_fn)
    after_plan = device.trims
    assert 1 <= after_plan < steps // 2  # the first step after the plan; then at most a few re-judged ones

    with torch.no_grad():
        guard.evaluate(batch, lambda net, part: net(part[0]))
    guard.step(batch, loss_fn)
    assert device.trims == after_plan + 1  # validation's freed pages are not the next step's peak
