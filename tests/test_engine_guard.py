"""The Guard on a scripted device: the exact sizes it tries after OOMs, the error at 1, grow-back, eval."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from engine_fakes import MB, FakeDevice, data, events, regression
from oomguard import Guard
from oomguard.engine.recovery import MemoryModel
from oomguard.engine.sizing import Phase, Sizer
from oomguard.errors import ConfigError, MemoryBudgetError
from oomguard.events import EventLog, read_events
from oomguard.memory.budget import Budget
from oomguard.memory.meter import MemoryMeter


def make(device: FakeDevice, budget: int = 150 * MB, **kwargs: object) -> tuple[Guard, object, object]:
    torch.manual_seed(0)
    model, loss_fn, eval_fn = regression(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = Guard(model, optimizer, memory_limit=budget, device=device, **kwargs)  # type: ignore[arg-type]
    return guard, loss_fn, eval_fn


def test_oom_without_any_measurement_halves_and_redoes_the_same_batch() -> None:
    # 2 MB per sample over 100 MB against a 150 MB limit. The OOM names no request and nothing was
    # probed: each failure only proves "this size needed more than the limit", so it halves.
    device = FakeDevice(per_sample=2 * MB)
    guard, loss_fn, _ = make(device, microbatch=64)
    loss = guard.step(data(64), loss_fn)
    assert device.tried == [64, 32, 16, 16, 16, 16]
    assert guard.microbatch == 16
    assert [(e["from"], e["to"]) for e in events(guard, "shrink")] == [(64, 32), (32, 16)]
    assert [e["microbatch"] for e in events(guard, "oom")] == [64, 32]
    assert all(e["phase"] == "train" and e["budget"] == 150 * MB for e in events(guard, "oom"))
    assert loss.requires_grad is False and loss.dim() == 0


def test_shrink_uses_the_failed_request_to_go_straight_to_the_largest_size_that_fits() -> None:
    device = FakeDevice(per_sample=2 * MB, tell_request=True)
    guard, loss_fn, _ = make(device, microbatch=64)
    guard.step(data(64), loss_fn)
    # Needed 228 MB at 64: 2 MB a sample; 90% of the 50 MB room (145 MB) holds 22.
    assert guard.microbatch == 22
    assert device.tried == [64, 22, 21, 21]
    shrink = events(guard, "shrink")[0]
    assert shrink["predicted"] == pytest.approx(144 * MB, rel=1e-3)


def test_a_step_that_fits_but_peaks_over_the_target_makes_the_next_ones_smaller() -> None:
    device = FakeDevice(per_sample=1 * MB)
    guard, loss_fn, _ = make(device, microbatch="auto")
    assert guard.plan(data(64), loss_fn).microbatch == 44
    device.per_sample = 1.55 * MB  # memory per sample grew (a longer sequence, a bigger cache)
    guard.step(data(64), loss_fn)  # 32 + 32: 149.6 MB, under the budget, over the 145 MB target
    assert not events(guard, "oom")
    shrink = events(guard, "shrink")[0]
    assert (shrink["from"], shrink["to"]) == (44, 29)
    assert shrink["reason"] == "step peaked at 149.6 MB, above the 145.0 MB target"


def test_microbatch_one_still_out_of_memory_raises_what_to_change() -> None:
    device = FakeDevice(per_sample=60 * MB)
    guard, loss_fn, _ = make(device, microbatch=64)
    with pytest.raises(MemoryBudgetError) as err:
        guard.step(data(64), loss_fn)
    assert device.tried == [64, 32, 16, 8, 4, 2, 1]
    assert [e["to"] for e in events(guard, "shrink")] == [32, 16, 8, 4, 2, 1]
    assert str(err.value) == (
        "training does not fit the memory budget even at microbatch 1: the step peaked at 100.0 MB against "
        "150.0 MB (memory_limit); raise memory_limit, lower imgsz (or the input size), or use a smaller model"
    )


def test_failed_attempt_leaves_weights_and_optimizer_untouched() -> None:
    device = FakeDevice(per_sample=2 * MB)
    guard, loss_fn, _ = make(device, microbatch=64)
    before = {k: v.clone() for k, v in guard.model.state_dict().items()}
    x, y = data(64)
    guard.step((x, y), loss_fn)
    # The same update, computed by hand on the whole batch.
    reference = torch.nn.Linear(4, 1)
    reference.load_state_dict(before)
    ((reference(x) - y) ** 2).mean().backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= 0.1 * p.grad
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(guard.model.state_dict()[name], value, rtol=1e-6, atol=1e-7)


def test_grow_back_after_a_quiet_stretch_stops_at_the_ceiling() -> None:
    device = FakeDevice(per_sample=0.5 * MB)
    device.pressure, device.fail_once = 40 * MB, True  # a passing spike makes the first step fail
    guard, loss_fn, _ = make(device, microbatch=64, grow_after=3)
    sizes = []
    for _ in range(6):
        guard.step(data(64), loss_fn)
        sizes.append(guard.microbatch)
    # After the spike: 32; three quiet steps; their slope says 89 would fit, the ceiling is 64.
    assert sizes == [32, 32, 64, 64, 64, 64]
    assert [(e["from"], e["to"]) for e in events(guard, "grow")] == [(32, 64)]
    assert max(device.tried) == 64
    assert guard.grow_after == 6


def test_grow_back_never_exceeds_an_explicit_ceiling() -> None:
    device = FakeDevice(per_sample=0.5 * MB)
    guard, loss_fn, _ = make(device, microbatch="auto", ceiling=48, grow_after=2)
    assert guard.plan(data(64), loss_fn).microbatch == 48  # 89 would fit: the ceiling decides
    device.pressure, device.fail_once = 40 * MB, True
    sizes = []
    for _ in range(5):
        guard.step(data(64), loss_fn)
        sizes.append(guard.microbatch)
    assert sizes == [28, 48, 48, 48, 48]
    assert [(e["from"], e["to"]) for e in events(guard, "grow")] == [(28, 48)]
    assert max(device.tried) <= 48


def test_eval_oom_shrinks_the_eval_microbatch_only_and_keeps_finished_outputs() -> None:
    device = FakeDevice(per_sample=1 * MB, eval_per_sample=1 * MB)
    guard, loss_fn, eval_fn = make(device, microbatch=16, eval_microbatch=16)
    x, y = data(64)
    device.pressure, device.fail_once = 0, False
    calls = []

    def spiky(net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        calls.append(len(batch[0]))
        if len(calls) == 3:  # a spike during the third microbatch
            device.pressure, device.fail_once = 40 * MB, True
        return eval_fn(net, batch)

    outputs = guard.evaluate((x, y), spiky)
    # 16, 16, then the third fails (no measurement: half): the remaining 32 samples go by 8.
    assert device.eval_tried == [16, 16, 16, 8, 8, 8, 8]
    assert guard.eval_microbatch == 8 and guard.microbatch == 16
    with torch.no_grad():
        torch.testing.assert_close(outputs, guard.model(x))
    assert [(e["phase"], e["from"], e["to"]) for e in events(guard, "shrink")] == [("eval", 16, 8)]
    guard.step((x, y), loss_fn)
    assert device.tried == [16, 16, 16, 16]


def test_evaluate_joins_dict_outputs_as_detached_cpu_tensors() -> None:
    device = FakeDevice()
    guard, _, eval_fn = make(device, microbatch=8, eval_microbatch=3)
    x, y = data(10)

    def fn(net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"out": eval_fn(net, batch), "y": batch[1]}

    outputs = guard.evaluate((x, y), fn)
    assert device.eval_tried == [3, 3, 2, 2]
    assert set(outputs) == {"out", "y"} and not outputs["out"].requires_grad
    torch.testing.assert_close(outputs["y"], y)


def test_state_dict_round_trip_skips_the_probe_on_resume() -> None:
    device = FakeDevice(per_sample=2 * MB, tell_request=True)
    guard, loss_fn, _ = make(device, microbatch="auto")
    guard.step(data(64), loss_fn)
    state = guard.state_dict()
    assert all(isinstance(value, int | float) for value in state.values())
    resumed, _, _ = make(FakeDevice(per_sample=2 * MB), microbatch="auto")
    resumed.load_state_dict(state)
    assert resumed.microbatch == guard.microbatch
    assert resumed.state_dict() == state


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"microbatch": 0}, "microbatch=0: expected 'auto' or a positive integer; pass e.g. microbatch=8"),
    ({"memory_limit": "lots"}, "memory_limit='lots': expected auto, off, a size like 2GB or a fraction"),
    ({"headroom": 1.5}, "headroom=1.5: expected a fraction in (0, 1], e.g. 0.9"),
])
def test_bad_arguments_say_what_to_pass(kwargs: dict[str, object], message: str) -> None:
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ConfigError, match=re.escape(message)):
        Guard(model, torch.optim.SGD(model.parameters(), lr=0.1), device=FakeDevice(), **kwargs)  # type: ignore


def test_calibration_after_a_plan_grows_to_what_the_first_steps_show() -> None:
    # A plan on host memory starts cautious (1.5x the probed slope); two quiet steps at 1 MB a
    # sample show that 90% of the 50 MB room holds 45.
    device = FakeDevice()
    events_log = EventLog()
    train = Phase("train", 20, 64, MemoryModel(per_sample=1.5 * MB, measured=1 * MB))
    sizer = Sizer(train, Phase("eval", 0, None), Budget(150 * MB, "test"), device, MemoryMeter(device),
                  events_log, headroom=0.9, grow_after=50)
    sizer.calibrate(train)
    sizer.fitted(train, 20, 120 * MB)
    assert train.size == 20
    sizer.fitted(train, 20, 120 * MB)
    assert train.size == 45 and sizer.grow_after == 50
    assert events_log.history[-1]["reason"] == "the first steps peaked under the plan"
    for _ in range(49):  # then only every grow_after steps
        sizer.fitted(train, 45, 145 * MB)
    assert len(events_log.history) == 1


class HostMemory(FakeDevice):
    unified = True  # memory shared with the host: a wrong guess is real memory taken


class Held:
    """Stands in for the meter: what the process holds between steps."""

    def current(self) -> int:
        return 100 * MB


def test_on_host_memory_growth_goes_back_only_to_a_size_that_ran_quietly() -> None:
    train = Phase("train", 20, 64, MemoryModel(per_sample=1.5 * MB, measured=1 * MB))
    sizer = Sizer(train, Phase("eval", 0, None), Budget(150 * MB, "test"), HostMemory(), Held(),  # type: ignore[arg-type]
                  EventLog(), headroom=0.9, grow_after=3)
    sizer.calibrate(train)
    for _ in range(2):
        sizer.fitted(train, 20, 120 * MB)
    assert train.size == 20 and train.safe == 20  # a GPU would have grown to 45 here
    sizer.failed(train, 20, 170 * MB, "oomguard: step peak over the budget")
    assert train.size == 12
    for _ in range(3):
        sizer.fitted(train, 12, 112 * MB)
    assert train.size == 20


def test_a_run_dir_gets_the_events_and_the_memory_timeline(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Guard(model, optimizer, memory_limit="0.8", run_dir=tmp_path) as guard:
        guard.step(data(16), lambda net, b: ((net(b[0]) - b[1]) ** 2).mean())
        assert guard.sampler is not None and guard.budget.source.startswith("0.8 of")
    plan = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "plan"]
    assert len(plan) == 1 and plan[0]["microbatch"] == 16
    header = (tmp_path / "memory.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["time", "process_rss", "children_rss"] and "step" in header
