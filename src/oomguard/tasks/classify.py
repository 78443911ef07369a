"""Classification: the base Task as is (cross-entropy, accuracy, top-5), opened from any layout."""

from __future__ import annotations

from oomguard.tasks.base import Metrics, Task

ClassifyTask = Task
ClassifyMetrics = Metrics

__all__ = ["ClassifyMetrics", "ClassifyTask"]
