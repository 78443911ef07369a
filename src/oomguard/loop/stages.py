"""``stages:``: one run trained in stages (progressive image size, a lower lr), each from the last's weights.

A stage is the base config with that stage's overrides on top. Every stage
builds a fresh State (optimizer, schedule and memory plan start over: a new
image size needs a new plan) and copies the previous stage's model weights in.
The run directory stays one: checkpoints are named by the global step, and
``results.csv`` numbers epochs across stages with a ``stage`` column. A
checkpoint's ``extra`` holds the stage index and offsets, so ``--resume``
continues inside any stage, or starts the next one when a stage had finished.
Without ``stages`` the run is a single stage and nothing here changes it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from oomguard import events as ev
from oomguard.checkpoint import CheckpointStore
from oomguard.config import Config, build_config
from oomguard.distributed.group import Group
from oomguard.errors import ConfigError
from oomguard.events import EventLog
from oomguard.loop.checkpointing import restore
from oomguard.loop.setup import build_state
from oomguard.loop.state import State
from oomguard.rundir import RunDir

RUN_KEYS = ("stages", "project", "name", "data", "task", "model")  # what a stage may not change


def stage_configs(config: Config) -> list[Config]:
    """The config of every stage (just ``[config]`` without stages); bad overrides are one line."""
    if not config.stages:
        return [config]
    base = config.model_dump(mode="json")
    configs = []
    for index, overrides in enumerate(config.stages):
        fixed = [key for key in overrides if key in RUN_KEYS]
        if fixed:
            raise ConfigError(
                f"stages[{index}] sets {fixed[0]!r}, which is the same for every stage; set it outside stages"
            )
        try:
            configs.append(build_config({**base, **overrides, "stages": None}))
        except ConfigError as err:
            raise ConfigError(f"stages[{index}]: {err}") from None
    return configs


def total_epochs(configs: list[Config]) -> int:
    return sum(config.epochs for config in configs)


class Stages:
    """Opens the State of the stage to train now, and the next one when a stage finishes."""

    def __init__(self, config: Config, run: RunDir, events: EventLog,
                 say: Callable[[str], None] | None = None, group: Group | None = None) -> None:
        self.configs = stage_configs(config)
        self.overrides = list(config.stages or [])
        self.staged = bool(config.stages)
        self.run = run
        self.events = events
        self.say = say
        self.keep = config.keep
        self.group = group

    def _open(self, index: int, weights: dict[str, torch.Tensor] | None = None, epoch_offset: int = 0,
              step_offset: int = 0, best: float | None = None) -> State:
        state = build_state(self.configs[index], self.run, self.events, group=self.group, say=self.say)
        if self.staged:
            state.stage = index
            state.epoch_offset, state.step_offset, state.step = epoch_offset, step_offset, step_offset
            state.best = best
        if weights is not None:
            state.model.load_state_dict(weights)
        return state

    def first(self, resume: bool) -> tuple[State, Path | None]:
        """The State to train first: stage 0, or where the newest checkpoint left the run."""
        found = None
        if resume:
            store = CheckpointStore(self.run.weights, keep=self.keep, events=self.events, console=self.say)
            found = store.load_latest()
        if found is None:
            return self._open(0), None
        checkpoint, path = found
        extra: dict[str, Any] = checkpoint.get("extra") or {}
        index = min(int(extra.get("stage") or 0), len(self.configs) - 1)
        done = int(checkpoint.get("epoch", 0)) >= self.configs[index].epochs
        if self.staged and done and index + 1 < len(self.configs):
            state = self._open(index + 1, checkpoint["model"],
                               int(extra.get("epoch_offset", 0)) + self.configs[index].epochs,
                               int(checkpoint.get("step", 0)), checkpoint.get("best_metric"))
            return state, path
        state = self._open(index)
        restore(state, checkpoint)
        return state, path

    def next(self, state: State) -> State | None:
        """The next stage, starting from ``state``'s weights; None after the last."""
        if state.stage is None or state.stage + 1 >= len(self.configs):
            return None
        weights = {name: tensor.detach().cpu().clone() for name, tensor in state.model.state_dict().items()}
        return self._open(state.stage + 1, weights, state.epoch_offset + state.config.epochs, state.step,
                          state.best)

    def announce(self, state: State, resumed: bool) -> None:
        """The ``stage`` event (and a console line) as a stage starts or resumes."""
        if state.stage is None or not state.is_main:
            return
        announce_stage(self.events, self.say, stage=state.stage + 1, stages=len(self.configs),
                       epochs=state.config.epochs, epoch_offset=state.epoch_offset,
                       overrides=self.overrides[state.stage], resume=resumed, epoch=state.epoch,
                       step=state.step)


def announce_stage(events: EventLog, say: Callable[[str], None] | None, *, stage: int, stages: int,
                   epochs: int, epoch_offset: int, overrides: dict[str, Any], resume: bool, epoch: int,
                   step: int | None) -> None:
    """The ``stage`` event and its console line (``stage`` counts from 1), for any loop that trains stages."""
    first, last = epoch_offset + 1, epoch_offset + epochs
    events.emit(ev.Stage(stage=stage, stages=stages, epochs=epochs, first_epoch=first, last_epoch=last,
                         overrides=overrides, resume=resume, epoch=epoch, step=step))
    if say is not None:
        changes = " ".join(f"{key}={value}" for key, value in overrides.items())
        say(f"stage {stage}/{stages} (epochs {first}-{last}): {changes}")
