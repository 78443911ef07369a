"""Hugging Face Trainer scripts under ``oomguard run``: resume from the newest whole ``checkpoint-N``.

Any command with ``--output_dir DIR``. The script must hand
``--resume_from_checkpoint`` to ``trainer.train(resume_from_checkpoint=...)``,
as scripts that parse ``TrainingArguments`` with ``HfArgumentParser`` (the
transformers examples) do. A restart adds ``--resume_from_checkpoint
DIR/checkpoint-N``: the highest N this run wrote whole (its
``trainer_state.json``, the Trainer's last file of a checkpoint, is there and
parses); none: the script starts over. After a memory kill
``--per_device_train_batch_size`` is halved (its largest proper divisor) and
``--gradient_accumulation_steps`` grows to match: the effective batch is the same.
"""

from __future__ import annotations

import re
from pathlib import Path

from oomguard.supervise.presets.argv import flag_value, set_flag, smaller_batch_same_update, without_flag
from oomguard.supervise.presets.checkpoints import Before, complete_json
from oomguard.supervise.presets.restart import PresetRestart

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_STATE = "trainer_state.json"
_FLAG = "--resume_from_checkpoint"


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """The ``checkpoint-N`` folders in ``output_dir`` with their N, highest first."""
    if not output_dir.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in output_dir.iterdir()
             if path.is_dir() and (match := _CHECKPOINT.match(path.name))]
    return sorted(found, reverse=True)


def newest_checkpoint(output_dir: Path) -> Path | None:
    """The ``checkpoint-N`` folder with the highest N in ``output_dir`` whose trainer state is whole."""
    return next((path for _, path in checkpoints(output_dir) if complete_json(path / _STATE)), None)


class HuggingFacePreset:
    """Hugging Face Trainer: resume from the newest checkpoint; a smaller batch after a memory kill."""

    name = "huggingface"

    def __init__(self, command: list[str], cwd: Path | None = None) -> None:
        self.command = command
        self.cwd = cwd or Path.cwd()
        self.output_dir = flag_value(command, "--output_dir") or "."
        self.before = Before(path / _STATE for _, path in checkpoints(self._folder()))

    @staticmethod
    def matches(command: list[str]) -> bool:
        return flag_value(command, "--output_dir") is not None

    def _folder(self) -> Path:
        folder = Path(self.output_dir)
        return folder if folder.is_absolute() else self.cwd / folder

    def checkpoint(self) -> Path | None:
        """The newest whole ``checkpoint-N`` this run wrote (one left by an earlier run does not count)."""
        return next((path for _, path in checkpoints(self._folder())
                     if self.before.written_since(path / _STATE) and complete_json(path / _STATE)), None)

    def restart(self, previous: list[str], memory: bool) -> PresetRestart:
        argv = list(previous)
        if memory:
            argv = smaller_batch_same_update(argv, "--per_device_train_batch_size",
                                             "--gradient_accumulation_steps")
        own = flag_value(self.command, _FLAG)  # a resume the command asks for by itself
        checkpoint = self.checkpoint()
        if checkpoint is not None:
            resume_from = str(Path(self.output_dir) / checkpoint.name)
            note = f"resumes from {resume_from}"
        elif own:
            resume_from, note = own, f"resumes from {own} (the command's own --resume_from_checkpoint)"
        else:
            argv = without_flag(argv, _FLAG)
            return PresetRestart(argv, None, f"starts over: no whole checkpoint-N in {self.output_dir} yet")
        return PresetRestart(set_flag(argv, _FLAG, resume_from), resume_from, note)

