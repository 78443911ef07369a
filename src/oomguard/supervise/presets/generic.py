"""Any command no preset knows: restarts append the ``--resume-args``, the same after every kind of death."""

from __future__ import annotations

from oomguard.supervise.presets.restart import PresetRestart


class GenericPreset:
    """Restart ``command`` + ``resume_args``."""

    name = "generic"

    def __init__(self, command: list[str], resume_args: list[str]) -> None:
        self.command = command
        self.resume_args = resume_args

    def restart(self, previous: list[str], memory: bool) -> PresetRestart:
        if self.resume_args:
            note = "resumes as its --resume-args say (which checkpoint is the command's own business)"
        else:
            note = "starts over: no preset knows this command, and no --resume-args were given"
        return PresetRestart([*self.command, *self.resume_args], None, note)
