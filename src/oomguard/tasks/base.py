"""What a task gives the loop: datasets, a model, the loss of a microbatch, predictions, metrics.

The loop and the Guard only ever call ``task.loss(model, microbatch)`` (a mean
over the microbatch, so the Guard can weight and accumulate it) and
``task.predict(model, batch)``; metrics keep running sums, never tensors, so
validating a big set costs no memory.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from oomguard.config import Config
from oomguard.data.dataset import ImageDataset
from oomguard.data.summary import DataSummary
from oomguard.models import build_model

Batch = dict[str, torch.Tensor]
Outputs = dict[str, torch.Tensor]


def metric_key(target: str) -> str:
    """``"Calories (kcal)" -> "mae_calories_kcal"``: a target's MAE column name in results.csv."""
    return "mae_" + (re.sub(r"[^0-9a-z]+", "_", target.lower()).strip("_") or "target")


class Task:
    """Classification; subclasses add heads (multitask) by overriding ``criterion`` and ``new_metrics``."""

    kind = "classify"
    primary_metric = "accuracy"  # higher is better; picks best.pt

    def __init__(self, config: Config, classes: list[str], train_set: ImageDataset, val_set: ImageDataset,
                 imgsz: int, data: DataSummary | None = None) -> None:
        self.config = config
        self.data = data  # what the data is (layout, split, images left out): announced as training starts
        self.classes = classes
        self.train_set = train_set
        self.val_set = val_set
        self.imgsz = imgsz
        self.scale = train_set.scale
        self.target_names = list(self.scale.names)

    @property
    def metric_names(self) -> list[str]:
        """The keys of ``new_metrics().compute()``, in order (results.csv columns)."""
        return ["val_loss", "accuracy", "top5", *(metric_key(name) for name in self.target_names)]

    def build_model(self) -> nn.Module:
        return build_model(self.config.model, len(self.classes), len(self.target_names),
                           self.config.pretrained, self.imgsz)

    def criterion(self, outputs: Outputs, batch: Batch) -> torch.Tensor:
        """Per-sample loss [B]: cross-entropy with the configured label smoothing."""
        return F.cross_entropy(outputs["logits"].float(), batch["label"], reduction="none",
                               label_smoothing=self.config.label_smoothing)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The mean loss of a (micro)batch already on the model's device: the Guard's ``loss_fn``."""
        return self.criterion(model(batch["image"]), batch).mean()

    def predict(self, model: nn.Module, batch: Batch) -> Outputs:
        """Eval outputs, batch first: ``logits`` [B, C] (and ``reg`` [B, T] for multitask)."""
        with torch.no_grad():
            return model(batch["image"])

    def new_metrics(self) -> Metrics:
        return Metrics(self)


class Metrics:
    """Running sums over validation batches of detached CPU tensors -> val_loss, accuracy, top5."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.count = 0
        self.loss_sum = 0.0
        self.correct = 0
        self.correct_top5 = 0

    def update(self, outputs: Outputs, batch: Batch) -> None:
        logits, labels = outputs["logits"].float(), batch["label"]
        self.count += len(labels)
        self.loss_sum += float(self.task.criterion(outputs, batch).sum())
        self.correct += int((logits.argmax(dim=1) == labels).sum())
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        self.correct_top5 += int((top == labels[:, None]).any(dim=1).sum())

    def totals(self) -> list[float]:
        """The running sums, in a fixed order: what ranks add up to get the group's metrics."""
        return [self.count, self.loss_sum, self.correct, self.correct_top5]

    def set_totals(self, values: list[float]) -> None:
        self.count, self.correct, self.correct_top5 = int(values[0]), int(values[2]), int(values[3])
        self.loss_sum = values[1]

    def compute(self) -> dict[str, float]:
        count = self.count or math.nan  # no batches: NaN metrics, not a crash
        return {"val_loss": self.loss_sum / count, "accuracy": self.correct / count,
                "top5": self.correct_top5 / count}
