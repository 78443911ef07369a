"""What ultralytics' own checks left out of a detection dataset, in the run's events and ``skipped.csv``.

Ultralytics checks every image and label when it first scans a dataset,
leaves the corrupt ones out with a warning (``...: ignoring corrupt
image/label: <why>``) and keeps the result in its ``labels.cache`` beside the
labels. oomguard does not check detection images again; once ultralytics
has built its loaders (``on_pretrain_routine_end``) it reads that cache and
writes a ``data`` event (images of each split, those left out and why, like
a classification run's) and ``RUN/skipped.csv``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oomguard import events as ev
from oomguard.data.record import Skipped, write_skipped
from oomguard.data.summary import EVENT_FILES
from oomguard.events import EventLog
from oomguard.rundir import RunDir

LAYOUT = "ultralytics (images/ and labels/, its data.yaml)"
_CORRUPT = ": ignoring corrupt "
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def corrupt_images(dataset: Any, split: str) -> list[Skipped]:
    """The images ultralytics left out of ``dataset`` as corrupt, from its labels cache (none without one)."""
    from ultralytics.data.utils import load_dataset_cache_file

    label_files = getattr(dataset, "label_files", None)
    if not label_files:
        return []
    try:
        cache = load_dataset_cache_file(Path(label_files[0]).parent.with_suffix(".cache"))
    except (OSError, ValueError, EOFError):
        return []  # a labels folder ultralytics could not write its cache to
    prefix = _ANSI.sub("", str(getattr(dataset, "prefix", "")))
    skipped = []
    for message in cache.get("msgs", []) if isinstance(cache, dict) else []:
        text = _ANSI.sub("", str(message)).removeprefix(prefix)
        if _CORRUPT not in text:
            continue  # a repaired JPEG, duplicate labels removed: the image is kept
        image, _, why = text.partition(_CORRUPT)
        skipped.append(Skipped(image, split, why.partition(": ")[2] or why))
    return skipped


class DataRecorder:
    """An ultralytics callback: the ``data`` event of a detection run, once its datasets are built."""

    def __init__(self, run: RunDir, events: EventLog, say: Callable[[str], None]) -> None:
        self.run, self.events, self.say = run, events, say
        self.done = False

    def on_pretrain_routine_end(self, trainer: Any) -> None:
        if self.done:  # the next stage builds the same datasets again
            return
        self.done = True
        loaders = (("train", getattr(trainer, "train_loader", None)),
                   ("val", getattr(trainer, "test_loader", None)))
        sizes: dict[str, int] = {}
        skipped: list[Skipped] = []
        seen: set[str] = set()
        for split, loader in loaders:
            dataset = getattr(loader, "dataset", None)
            if dataset is None:
                continue
            sizes[split] = len(getattr(dataset, "im_files", []))
            skipped += [item for item in corrupt_images(dataset, split) if item.path not in seen]
            seen.update(item.path for item in skipped)
        data = trainer.data if isinstance(getattr(trainer, "data", None), dict) else {}
        root = Path(str(data.get("path", ".")))
        if skipped:
            write_skipped(self.run.skipped, root, skipped)
            images = "image" if len(skipped) == 1 else "images"
            self.say(f"data: ultralytics left out {len(skipped)} corrupt {images} (its warnings above); "
                     f"all are listed in {self.run.skipped}")
        self.events.emit(ev.Data(
            action="index", layout=LAYOUT, validation="ultralytics' val split", classes=data.get("nc"),
            train=sizes.get("train"),
            val=sizes.get("val"), skipped=len(skipped),
            skipped_files=[item.path for item in skipped[:EVENT_FILES]] or None,
            listed_in=str(self.run.skipped) if skipped else None,
        ))
