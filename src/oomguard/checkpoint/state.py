"""What a checkpoint holds, and putting it back.

A checkpoint is a plain dict (``FORMAT`` 1) that a weights-only load reads::

    format        1
    model         model.state_dict()              (the contract: ["model"] is the state_dict)
    optimizer     optimizer.state_dict()
    scheduler     scheduler.state_dict() or None
    scaler        GradScaler.state_dict() or None (only when enabled)
    epoch         the epoch in progress (0-based)
    step          optimizer steps taken since the start of the run
    epoch_step    batches finished inside ``epoch`` (0 at an epoch boundary)
    sampler       the data order: the resumable sampler's state dict, or None
    rng           capture_rng(): python, numpy, torch CPU and device generators
    plan          the current plan, e.g. {"microbatch": 8, "eval_microbatch": 32}
    best_metric   the best validation metric so far, or None
    config        the resolved configuration as plain values
    extra         anything else the loop needs, plain values and tensors only
    time          unix time of the capture
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import torch

from oomguard.checkpoint.rng import capture_rng, restore_rng
from oomguard.checkpoint.snapshots import check_loadable
from oomguard.checkpoint.store import CheckpointError
from oomguard.devices import Device

FORMAT = 1


@dataclass
class ResumePoint:
    """Where a restored run goes on: what :func:`restore_state` does not load into objects itself."""

    epoch: int
    step: int
    epoch_step: int
    sampler: dict[str, Any] | None = None
    plan: dict[str, Any] = field(default_factory=dict)
    best_metric: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    device_rng_restored: bool = True


def plain_config(config: Any) -> dict[str, Any]:
    """A pydantic config or a mapping as plain values only: str/int/float/bool/None, lists, dicts."""
    if hasattr(config, "model_dump"):
        data = config.model_dump(mode="json")
    elif isinstance(config, Mapping):
        data = {str(key): value for key, value in config.items()}
    else:
        raise TypeError(f"config must be a pydantic model or a mapping, got {type(config).__name__}")
    return _plain(data, "config")


def _plain(value: Any, where: str) -> Any:
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{where} is a {type(value).__name__}; a checkpointed config holds plain values only")


def capture_state(*, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int, step: int,
                  epoch_step: int = 0, scheduler: Any = None, scaler: Any = None,
                  sampler: Mapping[str, Any] | None = None, plan: Mapping[str, Any] | None = None,
                  best_metric: float | None = None, config: Any = None, device: Device | None = None,
                  extra: Mapping[str, Any] | None = None,
                  rng: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything a resume needs, as references to the live tensors.

    Take it between optimizer steps and hand it to
    :meth:`~oomguard.checkpoint.writer.AsyncCheckpointer.submit` (which copies
    it) or to :func:`~oomguard.checkpoint.snapshots.snapshot`. Pass the unwrapped
    module (not a DDP or compiled wrapper) so that ``["model"]`` loads into a
    plain model. ``rng``: generator states taken earlier (default: now).
    Raises TypeError when something would not load weights-only.
    """
    scaler_state = scaler.state_dict() if scaler is not None and scaler.is_enabled() else None
    state = {
        "format": FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler_state,
        "epoch": int(epoch),
        "step": int(step),
        "epoch_step": int(epoch_step),
        "sampler": dict(sampler) if sampler is not None else None,
        "rng": capture_rng(device) if rng is None else rng,
        "plan": dict(plan or {}),
        "best_metric": None if best_metric is None else float(best_metric),
        "config": plain_config(config) if config is not None else {},
        "extra": dict(extra or {}),
        "time": time.time(),
    }
    check_loadable(state)
    return state


def restore_state(checkpoint: Mapping[str, Any], *, model: torch.nn.Module,
                  optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, scaler: Any = None,
                  device: Device | None = None, restore_generators: bool = True) -> ResumePoint:
    """Load a checkpoint from :func:`capture_state` into the live objects; return where to go on.

    Call it after the model, optimizer, scheduler and scaler are built (their
    construction draws random numbers) and before the first new step, so that
    the generators continue exactly where the checkpoint left them. A model or
    optimizer that does not match raises :class:`CheckpointError` in one line.
    """
    if checkpoint.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint format {checkpoint.get('format')!r} is not {FORMAT}; it was not written by this "
            f"oomguard version, start a new run or resume with the version that wrote it"
        )
    _load_into("model", model, checkpoint["model"])
    if optimizer is not None:
        _load_into("optimizer", optimizer, checkpoint["optimizer"])
    if scheduler is not None and checkpoint.get("scheduler") is not None:
        _load_into("scheduler", scheduler, checkpoint["scheduler"])
    if scaler is not None and scaler.is_enabled() and checkpoint.get("scaler"):
        _load_into("scaler", scaler, checkpoint["scaler"])
    device_ok = restore_rng(checkpoint["rng"], device) if restore_generators else True
    return ResumePoint(
        epoch=int(checkpoint["epoch"]),
        step=int(checkpoint["step"]),
        epoch_step=int(checkpoint.get("epoch_step", 0)),
        sampler=checkpoint.get("sampler"),
        plan=dict(checkpoint.get("plan") or {}),
        best_metric=checkpoint.get("best_metric"),
        config=dict(checkpoint.get("config") or {}),
        extra=dict(checkpoint.get("extra") or {}),
        device_rng_restored=device_ok,
    )


def _load_into(name: str, target: Any, state: Any) -> None:
    try:
        target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(
            f"the checkpoint's {name} state does not fit this {name} ({first}); resume with the same "
            f"model and optimizer settings as the run, or start a new run"
        ) from None
