"""The memory plan of a YOLO run: oomguard's probe on the real detection model, before ultralytics trains.

Ultralytics picks a batch by a share of GPU memory (AutoBatch, CUDA only) and
knows nothing of a host-memory budget. Here the Guard measures the peak of a
train step (forward, loss, backward) and of an eval pass at growing microbatch
sizes on synthetic images of the run's ``imgsz``, and picks the largest that
fits the budget; the ``plan`` event records the table. Ultralytics then trains
with ``batch=<microbatch>`` and ``nbs=<batch>``, which accumulates gradients up
to the effective batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from oomguard.config import Config
from oomguard.devices import Device
from oomguard.errors import ConfigError
from oomguard.events import EventLog


def class_count(data_yaml: str) -> int:
    """The number of classes in an ultralytics data.yaml (``names`` as a list or a mapping, or ``nc``)."""
    try:
        spec = yaml.safe_load(Path(data_yaml).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"data={data_yaml!r} is not a readable data.yaml ({type(err).__name__})") from None
    names = spec.get("names")
    count = len(names) if isinstance(names, list | dict) else spec.get("nc")
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"data={data_yaml!r} names no classes; give names: {{0: cat, ...}} "
                          "as ultralytics does")
    return count


def _detection_model(config: Config, classes: int) -> torch.nn.Module:
    from ultralytics import YOLO
    from ultralytics.cfg import get_cfg

    model: Any
    if config.model.endswith((".yaml", ".yml")):
        from ultralytics.nn.tasks import DetectionModel

        model = DetectionModel(config.model, nc=classes, verbose=False)
    else:
        model = YOLO(config.model).model  # a .pt: its own classes; the head's size barely moves the peak
    model = model.float()  # a stripped .pt holds float16 weights
    model.args = get_cfg()  # the loss gains (box, cls, dfl) ultralytics trains with
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def _loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A YOLO train step on synthetic images with one centred box each: the mean loss per image."""
    images = batch["image"]
    count = len(images)
    targets = {
        "img": images, "cls": torch.zeros(count, 1, device=images.device),
        "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]], device=images.device).repeat(count, 1),
        "batch_idx": torch.arange(count, device=images.device, dtype=torch.float32),
    }
    loss, _ = model.loss(targets)  # type: ignore[operator]
    return loss.sum() / count


def _predict(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
    with torch.no_grad():
        out = model(batch["image"])
    return {"pred": (out[0] if isinstance(out, list | tuple) else out).float()}


def plan_microbatch(config: Config, device: Device, events: EventLog, imgsz: int) -> int:
    """The microbatch ultralytics should train with: ``microbatch=`` if given, else the probe's choice."""
    from oomguard.engine.guard import Guard

    model = _detection_model(config, class_count(config.data)).to(device.torch_device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    guard = Guard(model, optimizer, memory_limit=config.memory_limit, microbatch=config.microbatch,
                  eval_microbatch=config.val_batch, ceiling=config.batch, device=device, events=events,
                  memory_cap=config.memory_cap)
    images = torch.rand(config.batch, 3, imgsz, imgsz)
    guard.plan({"image": images}, _loss, _predict)
    microbatch = int(guard.microbatch or 1)
    del guard, optimizer, model
    device.empty_cache()
    return microbatch
