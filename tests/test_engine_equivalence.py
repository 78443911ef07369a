"""A split, accumulated update equals the whole-batch update; probing leaves the run as it was."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from oomguard import Guard


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.0), nn.Linear(16, 3)).double()


def batch(n: int = 10) -> dict[str, object]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 6, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=generator)
    return {"x": x, "y": y, "names": [f"img{i}.jpg" for i in range(n)], "epoch": 3}


def loss_fn(model: nn.Module, mb: dict[str, object]) -> torch.Tensor:
    assert len(mb["names"]) == len(mb["x"]) and mb["epoch"] == 3  # type: ignore[arg-type]
    return nn.functional.cross_entropy(model(mb["x"]), mb["y"])  # type: ignore[arg-type]


OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-2),
}


def bare(name: str, steps: int) -> tuple[nn.Module, list[float]]:
    model = net()
    optimizer = OPTIMIZERS[name](model.parameters())
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(model, batch())
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return model, losses


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.mark.parametrize("name", ["sgd", "adamw"])
@pytest.mark.parametrize("microbatch", [3, 4, 10])
def test_split_update_equals_whole_batch_update(name: str, microbatch: int) -> None:
    reference, reference_losses = bare(name, steps=3)
    model = net()
    guard = Guard(model, OPTIMIZERS[name](model.parameters()), memory_limit="off", microbatch=microbatch)
    losses = [float(guard.step(batch(), loss_fn)) for _ in range(3)]
    assert losses == pytest.approx(reference_losses, rel=1e-12)
    for mine, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        assert relative_error(mine, theirs) < 1e-5
        assert relative_error(mine, theirs) < 1e-12  # float64: only rounding differs


def run(microbatch: int | str, steps: int = 3) -> tuple[nn.Module, Guard, float]:
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    guard = Guard(model, optimizer, memory_limit="2GB", microbatch=microbatch)

    def noisy_loss(net: nn.Module, mb: dict[str, object]) -> torch.Tensor:
        x = mb["x"].float() + 0.01 * torch.randn_like(mb["x"].float())  # type: ignore[union-attr]
        return nn.functional.cross_entropy(net(x), mb["y"])  # type: ignore[arg-type]

    for _ in range(steps):
        guard.step(batch(), noisy_loss)
    return model, guard, random.random() + float(np.random.rand())


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Bitwise equality needs one thread: BLAS may pick its thread count, and so its rounding, by load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_probing_does_not_change_the_run() -> None:
    auto_model, guard, auto_draw = run("auto")
    assert guard.last_plan is not None and guard.last_plan.table  # it did probe
    fixed_model, _, fixed_draw = run(guard.microbatch)
    for mine, theirs in zip(auto_model.state_dict().values(), fixed_model.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs)
    assert auto_draw == fixed_draw


def test_amp_with_a_grad_scaler_and_clipping_matches_the_same_recipe_by_hand() -> None:
    def recipe() -> tuple[nn.Module, torch.optim.Optimizer, torch.amp.GradScaler]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
        scaler = torch.amp.GradScaler("cpu", init_scale=1024)
        return model, torch.optim.SGD(model.parameters(), lr=0.5), scaler

    def amp_loss(net: nn.Module, mb: dict[str, object]) -> torch.Tensor:
        return nn.functional.cross_entropy(net(mb["x"].float()), mb["y"])  # type: ignore[union-attr,arg-type]

    reference, optimizer, scaler = recipe()
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = amp_loss(reference, batch())
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(reference.parameters(), 0.1)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    model, optimizer, scaler = recipe()
    guard = Guard(model, optimizer, memory_limit="off", microbatch=10, scaler=scaler,
                  amp_dtype=torch.bfloat16, clip_grad_norm=0.1)
    for _ in range(2):
        assert guard.step(batch(), amp_loss).dtype == torch.float32
    for mine, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs)
    assert scaler.get_scale() == 1024
