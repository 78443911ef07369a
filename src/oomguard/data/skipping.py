"""An image that cannot be read when its batch is loaded: left out, reported, never a stopped run.

Indexing left out the images that were unreadable when the run started;
these are the ones that became unreadable since (a file changed on disk, a
disk that went away). In a loader, :class:`Tolerant` turns the failure into an
:class:`Unreadable` marker, the collate functions keep the readable samples
(or, for a rank of a group, put a readable neighbour in the place of the
unreadable one) and say which were not, and :class:`SkipReport` warns once
per file and writes a ``data`` event each time. Completing the batch from the
next samples is the loader's work (:mod:`.loader`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.utils.data import Dataset
from torch.utils.data.dataloader import default_collate

from oomguard import events as ev
from oomguard.data.decode import UnreadableImage
from oomguard.errors import DataError
from oomguard.events import EventLog


@dataclass(frozen=True)
class Unreadable:
    """A sample whose image could not be read: which file and why."""

    path: str
    reason: str


class Tolerant(Dataset[Any]):
    """``dataset`` whose samples with an unreadable image come back as :class:`Unreadable`, not an error."""

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: Any) -> Any:
        try:
            return self.dataset[item]
        except UnreadableImage as err:
            return Unreadable(err.path, err.reason)


@dataclass(frozen=True)
class Loaded:
    """What a loader batch became: its readable samples collated, and the unreadable ones.

    ``kept`` are the places (in the loader batch) of the samples in ``batch``;
    ``batch`` is None when no sample could be read.
    """

    batch: Any
    kept: list[int]
    size: int
    unreadable: list[Unreadable] = field(default_factory=list)

    def pin_memory(self) -> Loaded:
        """The loader's ``pin_memory=True`` pins the tensors of ``batch``."""
        return replace(self, batch=_pinned(self.batch))


def _pinned(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.pin_memory()
    if isinstance(value, Mapping):
        return {key: _pinned(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_pinned(item) for item in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_pinned(item) for item in value)
    return value


def collate_readable(samples: Sequence[Any]) -> Loaded:
    """The readable samples collated, the unreadable ones left out (and listed)."""
    kept = [place for place, sample in enumerate(samples) if not isinstance(sample, Unreadable)]
    unreadable = [sample for sample in samples if isinstance(sample, Unreadable)]
    if not unreadable:
        return Loaded(default_collate(list(samples)), kept, len(samples))
    batch = default_collate([samples[place] for place in kept]) if kept else None
    return Loaded(batch, kept, len(samples), unreadable)


def collate_substituted(samples: Sequence[Any]) -> Loaded:
    """All places filled: each unreadable sample replaced by the nearest readable one before it (else after).

    For a rank of a data-parallel group, whose batches must keep their size
    (the group steps together and counts one global position); ``batch`` is
    None only when no sample of the slice could be read.
    """
    unreadable = [sample for sample in samples if isinstance(sample, Unreadable)]
    readable = [place for place, sample in enumerate(samples) if not isinstance(sample, Unreadable)]
    if not unreadable or not readable:
        return collate_readable(samples)
    filled = []
    for place, sample in enumerate(samples):
        if isinstance(sample, Unreadable):
            before = [other for other in readable if other < place]
            sample = samples[before[-1] if before else readable[0]]
        filled.append(sample)
    return Loaded(default_collate(filled), list(range(len(samples))), len(samples), unreadable)


Where = Callable[[], tuple[int, int]]  # (epoch, step), both from 1, of the batch being loaded
Report = Callable[[Unreadable, str], None]  # what a loader calls for each unreadable sample, and the phase


WARNED = 10  # files warned about on the console; the rest are in the events only


class SkipReport:
    """Reports unreadable samples: a ``data`` event each time, a console warning once per file.

    After :data:`WARNED` files one more line says that the others are in the
    events only (a disk that went away should not flood the console).
    """

    def __init__(self, events: EventLog | None = None, say: Callable[[str], None] | None = None,
                 where: Where | None = None) -> None:
        self.events, self.say, self.where = events, say, where
        self.warned: set[str] = set()
        self.count = 0

    def __call__(self, unreadable: Unreadable, phase: str) -> None:
        self.count += 1
        epoch, step = self.where() if self.where is not None else (None, None)
        if self.events is not None:
            self.events.emit(ev.Data(action="skip", phase=phase, epoch=epoch, step=step, path=unreadable.path,
                                     reason=unreadable.reason))
        if self.say is not None and unreadable.path not in self.warned and len(self.warned) < WARNED:
            where = f" at epoch {epoch} step {step}" if epoch is not None and phase == "train" else ""
            what = ("left out of its batch, which is completed from the next images" if phase == "train"
                    else "left out of validation")
            self.say(f"warning: image file {unreadable.path!r} cannot be read ({unreadable.reason}){where}; "
                     f"{what}: fix or remove it")
        elif self.say is not None and unreadable.path not in self.warned and len(self.warned) == WARNED:
            self.say(f"warning: more than {WARNED} image files cannot be read; the others are recorded as "
                     "data events in events.jsonl only")
        self.warned.add(unreadable.path)


def none_readable(skipped: int) -> DataError:
    """The error of an epoch none of whose images could be read: nothing to train on (a disk gone?)."""
    return DataError(f"none of the {skipped} images left in this epoch can be read (the last warnings say "
                     "why); check that the dataset is still there, then resume")


def no_readable(unreadable: list[Unreadable]) -> DataError:
    """The error of a rank none of whose slice of a step could be read (the group cannot step without it)."""
    names = ", ".join(f"{item.path!r} ({item.reason})" for item in unreadable[:3])
    return DataError(f"no image of this rank's part of a step can be read: {names}; fix or remove them")
