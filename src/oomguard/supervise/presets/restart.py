"""What a preset answers when the command died: the next command, and the checkpoint it resumes from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PresetRestart:
    """The next attempt of a supervised command."""

    argv: list[str]
    #: The checkpoint the command will resume from; None: it starts over (``note`` says why).
    resume_from: str | None
    #: For people: "resumes from PATH", or "starts over: WHY".
    note: str
