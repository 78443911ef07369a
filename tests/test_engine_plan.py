"""The probe/planner on a scripted device: the sizes it measures, where it stops, what it chooses."""

from __future__ import annotations

import json

import pytest
import torch

from engine_fakes import MB, FakeDevice, data, events, regression
from oomguard import Guard
from oomguard.engine.probe import grad_bytes, probe_sizes


def make(device: FakeDevice, budget: int, **kwargs: object) -> tuple[Guard, object, object]:
    torch.manual_seed(0)
    model, loss_fn, eval_fn = regression(device)
    guard = Guard(model, torch.optim.SGD(model.parameters(), lr=0.1), memory_limit=budget, device=device,
                  **kwargs)  # type: ignore[arg-type]
    return guard, loss_fn, eval_fn


def test_probe_sizes_double_up_to_the_ceiling() -> None:
    assert probe_sizes(64) == [1, 2, 4, 8, 16, 32, 64]
    assert probe_sizes(10) == [1, 2, 4, 8, 10]
    assert probe_sizes(1) == [1]


def test_plan_stops_before_a_size_predicted_over_target_and_takes_the_largest_that_fits() -> None:
    # 100 MB held, 5 MB per step, 1 MB per sample: 90% of the 50 MB room is 145 MB, which leaves
    # 40 MB for samples, less the 20 B of gradients: 39.
    device = FakeDevice(per_sample=1 * MB, fixed=5 * MB)
    guard, loss_fn, _ = make(device, 150 * MB)
    plan = guard.plan(data(64), loss_fn)
    assert [row.size for row in plan.table] == [1, 2, 4, 8, 16, 32]  # 64 would need 169 MB > 145 MB
    assert [row.peak for row in plan.table] == [(105 + size) * MB for size in (1, 2, 4, 8, 16, 32)]
    assert plan.microbatch == 39 and plan.ceiling == 64 and guard.microbatch == 39
    assert plan.fit.b == pytest.approx(1 * MB)
    assert plan.fit.a == pytest.approx(105 * MB + grad_bytes(guard.model))
    event = events(guard, "plan")[0]
    assert event["microbatch"] == 39 and event["budget"] == 150 * MB and event["table"][0]["size"] == 1
    assert event["fit"] == {"a": 105 * MB + 20, "b": 1 * MB}


def test_plan_stays_below_a_probed_size_that_ran_out_of_memory() -> None:
    class Jumpy(FakeDevice):
        def use(self, n: int, evaluating: bool = False) -> None:
            self.per_sample = 1 * MB if n <= 16 else 3 * MB  # memory grows faster than linear
            super().use(n, evaluating)

    device = Jumpy(fixed=5 * MB)
    guard, loss_fn, _ = make(device, 200 * MB)
    plan = guard.plan(data(64), loss_fn)
    assert [(row.size, row.ok, row.whole) for row in plan.table][-3:] == [
        (16, True, False), (32, False, False), (22, True, True)]  # 31 splits 64 into chunks of 22
    assert plan.microbatch == 31  # the line says 84 would fit; 32 was measured not to
    assert device.tried[-4:] == [32, 22, 21, 21]  # the failed size, then the whole step that confirms 31
    assert plan.prediction.part("activations") == 5 * MB + 66 * MB  # the whole step measured


def test_eval_plan_is_separate_and_the_first_step_uses_the_plan() -> None:
    device = FakeDevice(per_sample=2 * MB, eval_per_sample=0.5 * MB)
    guard, loss_fn, eval_fn = make(device, 150 * MB)
    plan = guard.plan(data(64), loss_fn, eval_fn)
    assert plan.microbatch == 22 and plan.eval_microbatch == 64
    assert guard.eval_microbatch == 64
    device.tried.clear()
    guard.step(data(64), loss_fn)
    assert device.tried == [22, 21, 21]
    assert len(events(guard, "plan")) == 1  # no second probe


def test_probe_result_prints_a_table_and_one_json_object() -> None:
    device = FakeDevice(per_sample=2 * MB)
    guard, loss_fn, eval_fn = make(device, 150 * MB)
    result = guard.probe(data(64), loss_fn, eval_fn)
    lines = result.table().splitlines()
    assert lines[0].split() == ["phase", "size", "peak", "verdict"]
    assert lines[1].split() == ["train", "1", "102.0", "MB", "fits"]
    (plan_line,) = [line for line in lines if line.startswith("plan: ")]  # then the predicted peak
    assert plan_line.startswith("plan: device cpu, budget 150.0 MB (memory_limit), microbatch 22 of 64")
    assert lines[-1].split()[:3] == ["predicted", "epoch", "peak"]
    loaded = json.loads(result.to_json())
    assert loaded["microbatch"] == 22 and loaded["device"] == "cpu"
    assert [row["size"] for row in loaded["table"]] == [1, 2, 4, 8, 16, 22]  # 22: a whole step confirms
    assert loaded["table"][-1]["whole"] is True and "whole" not in loaded["table"][0]
    assert loaded["predicted_peak"] == 100 * MB + 44 * MB  # the whole step at 22 measured
    assert loaded["components"]["activations"] == 44 * MB
