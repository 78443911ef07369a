"""Multitask: a class plus regression targets from one image (e.g. dish and its calories).

The loss adds ``reg_weight`` times the mean squared error on standardised
targets to the cross-entropy; metrics add the mean absolute error of each
target in its original units.
"""

from __future__ import annotations

import numpy as np
import torch

from oomguard.tasks.base import Batch, Metrics, Outputs, Task, metric_key


class MultitaskTask(Task):
    kind = "multitask"

    def criterion(self, outputs: Outputs, batch: Batch) -> torch.Tensor:
        loss = super().criterion(outputs, batch)
        if self.target_names:
            error = outputs["reg"].float() - batch["targets"]
            loss = loss + self.config.reg_weight * error.pow(2).mean(dim=1)
        return loss

    def new_metrics(self) -> MultitaskMetrics:
        return MultitaskMetrics(self)


class MultitaskMetrics(Metrics):
    """Classification metrics plus ``mae_<target>`` in the target's original units."""

    def __init__(self, task: Task) -> None:
        super().__init__(task)
        self.abs_error_sum = np.zeros(len(task.target_names))

    def update(self, outputs: Outputs, batch: Batch) -> None:
        super().update(outputs, batch)
        if self.task.target_names:
            error = (outputs["reg"].double() - batch["targets"].double()).abs().sum(dim=0)
            self.abs_error_sum += error.numpy() * self.task.scale.std  # standardised -> original units

    def totals(self) -> list[float]:
        return [*super().totals(), *(float(v) for v in self.abs_error_sum)]

    def set_totals(self, values: list[float]) -> None:
        super().set_totals(values)
        self.abs_error_sum = np.array(values[len(super().totals()):], dtype=np.float64)

    def compute(self) -> dict[str, float]:
        metrics = super().compute()
        for name, total in zip(self.task.target_names, self.abs_error_sum, strict=True):
            metrics[metric_key(name)] = float(total / self.count) if self.count else float("nan")
        return metrics
