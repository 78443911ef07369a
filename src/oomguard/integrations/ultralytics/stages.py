"""``stages:`` with ``task=detect``: one ultralytics training per stage, each from the last one's weights.

A stage is the base config with its overrides on top
(:func:`oomguard.loop.stages.stage_configs`). Stage ``i`` trains in
``RUN/yolo/stage-<i>`` with ``model=`` the previous stage's ``last.pt``
(ultralytics' own; the first stage takes ``model=``), so optimizer, schedule
and warmup start over with the stage's ``epochs``, ``imgsz``, ``lr`` and
``batch``, and its microbatch is planned anew. Without ``stages:`` the one
stage trains in ``RUN/yolo`` as before.

Where ``--resume`` continues comes from each stage's ``last.pt``: a stage whose
``last.pt`` holds all its epochs (ultralytics strips a finished one to
``epoch: -1``) is skipped; one with some epochs resumes with ``resume=True``;
the first stage without ``last.pt`` starts from the previous stage's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oomguard.config import Config
from oomguard.events import EventLog
from oomguard.integrations.ultralytics.folders import last_checkpoint, saved_epoch
from oomguard.loop.stages import announce_stage, stage_configs
from oomguard.rundir import RunDir


@dataclass(frozen=True)
class DetectStage:
    """One ultralytics training of the run: its config, folder and place in the run's epoch numbering."""

    index: int  # 1-based
    count: int
    config: Config
    yolo_dir: Path
    epoch_offset: int
    overrides: dict[str, Any] | None  # None without ``stages:``

    @property
    def last(self) -> Path:
        """Ultralytics' own ``last.pt`` of this stage (pickles the model; what ``resume=True`` takes)."""
        return last_checkpoint(self.yolo_dir)


def detect_stages(config: Config, run: RunDir) -> list[DetectStage]:
    """The run's stages in order; a single one in ``RUN/yolo`` without ``stages:``."""
    configs = stage_configs(config)
    overrides = list(config.stages or [])
    stages, offset = [], 0
    for index, stage_config in enumerate(configs):
        folder = run.root / "yolo" / f"stage-{index + 1}" if overrides else run.root / "yolo"
        stages.append(DetectStage(index + 1, len(configs), stage_config, folder, offset,
                                  overrides[index] if overrides else None))
        offset += stage_config.epochs
    return stages


def finished_epochs(stage: DetectStage) -> int:
    """Epochs of ``stage`` its ``last.pt`` holds: 0 without a whole one, all when ultralytics finished it."""
    epoch = saved_epoch(stage.last)
    if epoch is None:  # none yet, or torn by a kill inside ultralytics' own (non-atomic) save: redo the stage
        return 0
    if epoch < 0:  # stripped at the end of a finished training
        return stage.config.epochs
    return min(epoch + 1, stage.config.epochs)


def announce(stage: DetectStage, events: EventLog, resumed: bool, done: int, say: Any) -> None:
    """The ``stage`` event (as the built-in loop writes it) and a console line, for a staged run."""
    if stage.overrides is None:
        return
    announce_stage(events, say, stage=stage.index, stages=stage.count, epochs=stage.config.epochs,
                   epoch_offset=stage.epoch_offset, overrides=stage.overrides, resume=resumed,
                   epoch=stage.epoch_offset + done, step=None)
