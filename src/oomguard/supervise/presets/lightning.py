"""Lightning scripts under ``oomguard run``: ``fit`` again, ``--ckpt_path`` the run's newest checkpoint.

What the preset needs from the script, the conventions of ``LightningCLI``:

- a ``fit`` subcommand that takes ``--ckpt_path PATH`` and hands it to
  ``trainer.fit(..., ckpt_path=PATH)`` (``LightningCLI`` does; a script of its
  own must do the same). The command is ``python SCRIPT fit ...`` (or a
  program whose first argument is ``fit``);
- checkpoints (``ModelCheckpoint``, which Lightning adds by default) saved
  under the trainer's ``default_root_dir``: ``--trainer.default_root_dir DIR``
  on the command line or in a ``--config`` file, else the current folder.
  Lightning's default places are ``DIR/lightning_logs/version_N/checkpoints``
  (a new ``version_N`` each start) and ``DIR/checkpoints``.

A restart adds ``--ckpt_path`` with the newest whole ``.ckpt`` under that folder
that this run wrote (a file from before the first start does not count, nor
one a kill cut short); none: the script starts over. Lightning continues after
the checkpoint's epoch (or mid-epoch step, for a step-based ``ModelCheckpoint``).
After a memory kill ``--data.batch_size`` is halved (its largest proper
divisor) and ``--trainer.accumulate_grad_batches`` grows to match, when the
command gives ``--data.batch_size``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from oomguard.supervise.presets.argv import flag_value, set_flag, smaller_batch_same_update, without_flag
from oomguard.supervise.presets.checkpoints import Before, complete_torch_file, newest
from oomguard.supervise.presets.restart import PresetRestart

_ROOT = "--trainer.default_root_dir"
_FLAG = "--ckpt_path"


def _fit_index(command: list[str]) -> int | None:
    """Where ``fit`` stands in ``command``: right after the script (``python x.py fit``) or the program."""
    for index in range(1, len(command)):
        before = command[index - 1]
        if command[index] == "fit" and (index == 1 or before.endswith(".py") or command[index - 2] == "-m"):
            return index
    return None


def default_root_dir(command: list[str], cwd: Path) -> Path:
    """The trainer's ``default_root_dir``: the flag, else a ``--config`` file's, else ``cwd``."""
    given = flag_value(command, _ROOT)
    for config in _values(command, "--config") + _values(command, "-c"):
        try:
            loaded = yaml.safe_load((cwd / config).read_text())
        except (OSError, yaml.YAMLError):
            continue
        trainer = loaded.get("trainer") if isinstance(loaded, dict) else None
        if given is None and isinstance(trainer, dict) and isinstance(trainer.get("default_root_dir"), str):
            given = trainer["default_root_dir"]
    return cwd / given if given else cwd


def _values(command: list[str], flag: str) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command[:-1]) if arg == flag] + \
        [arg[len(flag) + 1:] for arg in command if arg.startswith(flag + "=")]


class LightningPreset:
    """``fit --ckpt_path`` this run's newest checkpoint; a smaller data batch after a memory kill."""

    name = "lightning"

    def __init__(self, command: list[str], cwd: Path | None = None) -> None:
        self.command = command
        self.cwd = cwd or Path.cwd()
        self.root = default_root_dir(command, self.cwd)
        self.before = Before(self._candidates())

    @staticmethod
    def matches(command: list[str]) -> bool:
        return _fit_index(command) is not None

    def _candidates(self) -> list[Path]:
        return sorted(self.root.rglob("*.ckpt")) if self.root.is_dir() else []

    def checkpoint(self) -> Path | None:
        """The newest whole ``.ckpt`` under :attr:`root` that this run wrote."""
        return newest(path for path in self._candidates()
                      if self.before.written_since(path) and complete_torch_file(path))

    def restart(self, previous: list[str], memory: bool) -> PresetRestart:
        argv = list(previous)
        if memory:
            argv = smaller_batch_same_update(argv, "--data.batch_size", "--trainer.accumulate_grad_batches")
        own = flag_value(self.command, _FLAG)  # a resume the command asks for by itself
        checkpoint = self.checkpoint()
        if checkpoint is not None:
            resume_from, note = str(checkpoint), f"resumes from {checkpoint}"
        elif own:
            resume_from, note = own, f"resumes from {own} (the command's own {_FLAG})"
        else:
            return PresetRestart(without_flag(argv, _FLAG), None,
                                 f"starts over: no checkpoint of this run under {self.root} yet")
        return PresetRestart(set_flag(argv, _FLAG, resume_from), resume_from, note)
