"""``task=detect``: YOLO detection trained by ultralytics, inside an oomguard run directory.

Ultralytics trains; oomguard adds what it lacks. The effective batch stays
``batch`` through ultralytics' nominal batch size (``nbs``: it accumulates
gradients when the per-step batch is smaller), the per-step batch is the
microbatch; the memory timeline, events, ``results.csv`` and weights in
oomguard's format go to the run directory. Ultralytics' own files live in
``RUN/yolo/`` (its ``last.pt`` pickles the model object, which a
``weights_only`` load refuses), and ``--resume`` continues from its last epoch
with ``resume=True``. Offline: ``YOLO_OFFLINE=1``, no plots (no font download),
and weights only from the given ``model=`` file.

The microbatch comes from oomguard's probe (:mod:`oomguard.detect_plan`).
Not done yet: pressure checkpoints inside an epoch and shrinking during an
epoch (ultralytics checkpoints at epoch ends; a kill restarts from there).
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any

from oomguard.config import Config
from oomguard.errors import ConfigError
from oomguard.events import EventLog
from oomguard.rundir import RunDir

COLUMNS = ["epoch", "train_loss", "box_loss", "cls_loss", "dfl_loss", "val_loss", "precision", "recall",
           "map50", "map50_95", "lr", "microbatch", "eval_microbatch", "peak_memory_mb", "seconds"]
METRICS = {"metrics/precision(B)": "precision", "metrics/recall(B)": "recall", "metrics/mAP50(B)": "map50",
           "metrics/mAP50-95(B)": "map50_95"}
DEFAULT_IMGSZ = 640


def _yolo_device(kind: str, torch_device: Any) -> str:
    if kind == "cuda":
        return str(torch_device.index or 0)
    return kind


class _Recorder:
    """Ultralytics callbacks that write oomguard's run directory: rows, events, weights."""

    def __init__(self, run: RunDir, events: EventLog, microbatch: int) -> None:
        self.run, self.events, self.microbatch = run, events, microbatch
        self.peak = 0
        self.started = time.monotonic()

    def track(self, sample: Any) -> None:
        self.peak = max(self.peak, sample.tree_rss + sample.device_reserved)

    def on_train_epoch_start(self, trainer: Any) -> None:
        self.started, self.peak = time.monotonic(), 0

    def on_fit_epoch_end(self, trainer: Any) -> None:
        import torch

        from oomguard.loop.results import csv_cell, read_rows, write_rows

        if trainer.epoch >= trainer.epochs:  # ultralytics' final validation of best.pt calls this again
            return
        items = trainer.label_loss_items(trainer.tloss, prefix="train") if trainer.tloss is not None else {}
        losses = [float(items.get(f"train/{k}", float("nan"))) for k in ("box_loss", "cls_loss", "dfl_loss")]
        metrics = trainer.metrics or {}
        val_losses = [float(v) for k, v in metrics.items() if k.startswith("val/")]
        row: dict[str, object] = {
            "epoch": trainer.epoch + 1, "train_loss": sum(losses), "box_loss": losses[0],
            "cls_loss": losses[1], "dfl_loss": losses[2],
            "val_loss": sum(val_losses) if val_losses else float("nan"),
            **{ours: float(metrics.get(theirs, float("nan"))) for theirs, ours in METRICS.items()},
            "lr": float(next(iter(trainer.lr.values()))) if trainer.lr else float("nan"),
            "microbatch": self.microbatch, "eval_microbatch": self.microbatch,
            "peak_memory_mb": round(self.peak / 1e6, 1), "seconds": round(time.monotonic() - self.started, 2),
        }
        rows: list[dict[str, object]] = [
            dict(r) for r in read_rows(self.run.results) if int(r["epoch"]) < trainer.epoch + 1
        ]  # a resumed run redoes the epoch it was killed in
        write_rows(self.run.results, COLUMNS, [*rows, {k: csv_cell(v) for k, v in row.items()}])
        model = trainer.ema.ema if trainer.ema is not None else trainer.model
        state = {"model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                 "epoch": trainer.epoch + 1, "best_metric": float(trainer.best_fitness or 0.0)}
        self.run.weights.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        for path in (self.run.last, *((self.run.best,) if trainer.best_fitness == trainer.fitness else ())):
            tmp = path.with_name(path.name + ".tmp")
            torch.save(state, tmp)
            os.replace(tmp, path)
        self.events.emit("checkpoint", path=str(self.run.last), epoch=trainer.epoch + 1, step=None,
                         seconds=round(time.monotonic() - started, 3), bytes=self.run.last.stat().st_size)
        self.events.emit("epoch", epoch=trainer.epoch + 1, **{k: v for k, v in row.items() if k != "epoch"})


def is_detect(config: Config) -> bool:
    """``task=detect``, or ``task=auto`` with an ultralytics ``data.yaml``."""
    return config.task == "detect" or (config.task == "auto" and config.data.endswith((".yaml", ".yml")))


def check_detect_config(config: Config) -> None:
    """Refuse a detection config that cannot work, before the run directory exists."""
    if importlib.util.find_spec("ultralytics") is None:
        raise ConfigError("task=detect needs ultralytics: pip install 'oomguard[detect]'")
    if config.stages:
        raise ConfigError("stages: are not available with task=detect yet; run the stages as separate "
                          "runs with model=<previous run>/yolo/weights/last.pt")
    if not config.model.endswith((".yaml", ".yml", ".pt")):
        raise ConfigError(f"task=detect needs a YOLO model file, got model={config.model!r}; "
                          "give model=yolov8n.yaml or a local .pt")
    if not config.data.endswith((".yaml", ".yml")) or not Path(config.data).is_file():
        raise ConfigError(f"task=detect needs data= an ultralytics data.yaml, got {config.data!r}")


def train_detect(config: Config, run: RunDir, resume: bool, say: Any = print) -> int:
    """Train ``config.model`` (a YOLO ``.yaml`` or ``.pt``) on ``config.data`` (a data.yaml); 0 when done."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    from oomguard.detect_plan import plan_microbatch
    from oomguard.devices import get_device
    from oomguard.loop.results import read_rows
    from oomguard.memory.budget import resolve_budget
    from oomguard.memory.sampler import MemorySampler

    check_detect_config(config)
    device = get_device(config.device)
    budget = resolve_budget(config.memory_limit, device)
    events = EventLog(run.events)
    yolo_dir = run.root / "yolo"
    last = yolo_dir / "weights" / "last.pt"  # ultralytics' own, for resume=True
    resuming = resume and last.is_file()
    events.emit("start", pid=os.getpid(), resume=resuming, device=str(device.torch_device),
                budget=budget.limit, attempt=int(os.environ.get("OOMGUARD_ATTEMPT", "1")),
                config=config.model_dump(mode="json"))
    imgsz = config.imgsz or DEFAULT_IMGSZ
    microbatch = plan_microbatch(config, device, events, imgsz)  # writes the ``plan`` event
    recorder = _Recorder(run, events, microbatch)
    sampler = MemorySampler(device, run.memory, interval=config.sample_every)
    sampler.add_listener(recorder.track)
    model = YOLO(str(last) if resuming else config.model)
    for name in ("on_train_epoch_start", "on_fit_epoch_end"):
        model.add_callback(name, getattr(recorder, name))
    started = time.monotonic()
    sampler.start()
    try:
        if resuming and len(read_rows(run.results)) >= config.epochs:
            say("all epochs were already trained; nothing to resume")  # killed after the last epoch's save
        elif resuming:
            model.train(resume=True, batch=microbatch)  # a restart's smaller microbatch applies
        else:
            model.train(data=config.data, epochs=config.epochs, imgsz=imgsz, batch=microbatch,
                        nbs=config.batch, workers=config.workers, seed=config.seed,
                        deterministic=config.deterministic,
                        device=_yolo_device(device.kind, device.torch_device),
                        amp=config.amp, plots=False, project=str(run.root.resolve()),
                        name="yolo", exist_ok=True,
                        val=True, verbose=False, **({"lr0": config.lr} if config.lr else {}))
    finally:
        sampler.stop()
    seconds = round(time.monotonic() - started, 2)
    events.emit("finish", epochs=config.epochs, seconds=seconds, best=None, metrics={})
    say(f"finished in {seconds:.0f}s; results in {run.root}")
    return 0
