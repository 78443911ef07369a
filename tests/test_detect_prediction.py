"""Detection's epoch-peak prediction: ultralytics' save as the part that stays beside the steps, and each
epoch's prediction on the memory held when it starts (the end-to-end check is in ``test_detect.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from oomguard.engine.prediction import Prediction
from oomguard.events import EventLog

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                                reason="ultralytics is not installed")

MB = 1_000_000


def prediction(**parts: int) -> Prediction:
    return Prediction({name: value * MB for name, value in parts.items()})


@pytest.mark.parametrize(("activations", "cost", "step_after", "kept"), [
    (100, 80, 130, 30),  # the step after the save peaked 30 MB over the step alone: that much stays
    (100, 80, 90, 0),    # the step reused the save's pages: nothing stays, and the save fits in the step
    (20, 80, 30, 60),    # small steps: the save itself (alone, after validation) is the larger phase
])
def test_the_save_counts_for_what_stays_of_it_beside_a_step(activations: int, cost: int, step_after: int,
                                                            kept: int) -> None:
    from oomguard.integrations.ultralytics.plan import with_save

    base = prediction(process=400, model=10, activations=activations, evaluation=activations // 2)
    got = with_save(base, cost * MB, step_after * MB)
    assert got.part("snapshot") == kept * MB
    assert got.peak >= base.held + cost * MB  # the save alone never peaks over the prediction
    assert got.peak == base.peak + kept * MB


@pytest.mark.parametrize("now_mb", [480, 380])
def test_each_epoch_predicts_its_peak_on_the_memory_held_at_its_start(tmp_path: Path, now_mb: int) -> None:
    from oomguard.integrations.ultralytics.plan import DetectPlan
    from oomguard.integrations.ultralytics.record import Recorder
    from oomguard.rundir import RunDir

    planned = prediction(process=400, model=10, ema=10, snapshot=20, activations=100, evaluation=40)
    recorder = Recorder(RunDir(tmp_path / "run"), EventLog(None), staged=False, keep=2,
                        now=lambda: now_mb * MB)
    recorder.begin(None, 0, DetectPlan(8, planned))
    assert recorder.prediction == planned  # before an epoch starts: the plan's own
    recorder.on_epoch_held(None)
    assert recorder.prediction is not None
    # Held now (process, weights, EMA) replaces the probe's 420 MB; the save's kept part and the step stay.
    assert recorder.prediction.peak == (now_mb + 20 + 100) * MB
    assert recorder.prediction.part("activations") == 100 * MB
