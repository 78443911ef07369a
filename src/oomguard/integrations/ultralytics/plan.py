"""How many images a YOLO step takes: ultralytics' meaning of ``batch`` and ``nbs``, fitted to the budget.

Ultralytics trains ``batch`` images per step and accumulates
``max(round(nbs / batch), 1)`` steps before each optimizer step (``nbs``, the
nominal batch, is 64 by default), so its optimizer sees
:func:`effective_batch` images per update and scales weight decay by that over
``nbs``. oomguard keeps that training exactly: when ``batch`` images do not
fit the memory budget it lowers ``batch`` to a size whose accumulation gives
the same effective batch (:func:`step_batch`), with the same ``nbs``.

The size that fits is measured by oomguard's probe on the real detection
model, with the optimizer state and the EMA copy that ultralytics trains
with, on synthetic images of the run's ``imgsz``. A given ``microbatch=``
skips the probe.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from oomguard import events as ev
from oomguard.config import Config
from oomguard.devices import Device
from oomguard.events import EventLog
from oomguard.integrations.ultralytics.checks import class_count

DEFAULT_NBS = 64


def effective_batch(batch: int, nbs: int) -> int:
    """Images per optimizer update when ultralytics trains ``batch`` images per step with ``nbs``."""
    return batch * max(round(nbs / batch), 1)


def step_batch(fits: int, batch: int, nbs: int) -> int:
    """The largest images per step, at most ``fits`` and ``batch``, that keeps ``batch``'s effective batch.

    When no smaller size gives exactly the same effective batch (a ``batch``
    above ``nbs`` that is not a multiple of a size that fits), the largest size
    that fits is taken and the update is a little different.
    """
    top = max(1, min(fits, batch))
    wanted = effective_batch(batch, nbs)
    for size in range(top, 0, -1):
        if effective_batch(size, nbs) == wanted:
            return size
    return top


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


def plan_batch(config: Config, device: Device, events: EventLog, imgsz: int, nbs: int,
               budget: int | None) -> int:
    """Images per step for ultralytics: ``microbatch=`` if given (no probe), else what the probe says fits.

    Either way the ``plan`` event says the plan in force (a given one has no measurements).
    """
    if isinstance(config.microbatch, int):
        given = min(config.microbatch, config.batch)
        events.emit(ev.Plan(microbatch=given, eval_microbatch=given, ceiling=config.batch, budget=budget,
                            fit={}, table=[], eval_fit=None, eval_table=[], optimizer_peak=0,
                            snapshot_bytes=0, start=0, seconds=0.0))
        return given
    from oomguard.engine.guard import Guard

    model = _detection_model(config, class_count(config.data)).to(device.torch_device).train()
    # What ultralytics holds besides the step: AdamW's two moments per weight, and the EMA copy.
    ema = copy.deepcopy(model).eval()
    for parameter in ema.parameters():
        parameter.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)
    guard = Guard(model, optimizer, memory_limit=config.memory_limit, eval_microbatch=config.val_batch,
                  ceiling=config.batch, device=device, events=events, memory_cap=config.memory_cap)
    images = torch.rand(config.batch, 3, imgsz, imgsz)
    guard.plan({"image": images}, _loss, _predict)
    fits = int(guard.microbatch or 1)
    del guard, optimizer, model, ema
    device.empty_cache()
    batch = step_batch(fits, config.batch, nbs)
    if batch < fits:
        events.emit(ev.Shrink(phase="train", from_=fits, to=batch, predicted=None,
                              reason=f"the largest size that keeps ultralytics' effective batch of "
                                     f"{effective_batch(config.batch, nbs)} (nbs={nbs})"))
    return batch
