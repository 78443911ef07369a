"""One detection run: ultralytics trains stage by stage; oomguard plans, records, watches and resumes.

::

    outcome = train_detect(config, run, resume)

    start event (the built-in loop's), memory sampler on
    for each stage not finished yet (one without ``stages:``):
        images per step: microbatch= or the probe's plan, keeping ultralytics' effective batch
        YOLO(model).train(..., batch=<that>, nbs=<nbs>) or resume=True from the stage's own last.pt
        callbacks: the data event (what ultralytics' checks left out), epoch rows and weights (Recorder),
                   pressure in training and validation
    finish event, or a stop event and exit status 75 when memory pressure persisted

Ultralytics' own files live in ``RUN/yolo/`` (its ``last.pt`` pickles the
model object, which a ``weights_only`` load refuses). Ultralytics works
offline (``YOLO_OFFLINE=1``: no font or AMP-check downloads) unless ``model=``
names weights that are not on disk, which ultralytics then downloads.
Not done: a smaller step inside an epoch (ultralytics fixes its batch per
training; a restart by the supervisor applies a smaller one).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oomguard.config import Config
from oomguard.events import EventLog
from oomguard.integrations.ultralytics.checks import check_detect_config
from oomguard.integrations.ultralytics.data import DataRecorder
from oomguard.integrations.ultralytics.heap import HeapTrim
from oomguard.integrations.ultralytics.plan import DEFAULT_NBS, plan_batch
from oomguard.integrations.ultralytics.pressure import PressureCallbacks, PressureExit
from oomguard.integrations.ultralytics.record import Recorder
from oomguard.integrations.ultralytics.stages import DetectStage, announce, detect_stages, finished_epochs
from oomguard.loop.lifecycle import Outcome, announce_end, announce_start
from oomguard.loop.stopping import StopCause, StopRequest
from oomguard.rundir import RunDir

if TYPE_CHECKING:
    from oomguard.devices import Device

DEFAULT_IMGSZ = 640


def _yolo_device(kind: str, torch_device: Any) -> str:
    if kind == "cuda":
        return str(torch_device.index or 0)
    return kind


def _work_offline(model: str) -> None:
    """Ultralytics offline, unless ``model`` names weights it has to download (``yolov8n.pt``)."""
    if model.endswith(".pt") and not Path(model).is_file():
        return
    os.environ.setdefault("YOLO_OFFLINE", "1")


def train_detect(config: Config, run: RunDir, resume: bool, say: Callable[[str], None] = print) -> Outcome:
    """Train ``config.model`` (a YOLO ``.yaml`` or ``.pt``) on ``config.data``, stage by stage."""
    check_detect_config(config)
    _work_offline(config.model)
    from oomguard.devices import get_device
    from oomguard.memory.budget import resolve_budget
    from oomguard.memory.meter import MemoryMeter
    from oomguard.memory.sampler import MemorySampler

    device = get_device(config.device)
    budget = resolve_budget(config.memory_limit, device)
    events = EventLog(run.events)
    stages = detect_stages(config, run)
    done = [finished_epochs(stage) if resume else 0 for stage in stages]
    announce_start(events, config, resume=any(done), device=str(device.torch_device), budget=budget.limit)
    recorder = Recorder(run, events, staged=bool(config.stages), keep=config.keep,
                        now=MemoryMeter(device).current)
    data = DataRecorder(run, events, say)  # what ultralytics' own checks left out
    sampler = MemorySampler(device, run.memory, interval=config.sample_every)
    sampler.add_listener(lambda sample: recorder.track(sample.used))
    pressure = PressureCallbacks(config.min_available, device, events, sampler, lambda: recorder.peak, say,
                                 record_unvalidated=lambda trainer: recorder.record(trainer, validated=False))
    trim = HeapTrim(device, sampler, budget.limit)
    started = time.monotonic()
    epochs = sum(stage.config.epochs for stage in stages)
    stop: StopRequest | None = None
    epochs_done = epochs
    trained = False
    sampler.start()
    try:
        previous = config.model
        for stage, finished in zip(stages, done, strict=True):
            if finished < stage.config.epochs:
                _train_stage(stage, finished, previous, device, budget.limit, events, recorder,
                             (pressure, trim), data, say)
                trained = True
            previous = str(stage.last)  # the next stage starts from this one's weights
    except PressureExit as exit_:
        stop = StopRequest(StopCause.PRESSURE, str(exit_), need=exit_.decision.need)
        epochs_done = exit_.done
    finally:
        sampler.stop()
    if stop is None and not trained:
        say("all epochs were already trained; nothing to resume")  # killed after the last epoch's save
    outcome = Outcome(stop=stop, seconds=time.monotonic() - started, epochs=epochs, epoch=epochs_done)
    announce_end(events, outcome, config, say, run.root)
    return outcome


def _train_stage(stage: DetectStage, finished: int, previous: str, device: Device, budget: int | None,
                 events: EventLog, recorder: Recorder, watches: tuple[PressureCallbacks, HeapTrim],
                 data: DataRecorder, say: Callable[[str], None]) -> None:
    """One ultralytics training: ``resume=True`` of the stage's ``last.pt``, or anew from ``previous``."""
    from ultralytics import YOLO

    pressure, trim = watches

    config, resuming = stage.config, finished > 0
    announce(stage, events, resuming, finished, say)
    imgsz = config.imgsz or DEFAULT_IMGSZ
    nbs = config.nbs or DEFAULT_NBS
    plan = plan_batch(config, device, events, imgsz, nbs, budget)  # writes the ``plan`` event
    batch = plan.batch
    if batch < config.batch:
        say(f"batch={config.batch} does not fit the memory budget: {batch} images per step, "
            f"accumulated to the same update (nbs={nbs})")
    recorder.begin(stage.index if stage.overrides is not None else None, stage.epoch_offset, plan)
    pressure.stage(stage.epoch_offset, batch)
    model = YOLO(str(stage.last) if resuming else previous)
    for name, callback in (("on_pretrain_routine_end", data.on_pretrain_routine_end),
                           ("on_train_start", recorder.on_train_start),
                           ("on_train_epoch_start", recorder.on_train_epoch_start),
                           ("on_train_epoch_start", pressure.on_train_epoch_start),
                           ("on_val_start", recorder.on_val_start),
                           ("on_fit_epoch_end", recorder.on_fit_epoch_end),
                           ("on_train_batch_end", pressure.on_train_batch_end),
                           ("on_train_epoch_start", trim.phase_start),
                           ("on_train_epoch_start", recorder.on_epoch_held),  # after the trim
                           ("on_val_start", trim.phase_start),
                           ("on_val_end", trim.phase_start),  # before ultralytics' save_model
                           ("on_train_batch_start", trim.before_batch),
                           ("on_val_batch_start", trim.before_batch),
                           ("on_val_batch_end", pressure.on_val_batch_end)):
        model.add_callback(name, callback)
    if resuming:
        model.train(resume=True, batch=batch)  # a restart's smaller batch applies
        return
    model.train(data=config.data, epochs=config.epochs, imgsz=imgsz, batch=batch, nbs=nbs,
                workers=config.workers, seed=config.seed, deterministic=config.deterministic,
                device=_yolo_device(device.kind, device.torch_device), amp=config.amp is True, plots=False,
                project=str(stage.yolo_dir.parent.resolve()), name=stage.yolo_dir.name, exist_ok=True,
                val=True, verbose=False, **_optimizer(config))


def _optimizer(config: Config) -> dict[str, Any]:
    """``lr=``: ultralytics' ``optimizer=auto`` would pick its own lr, so name the optimizer with it."""
    if config.lr is None:
        return {}
    return {"optimizer": {"sgd": "SGD", "adamw": "AdamW"}[config.optimizer], "lr0": config.lr,
            "momentum": config.momentum}
