"""What a YOLO run leaves in oomguard's run directory: ``results.csv`` rows, ``epoch`` events, weights.

Ultralytics calls :class:`Recorder` at each epoch end (``on_fit_epoch_end``).
Rows are rewritten whole (atomically): a resumed epoch replaces the row of the
epoch it redoes, so ``results.csv`` holds one row per finished epoch. With
``stages:`` the epochs are numbered across stages (``epoch_offset``) and a
``stage`` column says which stage trained the row. ``weights/last.pt`` and
``weights/best.pt`` are written by oomguard's checkpoint store (atomic,
checksummed) and hold a plain state dict (``torch.load(weights_only=True)``
works); ``best.pt`` is the best fitness of the whole run, across stages.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from oomguard import events as ev
from oomguard.checkpoint import CheckpointError, CheckpointStore, load_checkpoint, snapshot
from oomguard.engine.evidence import Observed, peak_check
from oomguard.engine.prediction import Prediction
from oomguard.events import EventLog
from oomguard.integrations.ultralytics.plan import DetectPlan
from oomguard.loop.results import csv_cell, read_rows, write_rows
from oomguard.rundir import RunDir

COLUMNS = ["epoch", "train_loss", "box_loss", "cls_loss", "dfl_loss", "val_loss", "precision", "recall",
           "map50", "map50_95", "lr", "microbatch", "eval_microbatch", "effective_batch", "peak_memory_mb",
           "predicted_peak_mb", "seconds"]
METRICS = {"metrics/precision(B)": "precision", "metrics/recall(B)": "recall", "metrics/mAP50(B)": "map50",
           "metrics/mAP50-95(B)": "map50_95"}


def _stored_best(run: RunDir) -> float:
    """The fitness of ``weights/best.pt`` (from an earlier stage or attempt); -inf when there is none."""
    if not run.best.is_file():
        return -math.inf
    try:
        return float(load_checkpoint(run.best).get("best_metric", -math.inf))
    except CheckpointError:  # a torn file: the next best epoch replaces it
        return -math.inf


class Recorder:
    """Ultralytics callbacks that write oomguard's run directory: rows, events, weights."""

    def __init__(self, run: RunDir, events: EventLog, staged: bool, keep: int,
                 now: Callable[[], int] | None = None) -> None:
        self.run, self.events = run, events
        #: Memory in use now, as the budget counts it (a fresh reading): what an epoch starts from.
        self.now = now
        self.store = CheckpointStore(run.weights, keep=keep, events=events)
        self.columns = [COLUMNS[0], "stage", *COLUMNS[1:]] if staged else COLUMNS
        self.stage: int | None = None  # 1-based, None without stages
        self.epoch_offset = 0
        self.plan = DetectPlan(0)
        #: The epoch's peak predicted: the plan's, on the memory held when the epoch started.
        self.prediction: Prediction | None = None
        self.best = _stored_best(run)
        self.peak = 0
        #: What the epoch's training and validation measured: held against the plan's prediction.
        self.observed = Observed()
        self.phase = "activations"
        self.started = time.monotonic()
        self.effective_batch = 0

    def begin(self, stage: int | None, epoch_offset: int, plan: DetectPlan) -> None:
        """A stage (the whole run without ``stages:``) starts: its number, epoch offset and plan."""
        self.stage, self.epoch_offset, self.plan = stage, epoch_offset, plan
        self.prediction = plan.prediction

    def on_epoch_held(self, _trainer: Any) -> None:
        """The epoch's prediction: the plan's phases, ultralytics' save and its EMA on the memory held
        now (read after the epoch start's trim), in place of the probe's estimate of it.

        The probe measures the process before ultralytics builds its trainer; what the trainer then
        holds (its datasets and loaders, what its first validation and save leave) is read here, at
        each epoch's start, before any of the epoch's steps: the steps stay the probe's prediction.
        """
        prediction = self.plan.prediction
        if prediction is None or self.now is None:
            return
        # The save's kept part is not held yet at an epoch's start: it stays in the prediction as it was.
        unseen = self.now() - prediction.between_steps  # held now beyond the probe's estimate (or below it)
        self.prediction = prediction.with_parts(process=prediction.part("process") + unseen)

    def track(self, used: int) -> None:
        """The epoch's peak memory (the sampler's listener passes each reading's memory used)."""
        self.peak = max(self.peak, used)
        self.observed.between_steps(used)  # the least memory of the epoch: what it held throughout
        self.observed.phase(self.phase, used, self.plan.val_batch if self.phase == "evaluation" else
                            self.plan.batch)

    def on_val_start(self, validator: Any) -> None:
        self.phase = "evaluation"

    def on_train_start(self, trainer: Any) -> None:
        # What ultralytics' optimizer sees per update once warm-up is over: images per step times the
        # steps it accumulates (its own numbers, read before warm-up ramps the accumulation up to them).
        self.effective_batch = int(trainer.batch_size * trainer.accumulate)

    def on_train_epoch_start(self, trainer: Any) -> None:
        self.started, self.peak = time.monotonic(), 0
        self.observed, self.phase = Observed(), "activations"

    def on_fit_epoch_end(self, trainer: Any) -> None:
        if trainer.epoch >= trainer.epochs:  # ultralytics' final validation of best.pt calls this again
            return
        self.record(trainer, validated=True)

    def record(self, trainer: Any, validated: bool) -> None:
        """The row, ``epoch`` event and weights of ``trainer``'s epoch (its metrics when ``validated``)."""
        epoch = self.epoch_offset + trainer.epoch + 1
        items = trainer.label_loss_items(trainer.tloss, prefix="train") if trainer.tloss is not None else {}
        losses = [float(items.get(f"train/{k}", float("nan"))) for k in ("box_loss", "cls_loss", "dfl_loss")]
        metrics = (trainer.metrics or {}) if validated else {}
        val_losses = [float(v) for k, v in metrics.items() if k.startswith("val/")]
        row: dict[str, object] = {
            "epoch": epoch, "stage": self.stage, "train_loss": sum(losses), "box_loss": losses[0],
            "cls_loss": losses[1], "dfl_loss": losses[2],
            "val_loss": sum(val_losses) if val_losses else float("nan"),
            **{ours: float(metrics.get(theirs, float("nan"))) for theirs, ours in METRICS.items()},
            "lr": float(next(iter(trainer.lr.values()))) if trainer.lr else float("nan"),
            "microbatch": self.plan.batch, "eval_microbatch": self.plan.val_batch,
            "effective_batch": self.effective_batch, "peak_memory_mb": round(self.peak / 1e6, 1),
            "predicted_peak_mb": self._check(epoch), "seconds": round(time.monotonic() - self.started, 2),
        }
        kept: list[dict[str, object]] = [
            dict(r) for r in read_rows(self.run.results) if int(r["epoch"]) < epoch
        ]  # a resumed run redoes the epoch it was stopped in
        write_rows(self.run.results, self.columns, [*kept, {k: csv_cell(v) for k, v in row.items()}])
        self._save_weights(trainer, epoch, validated)
        fields = {k: v for k, v in row.items() if k not in ("epoch", "stage")}
        self.events.emit(ev.Epoch(epoch=epoch, stage=self.stage, row=fields))

    def _check(self, epoch: int) -> float | None:
        """The epoch's peak against the plan's prediction (a ``peak_check`` event); the predicted MB."""
        prediction = self.prediction
        if prediction is None or not self.peak:
            return None
        self.events.emit(peak_check(epoch, prediction, self.peak, self.observed, self.plan.margin,
                                    (self.plan.batch, self.plan.val_batch)))
        return round(prediction.peak / 1e6, 1)

    def _save_weights(self, trainer: Any, epoch: int, validated: bool) -> None:
        fitness = float(trainer.fitness) if validated and trainer.fitness is not None else -math.inf
        better = validated and fitness >= self.best
        self.best = max(self.best, fitness)
        model = trainer.ema.ema if trainer.ema is not None else trainer.model
        state = snapshot({"model": model.state_dict(), "epoch": epoch,
                          "best_metric": self.best if math.isfinite(self.best) else 0.0})
        # Ultralytics counts no global step; checkpoints of a detection run are named by epoch.
        self.store.save(state, epoch, best=better)
