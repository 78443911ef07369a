"""The epoch's predicted peak, part by part, and the caution that follows the evidence of finished epochs."""

from __future__ import annotations

import pytest
import torch

from engine_fakes import MB, FakeDevice, data, events, regression
from oomguard import Guard
from oomguard.engine.evidence import MIN_MARGIN, Caution
from oomguard.engine.plan import Curve, Row
from oomguard.engine.prediction import Prediction


def test_the_peak_is_what_is_held_plus_the_largest_phase_and_a_saver_is_a_factor() -> None:
    prediction = Prediction({"process": 300 * MB, "model": 20 * MB, "optimizer": 40 * MB, "snapshot": 60 * MB,
                             "activations": 200 * MB, "evaluation": 120 * MB, "optimizer_step": 30 * MB})
    assert prediction.held == 420 * MB and prediction.largest_phase == "activations"
    assert prediction.peak == 620 * MB
    # Activation checkpointing keeps a third of the activations: evaluation becomes the largest phase.
    saved = prediction.scaled(activations=1 / 3)
    assert saved.part("activations") == round(200 * MB / 3) and saved.peak == 540 * MB
    assert prediction.moved(15 * MB, "process", "ema").components()["ema"] == 15 * MB
    assert prediction.moved(15 * MB, "process", "ema").peak == prediction.peak
    lines = prediction.lines()
    assert lines[-1].split()[-2:] == ["620.0", "MB"]
    (largest,) = [line for line in lines if "the largest phase" in line]
    assert largest.startswith("  training step")
    assert "workers" not in prediction.components()  # parts that are 0 are left out
    with pytest.raises(ValueError, match="unknown parts"):
        Prediction({"activation": 1})


def test_caution_starts_from_the_probe_narrows_as_epochs_confirm_and_widens_after_a_miss() -> None:
    assert Caution.start(0.9).margin == pytest.approx(0.1)
    assert Caution.start(0.9, spread=0.2).margin == pytest.approx(0.3)  # scattered points: 1.5x their scatter
    caution = Caution.start(0.9)
    room = 1000 * MB
    assert not caution.update(predicted=500 * MB, measured=490 * MB, room=room)
    assert caution.margin == pytest.approx(0.05)
    caution.update(500 * MB, 510 * MB, room)  # 1% of the room over: within the margin, kept free 1.5 times
    assert caution.margin == pytest.approx(0.03) and caution.floor == pytest.approx(max(MIN_MARGIN, 0.015))
    assert caution.update(500 * MB, 700 * MB, room)  # 20% of the room over the prediction: a miss
    assert caution.margin == pytest.approx(0.3) and caution.missed == 1
    caution.update(500 * MB, 500 * MB, room)
    assert caution.margin == pytest.approx(0.3)  # never narrower than what a miss showed was needed
    restored = Caution.start(0.9)
    restored.load_state_dict(caution.state_dict())
    assert restored == caution


def test_a_whole_step_is_the_curve_at_its_size_and_scales_the_line_elsewhere() -> None:
    rows = [Row(1, 0, 11 * MB), Row(2, 0, 12 * MB), Row(4, 0, 14 * MB), Row(8, 0, 18 * MB)]
    line = Curve.from_rows(rows)
    assert (line.model.fixed, line.model.per_sample) == (10 * MB, 1 * MB) and line.growth == 1.0
    assert line.extra(12) == 22 * MB  # beyond the points: the line
    whole = Curve.from_rows([*rows, Row(8, 0, 27 * MB, whole=True)])  # a whole step took 1.5x two chunks
    assert whole.growth == pytest.approx(1.5) and whole.extra(8) == 27 * MB
    assert whole.extra(12) == 33 * MB
    # A batch of 64 at microbatch 9 or 10 runs chunks of 8: what was measured whole, 27 MB, fits 30 MB.
    assert whole.largest(100 * MB, 130 * MB, 64, total=64) == 10
    assert whole.largest(100 * MB, 125 * MB, 64, total=64) == 6  # chunks of 7 would take 25.5 MB


def make(device: FakeDevice, budget: int, **kwargs: object) -> tuple[Guard, object, object]:
    torch.manual_seed(0)
    model, loss_fn, eval_fn = regression(device)
    guard = Guard(model, torch.optim.SGD(model.parameters(), lr=0.1), memory_limit=budget, device=device,
                  **kwargs)  # type: ignore[arg-type]
    return guard, loss_fn, eval_fn


def test_confirmed_epochs_grow_the_microbatch_and_a_miss_names_the_part_that_grew_and_shrinks() -> None:
    # 100 MB held, 1 MB a training sample, 0.5 MB an evaluation sample, a 150 MB budget and a plan
    # that starts by keeping half of the 50 MB room free.
    device = FakeDevice(per_sample=1 * MB, eval_per_sample=0.5 * MB)
    guard, loss_fn, eval_fn = make(device, 150 * MB, headroom=0.5)
    plan = guard.plan(data(64), loss_fn, eval_fn)
    assert (plan.microbatch, plan.eval_microbatch, plan.margin) == (24, 50, 0.5)
    assert plan.prediction.components() == {"process": 100 * MB - 20, "model": 20, "activations": 22 * MB,
                                            "evaluation": 16 * MB}  # chunks of 22 and 32 of a batch of 64
    assert events(guard, "plan")[0]["predicted_peak"] == 122 * MB + 20

    guard.step(data(64), loss_fn)
    guard.evaluate(data(64), eval_fn)
    check = guard.epoch_end(1, 122 * MB)
    assert check is not None and check.predicted == 122 * MB + 20 and check.grew is None
    assert guard.sizer.caution.margin == 0.25  # confirmed: half the margin, and a quarter of the room more
    grown = [(e["phase"], e["from"], e["to"]) for e in events(guard, "grow")]
    assert grown == [("train", 24, 37), ("eval", 50, 64)]  # chunks of 32, and the whole batch
    assert events(guard, "grow")[0]["reason"] == "1 epoch peaked within the prediction's margin"

    device.eval_per_sample = 0.75 * MB  # evaluation takes more than the probe saw (a longer input, say)
    guard.step(data(64), loss_fn)
    guard.evaluate(data(64), eval_fn)
    check = guard.epoch_end(2, 148 * MB)
    assert check is not None and check.predicted == 132 * MB + 20
    assert check.grew == "evaluation" and check.grew_by == 16 * MB
    assert check.measured_parts == {"held": 100 * MB, "activations": 32 * MB, "evaluation": 48 * MB}
    assert guard.sizer.caution.margin == pytest.approx(1.5 * (16 * MB - 20) / (50 * MB))  # a miss
    shrunk = [(e["phase"], e["from"], e["to"]) for e in events(guard, "shrink")]
    assert shrunk == [("train", 37, 26), ("eval", 64, 52)]
    assert events(guard, "shrink")[0]["reason"] == "epoch 2 peaked at 148.0 MB, above the 132.0 MB predicted"
    assert [e["epoch"] for e in events(guard, "peak_check")] == [1, 2]


def test_the_margin_and_the_prediction_come_back_with_a_resume() -> None:
    device = FakeDevice(per_sample=1 * MB)
    guard, loss_fn, _ = make(device, 150 * MB, headroom=0.5)
    guard.plan(data(64), loss_fn)
    guard.step(data(64), loss_fn)
    guard.epoch_end(1, 122 * MB)
    resumed, _, _ = make(FakeDevice(per_sample=1 * MB), 150 * MB, headroom=0.5)
    resumed.load_state_dict(guard.state_dict())
    assert resumed.sizer.caution == guard.sizer.caution
    assert resumed.prediction == guard.prediction and resumed.prediction is not None
