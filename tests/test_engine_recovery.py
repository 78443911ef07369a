"""The memory model's arithmetic: shrink after a failure, grow after a quiet stretch, the planner's choice."""

from __future__ import annotations

import pytest

from oomguard.engine.plan import Row, choose, fit_line, model_from_rows
from oomguard.engine.recovery import MemoryModel, failure_bound, grow, requested_bytes, shrink, target_bytes

MB = 1_000_000


def test_shrink_goes_to_the_largest_size_the_failure_allows_not_half() -> None:
    model = MemoryModel(fixed=10 * MB, per_sample=0)
    # 32 samples peaked at 500 MB from a 100 MB start: 12.19 MB a sample, 0.9 * 400 MB fits 20.
    new, raised = shrink(model, 32, 100 * MB, 500 * MB, 360 * MB)
    assert new == 20
    assert raised.per_sample == pytest.approx(390 * MB / 32)
    assert raised.predict(100 * MB, 20) <= 360 * MB


def test_shrink_never_returns_the_failed_size_or_zero() -> None:
    model = MemoryModel(fixed=0, per_sample=1 * MB)
    assert shrink(model, 8, 0, 8 * MB + 1, 100 * MB)[0] == 7  # the model says 100 fit; 8 just failed
    assert shrink(model, 8, 90 * MB, 200 * MB, 50 * MB)[0] == 1  # nothing fits: still try one sample


def test_shrink_without_a_measurement_halves() -> None:
    assert shrink(MemoryModel(), 9, 100 * MB, None, 90 * MB)[0] == 4


def test_failure_bound_uses_the_request_named_in_the_message() -> None:
    message = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.9 GiB total)"
    assert requested_bytes(message) == 2 * 2**30
    assert requested_bytes("MPS backend out of memory (MPS allocated: 1 GB)") is None
    assert failure_bound(3 * MB, 10 * MB, "Tried to allocate 20.00 MiB") == (3 * MB + 20 * 2**20, True)
    assert failure_bound(12 * MB, 10 * MB, "oomguard: step peak over the budget") == (12 * MB, True)
    assert failure_bound(3 * MB, 10 * MB, "CUDA out of memory.") == (10 * MB, False)  # only the limit
    assert failure_bound(None, None, "") == (None, False)


def test_an_unmeasured_failure_without_a_probed_slope_goes_no_higher_than_half() -> None:
    # The limit alone says 8 samples needed more than 50 MB over the start: 6 "fit" at 90%; half is 4.
    assert shrink(MemoryModel(), 8, 100 * MB, 150 * MB, 145 * MB, measured=False)[0] == 4
    probed = MemoryModel(per_sample=1 * MB, measured=1 * MB)
    assert shrink(probed, 8, 100 * MB, 150 * MB, 145 * MB, measured=False)[0] == 7


def test_target_leaves_headroom_of_the_room_not_of_the_whole_budget() -> None:
    assert target_bytes(100 * MB, 150 * MB, 0.9) == pytest.approx(145 * MB)
    assert target_bytes(100 * MB, 150 * MB, 0.9, reserve=10 * MB) == pytest.approx(136 * MB)


def test_grow_trusts_the_quiet_steps_slope_and_stops_at_the_ceiling() -> None:
    model = MemoryModel(fixed=0, per_sample=4 * MB, measured=1 * MB)
    # A quiet step of 10 peaked at 110 MB from 100 MB: 1 MB a sample, 35 would fit, the ceiling is 24.
    new, trial = grow(model, 10, 100 * MB, 110 * MB, 135 * MB, ceiling=24)
    assert new == 24 and trial.per_sample == 1 * MB
    assert grow(model, 10, 100 * MB, 110 * MB, 135 * MB, ceiling=64)[0] == 35
    assert grow(model, 10, 100 * MB, 134 * MB, 135 * MB, ceiling=64)[0] == 10  # no room: stays


def test_fit_line_lies_on_or_above_every_point() -> None:
    points = [(1, 12 * MB), (2, 13 * MB), (4, 16 * MB), (8, 19 * MB)]
    intercept, slope = fit_line(points)
    assert all(intercept + slope * size >= value - 1 for size, value in points)
    assert slope == pytest.approx(1 * MB, rel=0.1)
    assert fit_line([(4, 8 * MB)]) == (0.0, 2 * MB)


def test_choose_stays_below_a_probed_size_that_failed() -> None:
    rows = [Row(1, 0, 11 * MB), Row(2, 0, 12 * MB), Row(4, 0, 14 * MB), Row(8, 0, 50 * MB, ok=False)]
    model = model_from_rows(rows)
    assert model.per_sample == pytest.approx(1 * MB) and model.fixed == pytest.approx(10 * MB)
    assert choose(model, 100 * MB, 135 * MB, 64, rows[:3]) == 25
    assert choose(model, 100 * MB, 135 * MB, 64, rows) == 7
    assert choose(model, 100 * MB, None, 64, rows) == 64
