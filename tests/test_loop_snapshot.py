"""The checkpoint's in-memory copy is host memory the budget keeps free, whether or not a probe ran."""

from __future__ import annotations

from pathlib import Path

from oomguard.config import build_config
from oomguard.events import EventLog
from oomguard.loop.checkpointing import Checkpointing
from oomguard.loop.setup import build_state
from oomguard.rundir import RunDir


def test_a_checkpoint_snapshot_is_kept_free_in_a_host_memory_budget(tmp_path: Path) -> None:
    config = build_config({"dev_samples": 16, "batch": 8, "microbatch": 4, "epochs": 1,
                           "project": str(tmp_path), "name": "run"})
    run = RunDir(config.run_dir)
    run.root.mkdir(parents=True)
    state = build_state(config, run, EventLog(run.events), timeline=False)
    assert state.guard.sizer.reserve == 0  # a given microbatch: no probe measured a snapshot
    checkpointing = Checkpointing(state)
    checkpointing.save_now(state)
    checkpointing.writer.close()
    assert checkpointing.writer.snapshot_bytes > 0
    assert state.guard.sizer.reserve == checkpointing.writer.snapshot_bytes
