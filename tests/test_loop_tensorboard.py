"""TensorBoardLogger: a one-line ConfigError without tensorboard, scalars on disk with it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from oomguard.errors import ConfigError
from oomguard.loop.tensorboard import TensorBoardLogger
from oomguard.memory.sampler import Sample


def test_missing_tensorboard_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(ConfigError) as err:
        TensorBoardLogger(tmp_path)
    assert str(err.value) == "tensorboard=true needs tensorboard: pip install tensorboard"


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_scalars_are_written(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path)
    logger.log_epoch(1, {"train_loss": 0.5, "accuracy": 0.9, "val_loss": float("nan"), "note": "x"})
    logger.log_epoch(2, {"train_loss": 0.25})
    logger.log_memory(7, Sample(time=0.0, process_rss=1_500_000_000, children_rss=0,
                                system_available=8 * 10**9, device_allocated=0, device_reserved=0,
                                used=1_500_000_000, step=7, rank=0, tree_memory=1_500_000_000,
                                children_private=0))
    logger.log_memory(8, {"process_rss": 2_000_000_000})
    logger.close()

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "metrics/val_loss" not in tags and "metrics/note" not in tags
    assert [(s.step, s.value) for s in events.Scalars("metrics/train_loss")] == [(1, 0.5), (2, 0.25)]
    rss = events.Scalars("memory/process_rss_gb")
    assert [(s.step, round(s.value, 3)) for s in rss] == [(7, 1.5), (8, 2.0)]
    assert [s.value for s in events.Scalars("memory/system_available_gb")] == [8.0]
