"""The heap's free pages go back to the OS when a YOLO epoch's training, its validation or its save
starts, and near the budget before each batch.

glibc keeps the pages a step or a validation freed, and ultralytics never
trims: without this a validation stacks its memory on what training left,
and a run near its budget creeps up batch after batch, well past what the
probe measured and predicted. The built-in loop's Guard trims the same way
(``NEAR_BUDGET``). A trim costs about a millisecond plus re-touching the
pages, so it is done at each batch only where the budget is close.
"""

from __future__ import annotations

from typing import Any

from oomguard.devices import Device
from oomguard.engine.guard import NEAR_BUDGET
from oomguard.memory.sampler import MemorySampler


class HeapTrim:
    """Ultralytics callbacks: :meth:`phase_start` (an epoch's training, a validation, the save after it)
    always trims,
    :meth:`before_batch` (each training and validation batch) near the budget."""

    def __init__(self, device: Device, sampler: MemorySampler, budget: int | None) -> None:
        self.device, self.sampler = device, sampler
        self.threshold = NEAR_BUDGET * budget if budget is not None and device.unified else None
        self.trims = 0

    def phase_start(self, _owner: Any) -> None:
        self.device.release_cache()
        self.trims += 1

    def before_batch(self, _owner: Any) -> None:
        latest = self.sampler.latest
        if self.threshold is not None and latest is not None and latest.used > self.threshold:
            self.device.release_cache()
            self.trims += 1
