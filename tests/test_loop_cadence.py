"""checkpoint_every=auto: the interval follows each checkpoint's measured cost, 30 s to 2 minutes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from oomguard.config import build_config
from oomguard.events import EventLog
from oomguard.loop.cadence import LONGEST, SHORTEST, Cadence, auto_interval
from oomguard.loop.checkpointing import Checkpointing
from oomguard.rundir import RunDir


def test_the_interval_keeps_checkpoints_under_one_percent_between_30s_and_2_minutes() -> None:
    assert auto_interval(0.05) == SHORTEST == 30.0  # a cheap checkpoint: no need for more
    assert auto_interval(0.5) == pytest.approx(50.0)  # 0.5 s every 50 s is 1%
    assert auto_interval(30.0) == LONGEST == 120.0  # an expensive one: never lose more than 2 minutes


def test_auto_starts_at_the_shortest_interval_and_learns_an_explicit_one_stays() -> None:
    auto = Cadence("auto")
    assert auto.interval == SHORTEST
    assert auto.measured(0.2, 0.6) == pytest.approx(80.0)
    fixed = Cadence(10.0)
    assert fixed.measured(0.2, 0.6) == 10.0 and fixed.cost == pytest.approx(0.8)
    assert build_config({}).checkpoint_every == "auto"
    assert build_config({"checkpoint_every": "45s"}).checkpoint_every == 45.0


def test_the_loop_learns_the_cost_of_each_written_checkpoint(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    state = SimpleNamespace(run=run, config=build_config({}), events=EventLog(run.events), is_main=True)
    checkpointing = Checkpointing(state)  # type: ignore[arg-type]
    assert checkpointing.writer.every == SHORTEST and checkpointing.cadence.cost is None
    checkpointing.writer.submit({"model": {"w": torch.zeros(1000, 1000)}, "epoch": 0}, step=1)
    checkpointing.writer.wait()
    checkpointing.on_step_end(state)  # type: ignore[arg-type]
    result = checkpointing.writer.last_result
    assert result is not None and result.ok
    assert checkpointing.cadence.cost == pytest.approx(checkpointing.writer.submit_seconds + result.seconds)
    assert checkpointing.writer.every == auto_interval(checkpointing.cadence.cost)
    checkpointing.writer.close()
