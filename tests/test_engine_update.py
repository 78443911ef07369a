"""An out-of-memory inside the optimizer step: redone from where it began, never unscaled or applied twice.

The CUDA double stands in for the GPU; foreach Adam's temporaries (``_foreach_sqrt`` of the second
moments, allocated after it has already bumped its step counts, moved its moments and decayed the
weights) are allocated on it, so an OOM there lands half-way through a real torch update.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from device_doubles import GIB, MIB, CudaCard, activations
from engine_fakes import data, events
from oomguard import Guard
from oomguard.errors import MemoryBudgetError

STEPS = 4


def _temporaries_on(card: CudaCard, monkeypatch: pytest.MonkeyPatch, spike_at: set[int],
                    times: int = 1) -> list[int]:
    """Adam's ``sqrt(exp_avg_sq)`` allocates on the card; on the calls in ``spike_at`` another process has
    just taken the card's free memory, for ``times`` OOMs. Returns the calls made so far (a list)."""
    real = torch._foreach_sqrt
    calls: list[int] = []

    def sqrt_on_card(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        calls.append(len(calls))
        if len(calls) - 1 in spike_at:
            card.spike(times)
        release = card.pool.hold(sum(t.numel() * t.element_size() for t in tensors))
        try:
            return real(tensors)
        finally:
            release()

    monkeypatch.setattr(torch, "_foreach_sqrt", sqrt_on_card)
    return calls


def _train(card: CudaCard, scaled: bool, limit: int = 1 * GIB) -> tuple[nn.Module, Guard]:
    """Four steps of a 1M-weight layer (its Adam temporaries: 4 MiB, more than any cached 2 MiB block)."""
    torch.manual_seed(0)
    model = nn.Linear(1024, 1024)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1, foreach=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10) if scaled else None
    guard = Guard(model, optimizer, memory_limit=limit, microbatch=16, device=card.device(), scaler=scaler,
                  clip_grad_norm=0.5 if scaled else None)
    loss_fn = activations(card.pool, per_sample=1 * MIB)
    for i in range(STEPS):
        guard.step(data(32, features=1024, seed=i), loss_fn)
    return model, guard


@pytest.mark.parametrize("scaled", [True, False], ids=["gradscaler+clip", "plain"])
def test_an_oom_in_the_first_optimizer_step_is_redone_and_equals_a_run_without_it(
        monkeypatch: pytest.MonkeyPatch, scaled: bool) -> None:
    reference, _ = _train(CudaCard(total=4 * GIB).install(monkeypatch), scaled)
    card = CudaCard(total=4 * GIB).install(monkeypatch)
    calls = _temporaries_on(card, monkeypatch, spike_at={0})
    model, guard = _train(card, scaled)
    ooms = events(guard, "oom")
    assert len(ooms) == 1 and ooms[0]["error"].startswith("optimizer step: CUDA out of memory")
    assert len(calls) == STEPS + 1  # the failed try, then one per step
    for got, want in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(got, want)  # bit for bit: nothing applied twice, nothing unscaled twice


def test_an_oom_in_a_later_step_near_the_limit_is_undone_and_retried_tensor_by_tensor(
        monkeypatch: pytest.MonkeyPatch) -> None:
    reference, _ = _train(CudaCard(total=4 * GIB).install(monkeypatch), scaled=True)
    card = CudaCard(total=4 * GIB).install(monkeypatch)
    # 32 MiB of activations and 4 MiB of temporaries under a 39 MiB limit: every update is copied first.
    # The third one meets a card taken by another process for two tries; the per-tensor step needs none.
    _temporaries_on(card, monkeypatch, spike_at={2}, times=2)
    model, guard = _train(card, scaled=True, limit=39 * MIB)
    ooms = events(guard, "oom")
    assert [e["error"].split(":")[0] for e in ooms] == ["optimizer step", "optimizer step"]
    for got, want in zip(model.parameters(), reference.parameters(), strict=True):
        # The same update up to rounding: smaller microbatches under the tight limit, per-tensor Adam once.
        torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-6)


def test_an_unforeseen_oom_part_way_through_an_update_stops_instead_of_applying_it_twice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    card = CudaCard(total=4 * GIB).install(monkeypatch)
    _temporaries_on(card, monkeypatch, spike_at={2})  # plenty of room before it: nothing was copied
    with pytest.raises(MemoryBudgetError, match="part-way through its update, which cannot be undone"):
        _train(card, scaled=False)
