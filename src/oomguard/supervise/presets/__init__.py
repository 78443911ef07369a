"""How to restart a command that ``oomguard run`` supervises: resume it, and after a memory kill shrink it.

Known presets, chosen from the command line (``--resume-args`` replaces them):

- **Ultralytics YOLO** (:mod:`.yolo`): ``yolo [task] train ...``,
  ``ultralytics ... train ...`` or ``python -m ultralytics ... train ...``;
  resumes the run's own ``weights/last.pt`` in the folder ultralytics chose
  for it, or reruns into that same folder; 3/4 of ``batch=`` after a memory kill.
- **Hugging Face Trainer** scripts (:mod:`.huggingface`): any command with
  ``--output_dir DIR``; ``--resume_from_checkpoint DIR/checkpoint-N``; half the
  per-device batch with twice the accumulation after a memory kill.
- **Lightning** (:mod:`.lightning`): ``python SCRIPT fit ...`` (``LightningCLI``);
  ``--ckpt_path`` of the run's newest ``.ckpt`` under ``default_root_dir``; half
  ``--data.batch_size`` with twice the accumulation after a memory kill.
- **Anything else** (:mod:`.generic`): restarts append the ``--resume-args``
  (split like a shell), the same after every kind of death.

Every restart is built from the original command (and the batch in force),
never by appending to the previous restart, so arguments do not pile up. A
preset is made before the first start: what a folder held then (a ``last.pt``
or ``checkpoint-N`` of an earlier run) is never taken for this run's checkpoint.
Each restart says which checkpoint the command resumes from, or why it starts over.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from oomguard.supervise.presets.generic import GenericPreset
from oomguard.supervise.presets.huggingface import HuggingFacePreset, newest_checkpoint
from oomguard.supervise.presets.lightning import LightningPreset
from oomguard.supervise.presets.restart import PresetRestart
from oomguard.supervise.presets.yolo import YoloPreset, smaller_yolo_batch

Preset = GenericPreset | YoloPreset | HuggingFacePreset | LightningPreset

__all__ = ["GenericPreset", "HuggingFacePreset", "LightningPreset", "Preset", "PresetRestart", "YoloPreset",
           "newest_checkpoint", "preset_for", "smaller_yolo_batch"]


def preset_for(command: list[str], resume_args: str | None, cwd: Path | None = None,
               env: dict[str, str] | None = None) -> Preset:
    """The preset for ``command`` in ``cwd`` with ``env`` (default: ours); ``resume_args``: generic."""
    if resume_args is not None:
        return GenericPreset(command, shlex.split(resume_args))
    if YoloPreset.matches(command):
        return YoloPreset(command, cwd, env)
    if HuggingFacePreset.matches(command):
        return HuggingFacePreset(command, cwd)
    if LightningPreset.matches(command):
        return LightningPreset(command, cwd)
    return GenericPreset(command, [])
