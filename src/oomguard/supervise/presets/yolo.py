"""Ultralytics YOLO under ``oomguard run``: continue the run that was started, in its own folder.

Before the first start the preset works out the folder the command will train
in, as ultralytics does (:mod:`oomguard.integrations.ultralytics.folders`:
``project``/``name``, the task and runs directory, ``exist_ok`` and the
``-2``, ``-3`` suffixes). A restart then:

- resumes from that folder's ``weights/last.pt`` when the run wrote a whole
  one: the original command with ``model=<that last.pt> resume=True`` (the form
  every ultralytics 8 accepts; ultralytics takes the folder, epochs and the rest
  from the checkpoint and continues after its last finished epoch);
- when that ``last.pt`` is final (all epochs trained, or stopped early: the
  kill came during ultralytics' closing validation, and a resume would start a
  new training), only that validation is redone: ``yolo [task] val`` of the
  run's ``best.pt`` (else ``last.pt``) with the command's settings, into the
  same folder;
- else (killed before its first epoch ended, or while writing ``last.pt``)
  reruns the original command into the same folder: ``exist_ok=True``, and the
  folder's suffixed ``name=`` when ultralytics had added one;
- after a memory kill, takes 3/4 of the current ``batch=`` (at least 1;
  default 16; a fraction ``batch=0.7`` of GPU memory becomes 3/4 of itself and
  AutoBatch ``batch=-1`` becomes ``batch=0.45``): ultralytics lets ``batch``
  change on resume. A smaller batch stays for later restarts.

A command that resumes by itself (``resume`` with ``model=.../last.pt``, or
``resume=PATH``) is restarted as it is, with the batch as above.
"""

from __future__ import annotations

from pathlib import Path

from oomguard.integrations.ultralytics.folders import (
    command_arguments,
    read_arguments,
    saved_epoch,
    train_folder,
)
from oomguard.supervise.presets.argv import key_value, set_key_value
from oomguard.supervise.presets.checkpoints import Before
from oomguard.supervise.presets.restart import PresetRestart

_DEFAULT_BATCH = 16
_AUTOBATCH_SHARE = 0.6
_SHRINK = 0.75
#: Settings of the training that say where and what it is, not how to validate: left out of the validation.
_TRAINING_ONLY = frozenset({"model", "project", "name", "exist_ok", "resume", "mode", "task"})


def smaller_yolo_batch(batch: str | None) -> str:
    """3/4 of a YOLO ``batch=`` value: an int (at least 1), a GPU-memory share, or AutoBatch (-1)."""
    try:
        number = float(batch) if batch is not None else float(_DEFAULT_BATCH)
    except ValueError:
        number = float(_DEFAULT_BATCH)
    if number < 0:
        return f"{_AUTOBATCH_SHARE * _SHRINK:g}"
    if 0 < number < 1:
        return f"{number * _SHRINK:.2g}"
    return str(max(1, int(number * _SHRINK)))


class YoloPreset:
    """Resume the run's own ``last.pt``, or start over in its folder; a smaller batch after a memory kill."""

    name = "yolo"

    def __init__(self, command: list[str], cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.command = list(command)
        cwd = cwd or Path.cwd()
        self.args = command_arguments(command) or []
        self.settings = read_arguments(self.args)
        self.folder = train_folder(self.settings, cwd, env)
        self.own_resume = _own_resume(self.settings, cwd)
        name, mode = self.settings.get("name"), self.settings.get("mode")
        #: ``name=`` as ultralytics reads it (the mode when absent), before any ``-N`` suffix.
        self.run_name = name if isinstance(name, str) and name else mode if isinstance(mode, str) else "train"
        self.before = Before([self.folder.last])

    @staticmethod
    def matches(command: list[str]) -> bool:
        """A training through ultralytics' command line (``yolo [task] train ...``)."""
        args = command_arguments(command)
        return args is not None and read_arguments(args).get("mode") == "train"

    def saved(self) -> int | None:
        """The epoch in the run's own ``last.pt`` (-1: final); None without a whole one from this run."""
        last = self.folder.last
        return saved_epoch(last) if self.before.written_since(last) else None

    def restart(self, previous: list[str], memory: bool) -> PresetRestart:
        batch = key_value(previous, "batch")
        if memory:
            batch = smaller_yolo_batch(batch)
        last, epoch = self.folder.last, self.saved()
        resume_from: str | None = None
        if self.own_resume is not None:
            argv, resume_from = list(self.command), str(self.own_resume)
            note = f"resumes from {self.own_resume} (the command's own resume)"
        elif epoch is not None and epoch >= 0:
            argv = set_key_value(set_key_value(self.command, "model", str(last)), "resume", "True")
            note, resume_from = f"resumes from {last}", str(last)
        elif epoch is not None:
            best = self.folder.save_dir / "weights" / "best.pt"
            weights = best if saved_epoch(best) is not None else last
            argv = self._validation(weights)
            note = f"validates {weights}: its training had ended (final {last}); nothing is trained again"
        else:
            argv = self._same_folder(list(self.command))
            torn = last.is_file() and self.before.written_since(last)
            why = "its last.pt is torn" if torn else "no epoch had finished"
            note = f"starts over in {self.folder.save_dir} ({why})"
        if batch is not None and batch != key_value(self.command, "batch"):
            argv = set_key_value(argv, "batch", batch)
        return PresetRestart(argv, resume_from, note)

    def _same_folder(self, argv: list[str]) -> list[str]:
        """``argv`` that trains in :attr:`folder` again, not in a new ``-2`` beside it."""
        folder = self.folder
        if folder.save_dir != folder.wanted:  # ultralytics added a suffix: name the suffixed folder
            suffix = folder.save_dir.name[len(folder.wanted.name):]
            argv = set_key_value(argv, "name", self.run_name + suffix)
        if not folder.exist_ok:
            argv = set_key_value(argv, "exist_ok", "True")
        return argv

    def _validation(self, weights: Path) -> list[str]:
        """``yolo [task] val model=WEIGHTS`` with the command's other settings, into the run's folder."""
        program = self.command[: len(self.command) - len(self.args)]
        task = self.settings.get("task")
        kept = [arg for arg in self.args
                if "=" in arg and arg.partition("=")[0].lstrip("-") not in _TRAINING_ONLY]
        save_dir = self.folder.save_dir
        return [*program, *([task] if isinstance(task, str) else []), "val", f"model={weights}", *kept,
                f"project={save_dir.parent}", f"name={save_dir.name}", "exist_ok=True"]


def _own_resume(settings: dict[str, str | bool | None], cwd: Path) -> Path | None:
    """The checkpoint a command resumes from by itself: ``resume=PATH``, or ``resume`` and a ``.pt`` model."""
    resume, model = settings.get("resume"), settings.get("model")
    if isinstance(resume, str) and not resume.strip().lstrip("-").replace(".", "").isdigit():
        return cwd / resume
    if resume is True and isinstance(model, str) and model.endswith(".pt"):
        return cwd / model
    return None
