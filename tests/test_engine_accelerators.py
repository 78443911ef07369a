"""The Guard on the CUDA and MPS doubles: budgets in their terms, their OOMs, a shared card, Metal's cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from device_doubles import GIB, MIB, CudaCard, MPSChip, activations
from engine_fakes import data, events
from oomguard import Guard, host

MIN_DRIVER_LIMIT = 1 << 20


def _linear(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.05)


def test_cuda_plans_on_reserved_memory_so_a_fragmenting_allocator_never_goes_over(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 3 MiB of activations a sample take 4 MiB segments: the fraction caps reserved bytes, 33% above
    # allocated ones.
    card = CudaCard(total=4 * GIB, granule=2 * MIB).install(monkeypatch)
    model, optimizer = _linear()
    guard = Guard(model, optimizer, memory_limit=1 * GIB, device=card.device())
    assert card.fractions == [0.25]
    batch = data(512)  # 1.5 GiB of activations at once: far too big
    loss_fn = activations(card.pool, per_sample=3 * MIB)
    for _ in range(6):
        guard.step(batch, loss_fn)
    assert events(guard, "oom") == []  # planned on what the limit enforces: nothing to redo
    assert card.pool.peak_reserved <= 1 * GIB
    assert 150 <= guard.microbatch <= 256  # ~0.9 GiB / 4 MiB, not ~0.9 GiB / 3 MiB = 307


@pytest.mark.parametrize("old_spelling", [False, True])
def test_cuda_oom_redoes_the_same_batch_smaller_in_either_message_spelling(
        monkeypatch: pytest.MonkeyPatch, old_spelling: bool) -> None:
    card = CudaCard(total=4 * GIB, old_spelling=old_spelling).install(monkeypatch)
    model, optimizer = _linear()
    guard = Guard(model, optimizer, memory_limit=1 * GIB, microbatch=512, device=card.device())
    x, y = data(512)
    before = [p.detach().clone() for p in model.parameters()]
    guard.step((x, y), activations(card.pool, per_sample=4 * MIB))
    ooms = events(guard, "oom")
    assert len(ooms) == 1 and "Tried to allocate" in ooms[0]["error"]
    assert 128 <= guard.microbatch < 256  # straight to what the request says fits, not a blind halving
    # The update is the whole batch's, whatever was redone.
    reference, ref_optimizer = _linear()
    ref_optimizer.zero_grad()
    ((reference(x) - y) ** 2).mean().backward()
    ref_optimizer.step()
    for got, want, old in zip(model.parameters(), reference.parameters(), before, strict=True):
        assert not torch.equal(got, old)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_an_oom_under_the_budget_on_a_shared_card_lowers_the_working_limit_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    card = CudaCard(total=8 * GIB).install(monkeypatch)
    model, optimizer = _linear()
    guard = Guard(model, optimizer, memory_limit=4 * GIB, device=card.device())
    batch = data(1024)
    loss_fn = activations(card.pool, per_sample=4 * MIB)
    guard.step(batch, loss_fn)
    planned = guard.microbatch
    assert planned >= 800 and events(guard, "oom") == []
    card.pool.empty_cache()  # as validation or a checkpoint does; meanwhile another process takes the card:
    card.other = 6 * GIB + 512 * MIB  # 1.5 GiB are left for us
    for _ in range(4):
        guard.step(batch, loss_fn)
    assert len(events(guard, "oom")) == 1  # one redone step, not one per 10% shrink
    assert guard.budget.limit is not None and guard.budget.limit <= 1536 * MIB
    assert "another process" in guard.budget.source
    assert card.fractions[-1] == pytest.approx(guard.budget.limit / (8 * GIB))
    assert guard.microbatch * 4 * MIB <= 1536 * MIB
    assert events(guard, "oom")[0]["budget"] == guard.budget.limit


def _host_plus(extra: int) -> int:
    return host.tree_memory(fresh=True).total + extra


@pytest.mark.parametrize("spelling", ["GiB", "GB"])
def test_mps_own_out_of_memory_shrinks_and_redoes_the_batch(monkeypatch: pytest.MonkeyPatch,
                                                             spelling: str) -> None:
    chip = MPSChip(recommended=8 * GIB, spelling=spelling).install(monkeypatch)
    model, optimizer = _linear()
    budget = _host_plus(1 * GIB)
    guard = Guard(model, optimizer, memory_limit=budget, microbatch=256, device=chip.device())
    # The MPS limit is the budget less what the host holds: about 1 GiB of Metal memory.
    assert chip.fractions and 0 < chip.fractions[-1] < 0.2
    guard.step(data(256), activations(chip.pool, per_sample=8 * MIB))  # 2 GiB: over Metal's limit
    ooms = events(guard, "oom")
    assert ooms and "MPS backend out of memory" in ooms[0]["error"]
    assert guard.microbatch < 128
    assert chip.pool.peak_reserved <= chip.max_allowed()


def test_mps_counts_other_allocations_and_plans_around_them(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = []
    for other in (0, 512 * MIB):
        chip = MPSChip(recommended=16 * GIB, other=other).install(monkeypatch)
        model, optimizer = _linear()
        guard = Guard(model, optimizer, memory_limit=_host_plus(1536 * MIB), device=chip.device())
        guard.step(data(512), activations(chip.pool, per_sample=4 * MIB))
        sizes.append(guard.microbatch)
        assert events(guard, "oom") == []
    # 512 MiB of MPSGraph's memory is 128 samples fewer of 4 MiB (within the plan's rounding).
    assert sizes[0] - sizes[1] >= 64


def test_mps_keeps_metal_cache_between_steps_near_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    chip = MPSChip(recommended=16 * GIB).install(monkeypatch)
    model, optimizer = _linear()
    guard = Guard(model, optimizer, memory_limit=_host_plus(2 * GIB), microbatch=400, device=chip.device())
    batch, loss_fn = data(800), activations(chip.pool, per_sample=4 * MIB)
    guard.step(batch, loss_fn)
    assert guard.last_step_peak > 0.75 * guard.budget.limit  # near the budget, where the CPU trims its heap
    emptied = chip.pool.empty_calls
    for _ in range(5):
        guard.step(batch, loss_fn)
    assert chip.pool.empty_calls == emptied  # emptying Metal's cache every step is slow, and frees nothing


def test_mps_limit_is_never_zero_even_when_the_host_fills_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    chip = MPSChip().install(monkeypatch)
    model, optimizer = _linear()
    Guard(model, optimizer, memory_limit=1_000_000, device=chip.device())  # 1 MB: less than the host holds
    assert chip.fractions[-1] > 0
    assert chip.max_allowed() == pytest.approx(MIN_DRIVER_LIMIT)
