"""``task=detect``: YOLO detection trained by ultralytics, inside an oomguard run directory.

Ultralytics trains; oomguard adds what it lacks. The effective batch stays
``batch`` through ultralytics' nominal batch size (``nbs``: it accumulates
gradients when the per-step batch is smaller), the per-step batch is the
microbatch, planned by oomguard's probe (:mod:`oomguard.detect_plan`); the
memory timeline, events, ``results.csv`` and weights in oomguard's format go
to the run directory (:mod:`oomguard.detect_record`). Ultralytics' own files
live in ``RUN/yolo/`` (its ``last.pt`` pickles the model object, which a
``weights_only`` load refuses), and ``--resume`` continues from its
``last.pt`` with ``resume=True``. Offline: ``YOLO_OFFLINE=1``, no plots (no
font download), and weights only from the given ``model=`` file.

Under memory pressure (``min_available``) an ``on_train_batch_end`` callback
checkpoints inside the epoch where ultralytics can resume from, and exits with
``EXIT_PRESSURE`` when it persists (:mod:`oomguard.detect_pressure`).
``stages:`` run one ultralytics training per stage in ``RUN/yolo/stage-<i>``,
each from the previous stage's weights (:mod:`oomguard.detect_stages`).
Not done: shrinking the microbatch inside an epoch (ultralytics' batch size is
fixed per training; a restart by the supervisor applies a smaller one).
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oomguard.config import Config
from oomguard.errors import ConfigError
from oomguard.events import EventLog
from oomguard.rundir import RunDir
from oomguard.units import format_bytes

if TYPE_CHECKING:
    from oomguard.detect_pressure import PressureWatch
    from oomguard.detect_record import Recorder
    from oomguard.detect_stages import DetectStage
    from oomguard.devices import Device

DEFAULT_IMGSZ = 640


def _yolo_device(kind: str, torch_device: Any) -> str:
    if kind == "cuda":
        return str(torch_device.index or 0)
    return kind


def is_detect(config: Config) -> bool:
    """``task=detect``, or ``task=auto`` with an ultralytics ``data.yaml``."""
    return config.task == "detect" or (config.task == "auto" and config.data.endswith((".yaml", ".yml")))


def check_detect_config(config: Config) -> None:
    """Refuse a detection config that cannot work, before the run directory exists."""
    if importlib.util.find_spec("ultralytics") is None:
        raise ConfigError("task=detect needs ultralytics: pip install 'oomguard[detect]'")
    if not config.model.endswith((".yaml", ".yml", ".pt")):
        raise ConfigError(f"task=detect needs a YOLO model file, got model={config.model!r}; "
                          "give model=yolov8n.yaml or a local .pt")
    if not config.data.endswith((".yaml", ".yml")) or not Path(config.data).is_file():
        raise ConfigError(f"task=detect needs data= an ultralytics data.yaml, got {config.data!r}")


def train_detect(config: Config, run: RunDir, resume: bool, say: Any = print) -> int:
    """Train ``config.model`` (a YOLO ``.yaml`` or ``.pt``) on ``config.data``, stage by stage.

    0 when done; ``EXIT_PRESSURE`` when memory pressure persisted (checkpointed
    where ultralytics can resume; see :mod:`oomguard.detect_pressure`).
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from oomguard.codes import EXIT_PRESSURE
    from oomguard.detect_pressure import PressureExit, PressureWatch
    from oomguard.detect_record import Recorder
    from oomguard.detect_stages import detect_stages, finished_epochs
    from oomguard.devices import get_device
    from oomguard.memory.budget import resolve_budget
    from oomguard.memory.sampler import MemorySampler

    check_detect_config(config)
    device = get_device(config.device)
    budget = resolve_budget(config.memory_limit, device)
    events = EventLog(run.events)
    stages = detect_stages(config, run)
    done = [finished_epochs(stage) if resume else 0 for stage in stages]
    events.emit("start", pid=os.getpid(), resume=any(done), device=str(device.torch_device),
                budget=budget.limit, attempt=int(os.environ.get("OOMGUARD_ATTEMPT", "1")),
                config=config.model_dump(mode="json"))
    recorder = Recorder(run, events, staged=bool(config.stages))
    sampler = MemorySampler(device, run.memory, interval=config.sample_every)
    sampler.add_listener(recorder.track)
    watch = PressureWatch(config.min_available, device, events, sampler, lambda: recorder.peak, say)
    started = time.monotonic()
    trained = False
    sampler.start()
    try:
        previous = config.model
        for stage, finished in zip(stages, done, strict=True):
            if finished < stage.config.epochs:
                _train_stage(stage, finished, previous, device, events, recorder, watch, say)
                trained = True
            previous = str(stage.last)  # the next stage starts from this one's weights
    except PressureExit as stop:
        events.emit("stop", reason=stop.reason, epoch=stop.epoch - 1, step=stop.step)
        say(f"stopped: {stop.reason}; resume when {format_bytes(stop.need)} is available (the supervisor "
            f"waits for it): oomguard train --resume project={config.project} name={config.name}")
        return EXIT_PRESSURE
    finally:
        sampler.stop()
    if not trained:
        say("all epochs were already trained; nothing to resume")  # killed after the last epoch's save
    seconds = round(time.monotonic() - started, 2)
    events.emit("finish", epochs=sum(stage.config.epochs for stage in stages), seconds=seconds, best=None,
                metrics={})
    say(f"finished in {seconds:.0f}s; results in {run.root}")
    return 0


def _train_stage(stage: DetectStage, finished: int, previous: str, device: Device, events: EventLog,
                 recorder: Recorder, watch: PressureWatch, say: Any) -> None:
    """One ultralytics training: ``resume=True`` of the stage's ``last.pt``, or anew from ``previous``."""
    from ultralytics import YOLO

    from oomguard.detect_plan import plan_microbatch
    from oomguard.detect_stages import announce

    config, resuming = stage.config, finished > 0
    announce(stage, events, resuming, finished, say)
    imgsz = config.imgsz or DEFAULT_IMGSZ
    microbatch = plan_microbatch(config, device, events, imgsz)  # writes the ``plan`` event
    recorder.begin(stage.index if stage.overrides is not None else None, stage.epoch_offset, microbatch)
    watch.stage(stage.epoch_offset, microbatch)
    model = YOLO(str(stage.last) if resuming else previous)
    for name, callback in (("on_train_epoch_start", recorder.on_train_epoch_start),
                           ("on_fit_epoch_end", recorder.on_fit_epoch_end),
                           ("on_train_batch_end", watch.on_train_batch_end)):
        model.add_callback(name, callback)
    if resuming:
        model.train(resume=True, batch=microbatch)  # a restart's smaller microbatch applies
        return
    model.train(data=config.data, epochs=config.epochs, imgsz=imgsz, batch=microbatch, nbs=config.batch,
                workers=config.workers, seed=config.seed, deterministic=config.deterministic,
                device=_yolo_device(device.kind, device.torch_device), amp=config.amp, plots=False,
                project=str(stage.yolo_dir.parent.resolve()), name=stage.yolo_dir.name, exist_ok=True,
                val=True, verbose=False, **_optimizer(config))


def _optimizer(config: Config) -> dict[str, Any]:
    """``lr=``: ultralytics' ``optimizer=auto`` would pick its own lr, so name the optimizer with it."""
    if config.lr is None:
        return {}
    return {"optimizer": {"sgd": "SGD", "adamw": "AdamW"}[config.optimizer], "lr0": config.lr,
            "momentum": config.momentum}
