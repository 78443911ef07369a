"""What a run's data is, said once as it starts: a console line or two and a ``data`` event."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from oomguard import events as ev
from oomguard.data.indexing import Indexed, named
from oomguard.data.record import Skipped, relative
from oomguard.events import EventLog

Say = Callable[[str], None]
EVENT_FILES = 20  # unreadable images named in the ``data`` event; all are in skipped.csv


@dataclass(frozen=True)
class DataSummary:
    """The layout, where validation comes from, the sizes used, and what indexing left out."""

    layout: str
    validation: str
    classes: int
    train: int
    val: int
    root: Path | None = None
    skipped: list[Skipped] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    recorded: Path | None = None  # the run's dataset.json, read by a resume
    skipped_before: int = 0  # left out when a resumed run started
    listed_in: Path | None = None  # the run's skipped.csv

    @classmethod
    def of(cls, indexed: Indexed, root: Path, train: int, val: int) -> DataSummary:
        sources = indexed.sources
        return cls(sources.layout, sources.validation, len(sources.classes), train, val, root,
                   indexed.skipped, sources.ignored, indexed.record if indexed.recorded else None,
                   indexed.skipped_before, indexed.skipped_list)

    def _rel(self, path: str) -> str:
        return relative(path, self.root) if self.root is not None else str(path)

    def lines(self) -> list[str]:
        where = f" in {self.root}" if self.root is not None else ""
        sizes = f"{self.classes} classes, {self.train} train / {self.val} val images"
        said = [f"data: {self.layout}{where}: {sizes}; validation: {self.validation}"]
        if self.recorded is not None:
            said[0] = f"data: as recorded in {self.recorded} when the run started: " + said[0][6:]
        if self.ignored:
            shown = ", ".join(self._rel(path) for path in self.ignored[:3])
            more = f" and {len(self.ignored) - 3} more" if len(self.ignored) > 3 else ""
            what = "file that is not an image" if len(self.ignored) == 1 else "files that are not images"
            said.append(f"data: {len(self.ignored)} {what} ignored ({shown}{more})")
        if self.skipped:
            count = len(self.skipped)
            what = "image cannot be read and is" if count == 1 else "images cannot be read and are"
            listed = f"; all are listed in {self.listed_in}" if self.listed_in is not None else ""
            said.append(f"warning: {count} {what} left out: "
                        f"{named(self.skipped, self.root or Path('/'))}{listed}")
        return said

    def event(self) -> ev.Data:
        skipped = len(self.skipped) or self.skipped_before
        return ev.Data(
            action="index", layout=self.layout, validation=self.validation, classes=self.classes,
            train=self.train, val=self.val, skipped=skipped,
            skipped_files=[self._rel(item.path) for item in self.skipped[:EVENT_FILES]] or None,
            listed_in=str(self.listed_in) if self.listed_in is not None else None,
            ignored=len(self.ignored) or None, recorded=True if self.recorded is not None else None,
        )

    def announce(self, events: EventLog | None, say: Say | None) -> None:
        """The ``data`` event and the console lines (either may be None: a rank other than 0)."""
        if events is not None:
            events.emit(self.event())
        if say is not None:
            for line in self.lines():
                say(line)
