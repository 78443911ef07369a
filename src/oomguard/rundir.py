"""The run directory ``<project>/<name>/`` and the names of the files in it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from oomguard.errors import RunDirError


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def weights(self) -> Path:
        return self.root / "weights"

    @property
    def last(self) -> Path:
        return self.weights / "last.pt"

    @property
    def best(self) -> Path:
        return self.weights / "best.pt"

    @property
    def results(self) -> Path:
        return self.root / "results.csv"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def memory(self) -> Path:
        return self.root / "memory.csv"

    @property
    def dataset(self) -> Path:
        """The images the run trains and validates on, as indexed when it started (a resume reads it)."""
        return self.root / "dataset.json"

    @property
    def skipped(self) -> Path:
        """The images left out when the run started because they cannot be read, and why."""
        return self.root / "skipped.csv"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    def saved_config(self) -> dict[str, Any] | None:
        """``config.yaml`` as the run wrote it: a plain dict, or None when missing or unreadable.

        The one reader of that file: the CLI on ``--resume``, the supervisor and the report.
        """
        try:
            loaded = yaml.safe_load(self.config.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return None
        return loaded if isinstance(loaded, dict) else None

    def exists(self) -> bool:
        return self.root.is_dir() and any(self.root.iterdir())

    def prepare(self, resume: bool) -> None:
        """Create the directory for a new run, or check it for ``--resume``.

        A run directory that holds anything is never overwritten.
        """
        if resume:
            if not self.root.is_dir():
                raise RunDirError(
                    f"nothing to resume: {self.root} does not exist; drop --resume to start a new run"
                )
            return
        if self.exists():
            raise RunDirError(
                f"run directory {self.root} already exists; add --resume to continue it, "
                f"or choose another name= for a new run"
            )
        self.weights.mkdir(parents=True, exist_ok=True)
