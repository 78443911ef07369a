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
import functools
import importlib
import importlib.util
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from oomguard import events as ev
from oomguard.config import Config
from oomguard.devices import Device
from oomguard.engine.prediction import Prediction
from oomguard.events import EventLog
from oomguard.integrations.ultralytics.checks import class_count, train_images
from oomguard.memory.meter import MemoryMeter

DEFAULT_NBS = 64
#: Ultralytics validates during training at twice the images of a training step.
VAL_FACTOR = 2


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


@dataclass(frozen=True)
class DetectPlan:
    """Images per step for ultralytics, and the epoch's peak predicted for them (None without a probe)."""

    batch: int
    prediction: Prediction | None = None
    #: Share of the room (budget less what is held) the plan left free.
    margin: float = 0.0

    @property
    def val_batch(self) -> int:
        """Images per validation forward: ultralytics validates at twice the training batch."""
        return VAL_FACTOR * self.batch


def _import_what_saving_imports() -> None:
    """Ultralytics' first ``save_model`` imports polars and reads its results.csv with it (which starts
    polars' thread pool and allocator, memory that stays): do that now, so that the probe measures the
    process as it will be."""
    if importlib.util.find_spec("polars") is not None:
        polars: Any = importlib.import_module("polars")
        polars.read_csv(b"epoch,loss\n1,0.5\n", infer_schema_length=None).to_dict(as_series=False)


def save_cost(ema: torch.nn.Module, meter: MemoryMeter, step: Callable[[], object]) -> tuple[int, int]:
    """Bytes ultralytics' ``save_model`` adds at its peak, and a training ``step``'s peak right after it
    (over the same start), measured by doing what they do: a half copy of the EMA model and of AdamW's
    moments (from a full copy), pickled into memory; then the step on the heap the save left.

    The save runs with no step beside it, but on the host the heap keeps some of what it freed, and
    whether the next steps reuse those pages depends on their sizes (small images: not at all, large:
    mostly): the step after it says how much of the save stays beside a step.
    """
    meter.device.release_cache()
    meter.mark()
    start = meter.current()
    half = copy.deepcopy(ema).half()
    moments = {i: {"exp_avg": p.detach().clone(), "exp_avg_sq": p.detach().clone()}
               for i, p in enumerate(ema.parameters())}
    state = {i: {k: v.half() for k, v in entry.items()} for i, entry in moments.items()}
    buffer = io.BytesIO()
    torch.save({"ema": half, "optimizer": {"state": state}}, buffer)
    serialized = buffer.getvalue()  # a copy, which it writes to last.pt (and best.pt)
    cost = meter.peak() - start
    del half, moments, state, buffer, serialized
    meter.mark()
    step()
    after = meter.peak() - start
    meter.device.release_cache()
    return max(0, cost), max(0, after)


def with_save(prediction: Prediction, cost: int, step_after: int) -> Prediction:
    """``prediction`` with ultralytics' save as the part of it that stays beside the steps (``snapshot``):
    what the step after a save peaked at over the step's own prediction, and at least what the save
    itself needs over the largest phase (it runs alone, after validation)."""
    phases = prediction.part(prediction.largest_phase)
    kept = max(step_after - prediction.part("activations"), cost - phases, 0)
    return prediction.with_parts(snapshot=kept)


def mosaic_buffer(config: Config, imgsz: int, batch: int) -> int:
    """Bytes of the decoded images ultralytics keeps for its mosaics: ``min(images, 8 * batch, 1000)``
    of them, each at most ``imgsz`` square in 8-bit RGB."""
    images = train_images(config.data)
    kept = min(8 * batch, 1000) if images is None else min(images, 8 * batch, 1000)
    return kept * imgsz * imgsz * 3


def plan_batch(config: Config, device: Device, events: EventLog, imgsz: int, nbs: int,
               budget: int | None) -> DetectPlan:
    """Images per step for ultralytics: ``microbatch=`` if given (no probe), else what the probe says fits.

    Either way the ``plan`` event says the plan in force (a given one has no measurements); a probed
    one also predicts the epoch's peak: the model, its EMA copy and AdamW's state held, a step of
    ``batch`` images, a validation forward of twice that, a checkpoint in flight.
    """
    if isinstance(config.microbatch, int):
        given = min(config.microbatch, config.batch)
        events.emit(ev.Plan(microbatch=given, eval_microbatch=VAL_FACTOR * given, ceiling=config.batch,
                            budget=budget, fit={}, table=[], eval_fit=None, eval_table=[], optimizer_peak=0,
                            snapshot_bytes=0, start=0, seconds=0.0))
        return DetectPlan(given)
    from oomguard.engine.guard import Guard
    from oomguard.engine.probe import model_bytes
    from oomguard.engine.refusal import NoFitError

    _import_what_saving_imports()
    model = _detection_model(config, class_count(config.data)).to(device.torch_device).train()
    # What ultralytics holds besides the step: AdamW's two moments per weight, and the EMA copy.
    ema = copy.deepcopy(model).eval()
    for parameter in ema.parameters():
        parameter.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)
    guard = Guard(model, optimizer, memory_limit=config.memory_limit, ceiling=config.batch, device=device,
                  events=EventLog(None), memory_cap=config.memory_cap)
    guard.sizer.eval.ceiling = VAL_FACTOR * config.batch  # ultralytics' own validation batch
    images = torch.rand(VAL_FACTOR * config.batch, 3, imgsz, imgsz)
    try:
        plan = guard.plan({"image": images}, _loss, _predict)
    except NoFitError as refusal:
        events.emit(refusal.event)  # the run directory says why, as well as the error
        raise
    fits = int(guard.microbatch or 1)
    batch = step_batch(fits, config.batch, nbs)
    meter = guard.meter
    prediction = plan.prediction.with_parts(
        activations=plan.curve.extra(batch) if plan.curve is not None else 0,
        evaluation=plan.eval_curve.extra(VAL_FACTOR * batch) if plan.eval_curve is not None else 0,
    ).moved(model_bytes(ema), "process", "ema")
    step = functools.partial(guard.runner.accumulate, {"image": images[:batch]}, batch, [(0, batch)], _loss)
    cost, step_after = save_cost(ema, meter, step)
    guard.runner.drop_gradients()
    # oomguard's own copy of the weights is taken after the epoch's peak is read (the recorder).
    prediction = with_save(prediction, cost, step_after)
    del guard, step, optimizer, model, ema, images
    device.empty_cache()
    # What the process holds with the probe's model gone (the libraries' caches the probe filled stay):
    # ultralytics' own model, EMA and optimizer come on top of it.
    left = meter.current() - prediction.part("workers")
    prediction = prediction.with_parts(process=max(prediction.part("process"), left),
                                       cache=mosaic_buffer(config, imgsz, batch))
    if batch < fits:
        events.emit(ev.Shrink(phase="train", from_=fits, to=batch, predicted=prediction.peak,
                              reason=f"the largest size that keeps ultralytics' effective batch of "
                                     f"{effective_batch(config.batch, nbs)} (nbs={nbs})"))
    events.emit(plan.event(batch, VAL_FACTOR * batch, prediction))
    return DetectPlan(batch, prediction, plan.margin)
