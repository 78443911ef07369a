"""``build_task(config)``: resolve ``task=auto`` from the data, open the datasets, pick the Task."""

from __future__ import annotations

from collections.abc import Callable

from oomguard.config import Config
from oomguard.data import DEFAULT_IMGSZ, Layout, find_layout, open_datasets
from oomguard.errors import ConfigError, DataError
from oomguard.rundir import RunDir
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
            f"{config.data!r} has only image folders (use task=classify)"
        )
    return kind


def build_task(config: Config, run: RunDir | None = None, say: Callable[[str], None] | None = None,
               main: bool = True) -> Task:
    """The Task for ``config``, its datasets opened (and the builtin data generated on first use).

    Image files are indexed into ``run`` (its ``dataset.json``; ``say`` shows
    the progress of a long first check); ``task.data`` says what was found,
    for the trainer to announce. A rank other than 0 (``main`` False) reads the
    run's record but writes and says nothing.
    """
    layout = find_layout(config.data)
    kind = resolve_task(config, layout)
    imgsz = config.imgsz or DEFAULT_IMGSZ[layout]
    opened = open_datasets(config, layout, imgsz, with_targets=kind == "multitask", run=run, write=main,
                           say=say if main else None)
    cls = MultitaskTask if kind == "multitask" else ClassifyTask
    return cls(config, opened.classes, opened.train, opened.val, imgsz, opened.summary)
