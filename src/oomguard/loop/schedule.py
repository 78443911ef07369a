"""Learning rate as a pure function of the optimizer step, so resuming needs no scheduler state."""

from __future__ import annotations

import math

from oomguard.config import Config

DEFAULT_LR = {"sgd": 0.05, "adamw": 0.003}
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 0.05}


def base_lr(config: Config) -> float:
    return config.lr if config.lr is not None else DEFAULT_LR[config.optimizer]


def lr_at(config: Config, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up over ``warmup_epochs``, then cosine, step (x0.1 at 1/2 and 3/4) or constant."""
    peak = base_lr(config)
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(int(config.warmup_epochs * steps_per_epoch), total // 2)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if config.schedule == "cosine":
        return peak * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))
    if config.schedule == "step":
        return peak * (0.1 ** (int(progress >= 0.5) + int(progress >= 0.75)))
    return peak
