"""Which memory savers the plan takes, and the Guard trying them before it refuses microbatch 1.

On the scripted device of ``engine_fakes`` (memory exactly linear in the microbatch): a loss function whose
memory per sample depends on the savers in force, so every size tried, every event and the refusal's words
can be checked exactly. Choosing by speed is checked with measured rates given, not timed.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from engine_fakes import MB, FakeDevice, data, events
from oomguard import Guard
from oomguard.config import load_config
from oomguard.engine.plan import Fit, Plan, Row
from oomguard.engine.refusal import NoFitError, refuse
from oomguard.engine.saver_choice import Trial, fastest, fitted, measure, plan_with_savers, rate, with_tried
from oomguard.errors import MemoryBudgetError

CKPT, AMP = "activation_checkpointing", "amp"


class Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def make(per_sample: dict[tuple[str, ...], float], **kwargs: Any) -> tuple[Guard, FakeDevice, Any]:
    """A Guard on a 150 MB budget over 100 MB held; each sample takes ``per_sample[savers in force]``."""
    device = FakeDevice(base=100 * MB)
    torch.manual_seed(0)
    model = Stack()
    guard = Guard(model, torch.optim.SGD(model.parameters(), lr=0.1), memory_limit=150 * MB, device=device,
                  **kwargs)
    seen: list[tuple[tuple[str, ...], bool]] = []

    def loss_fn(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        savers = guard.savers.in_force
        seen.append((savers, torch.is_autocast_enabled("cpu")))
        device.per_sample = per_sample[savers]
        device.use(len(batch[0]))
        return ((net(batch[0]) - batch[1]) ** 2).mean()

    loss_fn.seen = seen  # type: ignore[attr-defined]
    return guard, device, loss_fn


def test_when_microbatch_one_does_not_fit_the_plan_switches_checkpointing_on() -> None:
    guard, device, loss_fn = make({(): 60 * MB, (CKPT,): 20 * MB})
    guard.step(data(8), loss_fn)
    # Without savers one sample needs 160 MB; with checkpointing 120 MB, and 2 fit the 145 MB target.
    assert guard.microbatch == 2 and guard.savers.in_force == (CKPT,)
    [saver] = events(guard, "saver")
    assert (saver["name"], saver["on"], saver["microbatch"], saver["peak"]) == (CKPT, True, 2, 120 * MB)
    assert saver["reason"].startswith("microbatch 1 peaked at ")
    assert "without it, over the budget; with activation_checkpointing microbatch 2 fits" in saver["reason"]
    [plan] = events(guard, "plan")
    assert plan["savers"] == [CKPT] and plan["microbatch"] == 2
    assert [(t["savers"], t["fits"]) for t in plan["trials"]] == [([], False), ([CKPT], True)]
    assert not events(guard, "no_fit") and not events(guard, "oom")
    # Plain: one sample failed; with checkpointing: the warm-up, sizes 1 and 2 (4 predicted over), a whole
    # step of 2s confirming the choice; the step.
    assert device.tried == [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]


def test_a_step_whose_microbatch_one_runs_out_plans_again_with_savers_and_redoes_the_batch() -> None:
    guard, _, loss_fn = make({(): 60 * MB, (CKPT,): 20 * MB}, microbatch=4)
    before = [p.detach().clone() for p in guard.model.parameters()]
    guard.step(data(4), loss_fn)
    kinds = [e["event"] for e in guard.events.history]
    assert kinds == ["oom", "shrink", "oom", "shrink", "oom", "saver", "plan"]
    assert [e["microbatch"] for e in events(guard, "oom")] == [4, 2, 1]
    assert guard.savers.in_force == (CKPT,) and guard.microbatch == 1  # a given microbatch is not raised
    assert any(not torch.equal(p, b) for p, b in zip(guard.model.parameters(), before, strict=True))


def test_mixed_precision_is_tried_only_where_needed_and_the_combination_that_fits_is_taken() -> None:
    per_sample = {(): 60 * MB, (CKPT,): 55 * MB, (AMP,): 55 * MB, (CKPT, AMP): 20 * MB}
    guard, _, loss_fn = make(per_sample, amp="auto")
    guard.step(data(8), loss_fn)
    assert guard.savers.in_force == (CKPT, AMP)
    assert [(e["name"], e["on"]) for e in events(guard, "saver")] == [(CKPT, True), (AMP, True)]
    [plan] = events(guard, "plan")
    assert [t["savers"] for t in plan["trials"]] == [[], [CKPT], [AMP], [CKPT, AMP]]
    # The trials ran under the precision they measured; the training step under the one chosen.
    assert ((AMP,), True) in loss_fn.seen and loss_fn.seen[-1] == ((CKPT, AMP), True)
    assert not [s for s, autocast in loss_fn.seen if autocast != (AMP in s)]


def test_where_nothing_fits_the_refusal_names_what_was_tried_and_the_smallest_peak() -> None:
    guard, _, loss_fn = make({(): 60 * MB, (CKPT,): 55 * MB})
    with pytest.raises(MemoryBudgetError) as err:
        guard.step(data(8), loss_fn)
    first, second = str(err.value).splitlines()
    assert first.startswith("one sample does not fit the memory budget in training: it needs at least ")
    assert first.endswith("; memory savers tried, microbatch 1 peaked with activation_checkpointing "
                          "100.0 MB; the smallest peak was 100.0 MB")
    assert second.startswith("to make it fit: ")
    [refusal] = events(guard, "no_fit")
    assert refusal["savers_tried"] == [{"savers": [], "peak": 100 * MB}, {"savers": [CKPT], "peak": 100 * MB}]
    assert guard.savers.in_force == ()  # nothing was left on


def test_with_savers_off_the_refusal_is_as_before() -> None:
    guard, _, loss_fn = make({(): 60 * MB, (CKPT,): 20 * MB}, savers="off")
    with pytest.raises(MemoryBudgetError) as err:
        guard.step(data(8), loss_fn)
    assert "memory savers" not in str(err.value) and not events(guard, "saver")
    assert "savers_tried" not in events(guard, "no_fit")[0]


# -- choosing by measured speed ------------------------------------------------------------------------


def _plan(microbatch: int, rows: list[tuple[int, float]], update_seconds: float = 0.0) -> Plan:
    table = [Row(size=size, peak=(100 + size) * MB, extra=size * MB, seconds=seconds)
             for size, seconds in rows]
    return Plan(microbatch=microbatch, eval_microbatch=None, ceiling=16, eval_ceiling=None, budget=150 * MB,
                target=145 * MB, fit=Fit(100 * MB, MB), eval_fit=None, table=table, batch=16,
                update_seconds=update_seconds)


@pytest.mark.parametrize(("ckpt_seconds", "chosen"), [(0.8, (CKPT,)), (3.0, ())])
def test_a_larger_microbatch_with_checkpointing_is_taken_only_when_it_measured_faster(
        ckpt_seconds: float, chosen: tuple[str, ...]) -> None:
    guard, _, _ = make({(): 1.0})
    plain = _plan(2, [(1, 0.15), (2, 0.2)])  # a microbatch of 2 in 0.2 s: 10 samples/s
    with_ckpt = _plan(16, [(1, 0.3), (2, 0.35), (4, 0.4), (8, 0.5), (16, ckpt_seconds)])  # 16 in 0.8 s: 20/s
    trials = [fitted((), plain)]
    got = plan_with_savers(guard.savers, lambda: with_ckpt if guard.savers.in_force else plain, trials, 16)
    assert got is (with_ckpt if chosen else plain) and guard.savers.in_force == chosen
    assert [t["rate"] for t in got.trials] == [10.0, round(16 / ckpt_seconds, 3)]
    savers = events(guard, "saver")
    if chosen:
        assert savers[0]["reason"] == ("activation_checkpointing lets microbatch 16 fit at 20 samples/s, "
                                       "faster than microbatch 2 without it (10 samples/s)")
    else:
        assert not savers


def test_a_saver_whose_optimizer_step_costs_more_than_its_larger_microbatch_saves_is_not_taken() -> None:
    # Offload: microbatch 16 fits where 8 did, each sample as fast, but its optimizer step copies the state
    # to the device and back. A step of 16 samples: 2 x 8 in 0.8 s + 0.05 s against 16 in 0.8 s + 0.5 s.
    plain = _plan(8, [(4, 0.2), (8, 0.4)], update_seconds=0.05)
    offloaded = _plan(16, [(4, 0.2), (8, 0.4), (16, 0.8)], update_seconds=0.5)
    assert rate(plain) == pytest.approx(16 / 0.85) and rate(offloaded) == pytest.approx(16 / 1.3)
    assert fastest([fitted((), plain), fitted(("optimizer_offload",), offloaded)]) == fitted((), plain)
    assert fastest([fitted((), plain), fitted(("optimizer_offload",), _plan(16, [(16, 0.7)], 0.05))]).savers


def test_fastest_prefers_the_highest_rate_then_fewer_savers() -> None:
    trials = [Trial((), False, 9), Trial((CKPT,), True, 5, 4, 10.0), Trial((AMP,), True, 5, 8, 12.0),
              Trial((CKPT, AMP), True, 3, 8, 12.0)]
    assert fastest(trials) == trials[2]
    assert fastest([Trial((CKPT,), True, 5, 1), Trial((CKPT, AMP), True, 3, 1)]) == Trial((CKPT,), True, 5, 1)
    assert fastest([Trial((), False, 9)]) is None


def test_more_savers_are_not_measured_once_fewer_fit_the_whole_batch() -> None:
    probed: list[tuple[str, ...]] = []

    def probe_with(combo: tuple[str, ...]) -> Plan:
        probed.append(combo)
        return _plan(16 if combo == (CKPT,) else 4, [(1, 0.1)])

    trials = measure([(CKPT,), (AMP,), (CKPT, AMP)], probe_with, 16, [Trial((), False, 9)])
    assert probed == [(CKPT,), (AMP,)]
    assert [t.savers for t in trials] == [(), (CKPT,), (AMP,)]


def test_a_refusal_without_savers_tried_keeps_its_words() -> None:
    refusal = refuse("train", 300 * MB, 200 * MB, None)
    assert with_tried(refusal, [Trial((), False, 300 * MB)]) is refusal
    tried = with_tried(refusal, [Trial((), False, 300 * MB), Trial((CKPT, AMP), False, 250 * MB)])
    assert isinstance(tried, NoFitError) and len(str(tried).splitlines()) == len(str(refusal).splitlines())
    assert ("memory savers tried, microbatch 1 peaked with activation_checkpointing+amp 250.0 MB; the "
            "smallest peak was 250.0 MB") in str(tried)


# -- the configuration -------------------------------------------------------------------------------


def test_config_amp_is_auto_by_default_and_savers_take_a_list() -> None:
    config = load_config(None, [])
    assert config.amp == "auto" and config.savers == "auto"
    assert load_config(None, ["amp=true"]).amp is True and load_config(None, ["amp=false"]).amp is False
    listed = load_config(None, ["savers=[optimizer_offload,activation_checkpointing]"]).savers
    assert listed == ["activation_checkpointing", "optimizer_offload"]
    assert load_config(None, ["savers=amp"]).savers == ["amp"]
    assert load_config(None, ["savers=off"]).savers == "off"


@pytest.mark.parametrize(("overrides", "message"), [
    (["savers=[recompute]"], "bad value for 'savers': expected auto, off, or a list of "
                             "activation_checkpointing, amp, optimizer_offload, got ['recompute']"),
    (["amp=false", "savers=[amp]"],
     "savers lists amp while amp=false; remove amp from savers, or set amp=auto"),
    (["amp=sometimes"], "bad value for 'amp': expected true, false or auto, got 'sometimes'"),
])
def test_bad_saver_config_is_one_line(overrides: list[str], message: str) -> None:
    from oomguard.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert str(err.value) == message


def test_a_resumed_guard_keeps_the_checkpoints_savers_and_skips_the_probe() -> None:
    per_sample = {(): 60 * MB, (CKPT,): 20 * MB}
    guard, _, loss_fn = make(per_sample)
    guard.step(data(8), loss_fn)
    resumed, device, resumed_loss = make(per_sample)
    resumed.load_state_dict(guard.state_dict())
    assert resumed.savers.in_force == (CKPT,) and resumed.microbatch == 2
    resumed.step(data(8), resumed_loss)
    assert device.tried == [2, 2, 2, 2]  # no probe: straight to the checkpoint's plan
    assert [(e["event"], e.get("name")) for e in resumed.events.history] == [("saver", CKPT)]
