"""``build_task(config)``: resolve ``task=auto`` from the data, open the datasets, pick the Task."""

from __future__ import annotations

from oomguard.config import Config
from oomguard.data import DEFAULT_IMGSZ, Layout, find_layout, open_datasets
from oomguard.errors import ConfigError, DataError
from oomguard.tasks.base import Metrics, Task
from oomguard.tasks.classify import ClassifyTask
from oomguard.tasks.multitask import MultitaskTask

__all__ = ["Metrics", "Task", "build_task", "resolve_task"]


def resolve_task(config: Config, layout: Layout) -> str:
    """The task kind: the configured one, or for ``auto`` the one the data layout implies."""
    implied = {"shapes": "multitask", "table": "multitask", "folder": "classify", "detect": "detect"}[layout]
    kind = implied if config.task == "auto" else config.task
    if kind == "detect" or layout == "detect":
        raise ConfigError("task=detect trains only with oomguard train (through ultralytics); "
                          "this command supports task=classify and task=multitask")
    if kind == "multitask" and layout == "folder":
        raise DataError(
            f"task=multitask needs {config.data}/train.csv with columns image,label,<targets>; "
            f"{config.data!r} has only train/<class>/ folders (use task=classify)"
        )
    return kind


def build_task(config: Config) -> Task:
    """The Task for ``config``, its datasets opened (and the builtin data generated on first use)."""
    layout = find_layout(config.data)
    kind = resolve_task(config, layout)
    imgsz = config.imgsz or DEFAULT_IMGSZ[layout]
    train, val, classes = open_datasets(config.data, layout, imgsz, config.dev_samples, config.cache,
                                        with_targets=kind == "multitask")
    cls = MultitaskTask if kind == "multitask" else ClassifyTask
    return cls(config, classes, train, val, imgsz)
