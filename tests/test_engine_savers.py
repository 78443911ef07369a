"""The memory savers' mechanics: activation checkpointing is exact (dropout, BatchNorm statistics and all) on
every kind of model it finds blocks in, optimizer state lives in host memory between steps on CUDA, mixed
precision switches with its scaler, and which savers a Guard may use."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from device_doubles import CudaCard
from engine_fakes import FakeDevice
from oomguard import Guard
from oomguard.devices import MixedPrecision
from oomguard.engine.recompute import Recompute
from oomguard.errors import ConfigError
from oomguard.models import build_model

HAS_TIMM = importlib.util.find_spec("timm") is not None


class Block(nn.Module):
    """A residual block with every kind of state a recompute could get wrong: dropout draws random numbers,
    BatchNorm updates running statistics."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)
        self.norm = nn.BatchNorm1d(width)
        self.drop = nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(torch.tanh(self.up(x)))
        return x + self.drop(self.norm(h.transpose(1, 2)).transpose(1, 2))


class Stack(nn.Module):
    """No method of its own for blocks: they are found as the children of its largest nn.Sequential."""

    def __init__(self, width: int = 16, depth: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(3, width)
        self.blocks = nn.Sequential(*[Block(width) for _ in range(depth)])
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(x)).mean(dim=1)).squeeze(1)


def _stack() -> tuple[nn.Module, Any, Callable[..., torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    batch = (torch.randn(8, 32, 3, generator=generator), torch.randn(8, generator=generator))
    return Stack(), batch, lambda net, b: ((net(b[0]) - b[1]) ** 2).mean()


def _images(model: nn.Module, size: int = 32, classes: int = 3) -> tuple[nn.Module, Any, Callable[..., Any]]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(4, 3, size, size, generator=generator)
    batch = (images, torch.randint(0, classes, (4,), generator=generator))

    def loss(net: nn.Module, b: Any) -> torch.Tensor:
        out = net(b[0])
        logits = out["logits"] if isinstance(out, dict) else out
        return nn.functional.cross_entropy(logits, b[1])

    return model, batch, loss


def _builtin(name: str) -> Callable[[], tuple[nn.Module, Any, Callable[..., Any]]]:
    return lambda: _images(build_model(f"builtin:{name}", 3, 0, imgsz=32))


def _timm() -> tuple[nn.Module, Any, Callable[..., Any]]:
    import timm

    # Stochastic depth and dropout: random numbers drawn inside every checkpointed block.
    model = timm.create_model("mobilenetv3_small_050", num_classes=3, drop_rate=0.2, drop_path_rate=0.2)
    return _images(model, size=32)


MODELS = {
    "largest stack": _stack,
    "builtin:tiny": _builtin("tiny"),
    "builtin:resnet": _builtin("resnet"),
    "timm": _timm,
}
SOURCES = {
    "largest stack": "the 4 children of the largest nn.Sequential/nn.ModuleList",
    "builtin:tiny": "the 5 blocks of the built-in model",
    "builtin:resnet": "the 5 blocks of the built-in model",
    "timm": "timm's set_grad_checkpointing",
}


def _train(name: str, savers: str | list[str], steps: int = 3) -> tuple[dict[str, torch.Tensor], Guard, int]:
    """``steps`` updates in float64 through a Guard with 2-sample microbatches; the state, the Guard, and
    how many times an inner layer of the first block ran forward."""
    torch.manual_seed(0)
    model, batch, loss_fn = MODELS[name]()
    model = model.double()
    batch = tuple(t.double() if t.is_floating_point() else t for t in batch)
    calls = [0]
    # A layer inside the first checkpointed block (timm: its first stage's).
    first = model.blocks[0] if hasattr(model, "blocks") else model.checkpoint_blocks()[0]  # type: ignore[index,operator]
    inner = next(m for m in first.modules() if isinstance(m, nn.Linear | nn.Conv2d))
    inner.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    guard = Guard(model, optimizer, memory_limit="off", microbatch=2, savers=savers)
    model.train()
    for _ in range(steps):
        guard.step(batch, loss_fn)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, guard, calls[0]


@pytest.mark.parametrize("name", [n for n in MODELS if n != "timm" or HAS_TIMM])
def test_checkpointing_recomputes_each_block_and_the_state_after_each_step_is_the_same(name: str) -> None:
    plain, _, plain_calls = _train(name, "off")
    saved, guard, calls = _train(name, ["activation_checkpointing"])
    assert guard.savers.in_force == ("activation_checkpointing",)
    assert guard.savers.recompute.source == SOURCES[name]
    assert calls == 2 * plain_calls  # every block ran again in the backward: checkpointing was real
    assert plain.keys() == saved.keys()  # the module tree and its state_dict keys are untouched
    for key, want in plain.items():
        got = saved[key]
        if not want.is_floating_point():
            assert torch.equal(got, want), key  # num_batches_tracked: each forward counted once
            continue
        scale = float(want.abs().max()) or 1.0
        assert float((got - want).abs().max()) / scale < 1e-10, key  # weights, momentum, running stats


def test_without_putting_the_statistics_back_a_recompute_would_count_twice() -> None:
    # The premise of keeping_statistics: a recompute runs BatchNorm's forward again.
    torch.manual_seed(0)
    model, batch, loss_fn = _stack()
    recompute = Recompute(model)
    recompute.enable()
    norm = model.blocks[0].norm  # type: ignore[index]
    loss_fn(model, batch).backward()
    assert int(norm.num_batches_tracked) == 2  # one forward, counted twice
    loss = loss_fn(model, batch)
    assert int(norm.num_batches_tracked) == 3
    with recompute.keeping_statistics():
        loss.backward()
    assert int(norm.num_batches_tracked) == 3


def test_checkpointing_keeps_fewer_tensors_for_the_backward() -> None:
    def saved_bytes(on: bool) -> int:
        torch.manual_seed(0)
        model, batch, loss_fn = _stack()
        recompute = Recompute(model)
        if on:
            recompute.enable()
        total = [0]

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            total[0] += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss_fn(model, batch)
        return total[0]

    assert saved_bytes(True) < saved_bytes(False) / 3


def test_switching_off_restores_each_blocks_own_forward() -> None:
    model, _, _ = _stack()
    block = model.blocks[1]  # type: ignore[index]
    theirs = block.forward
    wrapper = lambda x: theirs(x)  # noqa: E731  (someone else's wrapper: kept under ours, put back)
    block.forward = wrapper
    recompute = Recompute(model)
    recompute.enable()
    assert "forward" in model.blocks[0].__dict__  # type: ignore[index]
    assert block.__dict__["forward"] is not wrapper
    recompute.disable()
    assert "forward" not in model.blocks[0].__dict__  # type: ignore[index]
    assert block.__dict__["forward"] is wrapper


def test_blocks_can_be_named_and_a_wrong_name_is_one_line() -> None:
    model, _, _ = _stack()
    recompute = Recompute(model, ["blocks.0", "blocks.2"])
    assert recompute.source == "the named blocks" and len(recompute._blocks) == 2
    with pytest.raises(ConfigError) as err:
        Guard(model, torch.optim.SGD(model.parameters(), lr=0.1), memory_limit="off", blocks=["blocks.9"])
    assert str(err.value) == ("blocks: the model has no module named 'blocks.9'; name modules as "
                              "model.named_modules() does, e.g. 'backbone.layers.0'")


def test_a_model_without_repeated_blocks_says_so() -> None:
    model = nn.Linear(4, 1)
    guard = Guard(model, torch.optim.SGD(model.parameters(), lr=0.1), memory_limit="off")
    assert not guard.savers.recompute.supported
    assert "no repeated blocks" in (guard.savers.why_not("activation_checkpointing") or "")
    assert "activation_checkpointing" not in guard.savers.possible()


# -- which savers a Guard may use ------------------------------------------------------------------------


def _guard(device: Any, **kwargs: Any) -> Guard:
    model, _, _ = _stack()
    return Guard(model, torch.optim.AdamW(model.parameters()), memory_limit=10**9, device=device, **kwargs)


def test_mixed_precision_only_where_amp_allows_it_and_only_when_needed_under_auto() -> None:
    never = _guard(FakeDevice())
    assert never.savers.why_not("amp") == "amp=false" and never.savers.candidates(needed=True) == [
        ("activation_checkpointing",)]
    auto = _guard(FakeDevice(), amp="auto")
    assert auto.savers.candidates(needed=False) == [("activation_checkpointing",)]
    assert auto.savers.candidates(needed=True) == [
        ("activation_checkpointing",), ("amp",), ("activation_checkpointing", "amp")]  # exact ones first
    always = _guard(FakeDevice(), amp=True)
    assert always.savers.in_force == ("amp",) and always.runner.amp_dtype == torch.bfloat16
    assert always.savers.candidates(needed=True) == [("activation_checkpointing", "amp")]


def test_optimizer_offload_only_where_the_device_is_not_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "host memory already on cpu" in (_guard("cpu").savers.why_not("optimizer_offload") or "")
    card = CudaCard().install(monkeypatch)
    guard = _guard(card.device())
    assert guard.savers.possible() == ("activation_checkpointing", "optimizer_offload")


def test_a_list_is_on_from_the_start_and_nothing_else_is_tried() -> None:
    guard = _guard(FakeDevice(), savers=["activation_checkpointing"], amp="auto")
    assert guard.savers.in_force == ("activation_checkpointing",)
    assert guard.savers.candidates(needed=True) == []
    [event] = [e for e in guard.events.history if e["event"] == "saver"]
    assert (event["name"], event["on"], event["reason"]) == ("activation_checkpointing", True,
                                                             "savers=activation_checkpointing")
    off = _guard(FakeDevice(), savers="off", amp="auto")
    assert off.savers.candidates(needed=True) == [] and off.savers.possible() == ()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"savers": "sometimes"}, "savers='sometimes': unknown saver 'sometimes'; expected 'auto', 'off' or a "
                              "list of activation_checkpointing, amp, optimizer_offload"),
    ({"savers": ["amp"]}, "savers lists amp while amp=False; remove amp from savers, or pass amp='auto'"),
    ({"amp": "yes"}, "amp='yes': expected True, False or 'auto' (mixed precision only where microbatch 1 "
                     "does not fit without a memory saver)"),
])
def test_bad_saver_arguments_are_one_line(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _guard(FakeDevice(), **kwargs)
    assert str(err.value) == message


# -- optimizer state in host memory (CUDA, modelled) ----------------------------------------------------


def _adam_run(monkeypatch: pytest.MonkeyPatch, savers: str | list[str], fail_once: bool = False
              ) -> tuple[dict[str, torch.Tensor], Guard, list[bool]]:
    card = CudaCard().install(monkeypatch)
    torch.manual_seed(0)
    model, batch, loss_fn = _stack()
    model = model.double()
    batch = tuple(t.double() for t in batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    guard = Guard(model, optimizer, memory_limit=10**9, microbatch=4, device=card.device(), savers=savers)
    fetched: list[bool] = []  # during each optimizer step: the state is not the host buffers
    failures = [fail_once]

    def during_step(opt: torch.optim.Optimizer, *_: Any) -> None:
        buffers = guard.savers.offload._host
        fetched.append(all(state[k] is not buffers.get(id(p), {}).get(k)
                           for p, state in opt.state.items() for k in state if k != "step"))
        if failures[0]:
            failures[0] = False
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")

    optimizer.register_step_pre_hook(during_step)
    for _ in range(3):
        guard.step(batch, loss_fn)
    return {k: v.clone() for k, v in model.state_dict().items()}, guard, fetched


def _host_buffers(guard: Guard) -> bool:
    buffers = guard.savers.offload._host
    states = guard.optimizer.state.items()
    return bool(buffers) and all(state[k] is buffers[id(p)][k] for p, state in states for k in state
                                 if k != "step")


def test_optimizer_state_lives_in_host_buffers_between_steps_and_the_update_is_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plain, _, _ = _adam_run(monkeypatch, "off")
    offloaded, guard, fetched = _adam_run(monkeypatch, ["optimizer_offload"], fail_once=True)
    assert guard.savers.in_force == ("optimizer_offload",)
    assert _host_buffers(guard)  # between steps: every state tensor is its host buffer
    assert fetched[1:] == [True] * (len(fetched) - 1)  # during each step: copies on the device
    assert [e["phase"] for e in guard.events.history if e["event"] == "oom"] == ["train"]  # redone once
    for key, want in plain.items():
        assert torch.equal(offloaded[key], want), key
    # A resume (or the probe putting the state back) loads the state onto the device: back to the host.
    guard.optimizer.load_state_dict(guard.optimizer.state_dict())
    assert _host_buffers(guard)
    guard.savers.offload.disable()  # off: the state back on the device, the host buffers let go
    assert not guard.savers.offload._host and not _host_buffers(guard)


# -- mixed precision, switched by the savers -----------------------------------------------------------


class ScaledDevice(FakeDevice):
    """Mixed precision as on CUDA (float16 with a GradScaler), with a scaler that works on the CPU."""

    def mixed_precision(self) -> MixedPrecision:
        return MixedPrecision(torch.float16, scaler=True)


def test_amp_switches_precision_and_a_scaler_it_made_is_checkpointed_with_the_plan() -> None:
    guard = _guard(ScaledDevice(), amp="auto")
    guard.savers.switch(("amp",), "test")
    assert guard.runner.amp_dtype == torch.float16 and guard.runner.scaler is guard.runner.update.scaler
    scaler = guard.runner.scaler
    assert scaler is not None
    scaler.scale(torch.ones(1))
    scaler.update(new_scale=512.0)
    state = guard.state_dict()
    assert state["saver_amp"] == 1 and state["saver_scaler_scale"] == 512.0

    resumed = _guard(ScaledDevice(), amp="auto")
    resumed.load_state_dict(state)
    assert resumed.savers.in_force == ("amp",) and resumed.runner.scaler is not None
    assert resumed.runner.scaler.get_scale() == 512.0
    [event] = [e for e in resumed.events.history if e["event"] == "saver"]
    assert event["reason"] == "resumed with the savers of the checkpoint"
    guard.savers.switch((), "test")
    assert guard.runner.amp_dtype is None and guard.runner.scaler is None


def test_a_checkpoints_savers_that_the_config_no_longer_allows_stay_off() -> None:
    guard = _guard(FakeDevice(), amp="auto")
    guard.savers.switch(("activation_checkpointing", "amp"), "test")
    strict = _guard(FakeDevice(), amp=False)
    strict.load_state_dict(guard.state_dict())
    assert strict.savers.in_force == ("activation_checkpointing",)
