"""How to restart a command that ``oomguard run`` supervises: resume it, and after a memory kill shrink it.

Known presets (chosen from the command line; ``--resume-args`` replaces them):

- **Ultralytics YOLO**: ``yolo ... train ...`` (the program is ``yolo``, and
  ``train`` is one of its arguments) or ``python -m ultralytics ...``.
  Restarts add ``resume=True``: Ultralytics finds the newest ``last.pt`` under
  its runs directory and continues from it. After a memory kill ``batch=``
  becomes 3/4 of the current one (at least 1; default 16); a fractional
  ``batch=0.7`` (share of GPU memory) becomes 3/4 of itself and ``batch=-1``
  (AutoBatch, 60%) becomes ``batch=0.45``.
- **Hugging Face Trainer** scripts: any command with ``--output_dir DIR``.
  Restarts add ``--resume_from_checkpoint DIR/checkpoint-N`` with the highest
  N present (none: the script starts over). After a memory kill,
  ``--per_device_train_batch_size`` is halved (its largest proper divisor) and
  ``--gradient_accumulation_steps`` grows to match: the effective batch is the same.
- **Anything else**: restarts append the ``--resume-args`` (split like a
  shell), the same after every kind of death.

Every restart is built from the original command, never by appending to the
previous restart, so arguments do not pile up.
"""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

_YOLO_DEFAULT_BATCH = 16
_YOLO_AUTOBATCH_SHARE = 0.6
_SHRINK = 0.75
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _key_value(argv: list[str], key: str) -> str | None:
    """The value of ``key=value`` in a YOLO-style argument list (the last one wins)."""
    value = None
    for arg in argv:
        name, sep, rest = arg.partition("=")
        if sep and name == key:
            value = rest
    return value


def _set_key_value(argv: list[str], key: str, value: str) -> list[str]:
    return [arg for arg in argv if arg.partition("=")[0] != key or "=" not in arg] + [f"{key}={value}"]


def _flag_value(argv: list[str], flag: str) -> str | None:
    """The value of ``--flag VALUE`` or ``--flag=VALUE`` (the last one wins)."""
    value = None
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value


def _set_flag(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` without any ``--flag``, then ``--flag value`` at the end."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == flag:
            skip = True
            continue
        if arg.startswith(flag + "="):
            continue
        out.append(arg)
    return [*out, flag, value]


def smaller_yolo_batch(batch: str | None) -> str:
    """3/4 of a YOLO ``batch=`` value: an int (at least 1), a GPU-memory share, or AutoBatch (-1)."""
    try:
        number = float(batch) if batch is not None else float(_YOLO_DEFAULT_BATCH)
    except ValueError:
        number = float(_YOLO_DEFAULT_BATCH)
    if number < 0:
        return f"{_YOLO_AUTOBATCH_SHARE * _SHRINK:g}"
    if 0 < number < 1:
        return f"{number * _SHRINK:.2g}"
    return str(max(1, int(number * _SHRINK)))


def newest_checkpoint(output_dir: Path) -> Path | None:
    """The ``checkpoint-N`` folder with the highest N in ``output_dir`` (Hugging Face Trainer)."""
    if not output_dir.is_dir():
        return None
    found = [(int(match.group(1)), path) for path in output_dir.iterdir()
             if path.is_dir() and (match := _CHECKPOINT.match(path.name))]
    return max(found)[1] if found else None


class GenericPreset:
    """Restart ``command`` + ``resume_args``."""

    name = "generic"

    def __init__(self, command: list[str], resume_args: list[str]) -> None:
        self.command = command
        self.resume_args = resume_args

    def restart_argv(self, previous: list[str], memory: bool) -> list[str]:
        return [*self.command, *self.resume_args]


class YoloPreset:
    """Ultralytics: ``resume=True``, and a smaller ``batch=`` after a memory kill."""

    name = "yolo"

    def __init__(self, command: list[str]) -> None:
        self.command = command

    @staticmethod
    def matches(command: list[str]) -> bool:
        program = Path(command[0]).name if command else ""
        if program == "yolo" and "train" in command[1:]:
            return True
        return any(arg == "-m" and nxt == "ultralytics" for arg, nxt in itertools.pairwise(command))

    def restart_argv(self, previous: list[str], memory: bool) -> list[str]:
        argv = _set_key_value(previous, "resume", "True")
        if memory:
            argv = _set_key_value(argv, "batch", smaller_yolo_batch(_key_value(previous, "batch")))
        return argv


class HuggingFacePreset:
    """Hugging Face Trainer: resume from the newest checkpoint; a smaller batch after a memory kill."""

    name = "huggingface"

    def __init__(self, command: list[str], cwd: Path | None = None) -> None:
        self.command = command
        self.cwd = cwd or Path.cwd()

    @staticmethod
    def matches(command: list[str]) -> bool:
        return _flag_value(command, "--output_dir") is not None

    def restart_argv(self, previous: list[str], memory: bool) -> list[str]:
        argv = list(previous)
        if memory:
            argv = _halve_hf_batch(argv)
        output_dir = _flag_value(argv, "--output_dir") or "."
        folder = Path(output_dir)
        checkpoint = newest_checkpoint(folder if folder.is_absolute() else self.cwd / folder)
        if checkpoint is not None:
            argv = _set_flag(argv, "--resume_from_checkpoint", str(Path(output_dir) / checkpoint.name))
        return argv


def _halve_hf_batch(argv: list[str]) -> list[str]:
    """A smaller ``--per_device_train_batch_size`` (its largest proper divisor), same effective batch."""
    batch_text = _flag_value(argv, "--per_device_train_batch_size")
    if batch_text is None or not batch_text.isdigit() or int(batch_text) < 2:
        return argv
    batch = int(batch_text)
    smaller = next(d for d in range(batch // 2, 0, -1) if batch % d == 0)
    steps_text = _flag_value(argv, "--gradient_accumulation_steps")
    steps = int(steps_text) if steps_text is not None and steps_text.isdigit() else 1
    argv = _set_flag(argv, "--per_device_train_batch_size", str(smaller))
    return _set_flag(argv, "--gradient_accumulation_steps", str(steps * batch // smaller))


Preset = GenericPreset | YoloPreset | HuggingFacePreset


def preset_for(command: list[str], resume_args: str | None, cwd: Path | None = None) -> Preset:
    """The preset for ``command``; explicit ``resume_args`` always mean the generic one."""
    if resume_args is not None:
        return GenericPreset(command, shlex.split(resume_args))
    if YoloPreset.matches(command):
        return YoloPreset(command)
    if HuggingFacePreset.matches(command):
        return HuggingFacePreset(command, cwd)
    return GenericPreset(command, [])
