"""What a checkpoint holds: every piece of training state and every generator, back exactly."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from oomguard.checkpoint import (
    CheckpointError,
    CheckpointStore,
    capture_rng,
    capture_state,
    plain_config,
    restore_rng,
    restore_state,
    snapshot,
    snapshot_bytes,
)
from oomguard.config import Config
from oomguard.devices import get_device


def build(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, object, torch.amp.GradScaler]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.3),
                                torch.nn.Linear(8, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=20)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    return model, optimizer, scheduler, scaler


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: object,
               scaler: torch.amp.GradScaler) -> None:
    inputs = torch.randn(4, 6)  # drawn from the global generator, like dropout
    loss = model(inputs).square().mean()
    optimizer.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()


def draws() -> tuple[float, float, float, float, torch.Tensor]:
    python = random.random(), random.gauss(0, 1)
    return *python, float(np.random.rand()), float(np.random.randn()), torch.rand(3)


def test_round_trip_continues_training_bit_identically(tmp_path: Path) -> None:
    device = get_device("cpu")
    model, optimizer, scheduler, scaler = build(seed=0)
    for _ in range(3):
        train_step(model, optimizer, scheduler, scaler)
    random.gauss(0, 1), np.random.randn()  # leave cached Gaussians in both generators
    sampler = {"seed": 7, "epoch": 1, "order": torch.randperm(10), "position": 3}
    state = capture_state(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, epoch=1,
                          step=3, epoch_step=2, sampler=sampler, plan={"microbatch": 2, "eval_microbatch": 8},
                          best_metric=0.25, config=Config(), device=device, extra={"ema": torch.ones(2)})
    store = CheckpointStore(tmp_path / "weights", console=lambda message: None)
    assert store.save(snapshot(state), step=3).ok
    expected_draws = draws()
    for _ in range(2):
        train_step(model, optimizer, scheduler, scaler)
    expected_params = [p.detach().clone() for p in model.parameters()]

    model2, optimizer2, scheduler2, scaler2 = build(seed=1)
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    checkpoint, _path = store.load_latest()
    point = restore_state(checkpoint, model=model2, optimizer=optimizer2, scheduler=scheduler2,
                          scaler=scaler2, device=device)
    got = draws()
    assert got[:4] == expected_draws[:4] and torch.equal(got[4], expected_draws[4])
    for _ in range(2):
        train_step(model2, optimizer2, scheduler2, scaler2)
    for param, expected in zip(model2.parameters(), expected_params, strict=True):
        assert torch.equal(param, expected)
    assert scheduler2.get_last_lr() == scheduler.get_last_lr()
    assert scaler2.state_dict() == scaler.state_dict()
    assert (point.epoch, point.step, point.epoch_step) == (1, 3, 2)
    assert point.plan == {"microbatch": 2, "eval_microbatch": 8} and point.best_metric == 0.25
    assert point.sampler["seed"] == 7 and torch.equal(point.sampler["order"], sampler["order"])
    assert point.config == Config().model_dump(mode="json")
    assert torch.equal(point.extra["ema"], torch.ones(2)) and point.device_rng_restored


def test_checkpoint_file_loads_weights_only_with_the_state_dict(tmp_path: Path) -> None:
    model, optimizer, scheduler, scaler = build(seed=0)
    train_step(model, optimizer, scheduler, scaler)
    state = capture_state(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, epoch=0,
                          step=1, config=Config())
    store = CheckpointStore(tmp_path / "weights", console=lambda message: None)
    store.save(snapshot(state), 1, best=True)
    for name in ("last.pt", "best.pt"):
        loaded = torch.load(tmp_path / "weights" / name, weights_only=True)
        fresh = build(seed=5)[0]
        fresh.load_state_dict(loaded["model"])
        for key, value in model.state_dict().items():
            assert torch.equal(loaded["model"][key], value)


def test_device_generator_of_another_backend_is_skipped_not_forced() -> None:
    state = capture_rng(None)
    state["device"] = {"kind": "cuda", "state": torch.zeros(16, dtype=torch.uint8)}
    torch.manual_seed(3)
    assert restore_rng(state, get_device("cpu")) is False
    assert torch.equal(torch.get_rng_state(), state["torch"])  # the host generators still came back


def test_restoring_into_a_different_model_is_a_one_line_error() -> None:
    model, optimizer, _scheduler, _scaler = build(seed=0)
    state = capture_state(model=model, optimizer=optimizer, epoch=0, step=0)
    other = torch.nn.Linear(6, 3)
    with pytest.raises(CheckpointError) as caught:
        restore_state(state, model=other)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("the checkpoint's model state does not fit this model (")
    assert message.endswith("resume with the same model and optimizer settings as the run, "
                            "or start a new run")


def test_snapshot_is_a_private_cpu_copy_that_keeps_sharing() -> None:
    weight = torch.ones(4, 4)
    state = {"model": {"a": weight, "tied": weight, "row": weight[1]}, "n": np.int64(5), "t": (1, [2.0])}
    copy = snapshot(state)
    weight.add_(1)
    assert torch.equal(copy["model"]["a"], torch.ones(4, 4))
    assert copy["model"]["a"] is copy["model"]["tied"]
    assert copy["model"]["row"].untyped_storage().nbytes() == 16  # the view alone, not its base
    assert type(copy["n"]) is int and copy["t"] == (1, [2.0])
    assert snapshot_bytes(state) == 64 + 16 and snapshot_bytes(copy) == 64 + 16


def test_snapshot_refuses_what_weights_only_cannot_read_and_says_where() -> None:
    with pytest.raises(TypeError) as caught:
        snapshot({"sampler": {"order": np.arange(3)}})
    assert str(caught.value).startswith("checkpoint state['sampler']['order'] is a numpy.ndarray, which "
                                        "torch.load(weights_only=True) cannot read")
    with pytest.raises(TypeError, match=r"state\['extra'\]\['best'\] is a numpy.float64"):
        capture_state(model=torch.nn.Linear(1, 1), optimizer=torch.optim.SGD([torch.zeros(1)], lr=0.1),
                      epoch=0, step=0, extra={"best": np.float64(1.0)})


def test_plain_config_holds_only_primitives() -> None:
    assert plain_config({"data": Path("/d"), "sizes": (1, 2), "nested": {"x": None}}) == {
        "data": "/d", "sizes": [1, 2], "nested": {"x": None},
    }
    with pytest.raises(TypeError, match=r"config\.bad is a object"):
        plain_config({"bad": object()})


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_state_snapshots_to_cpu_and_cuda_generator_round_trips() -> None:
    device = get_device("cuda")
    state = {"w": torch.ones(3, device="cuda")}
    copy = snapshot(state)
    assert copy["w"].device.type == "cpu"
    rng = capture_rng(device)
    expected = torch.rand(5, device="cuda")
    torch.cuda.manual_seed(123)
    assert restore_rng(rng, device) is True
    assert torch.equal(torch.rand(5, device="cuda"), expected)
