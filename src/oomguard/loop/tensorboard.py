"""``tensorboard=true``: losses, metrics and memory as TensorBoard scalars, side by side.

torch.utils.tensorboard is imported when a logger is made, never when this
module is imported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oomguard.errors import ConfigError
from oomguard.loop.callbacks import Callback
from oomguard.loop.state import State

MISSING = "tensorboard=true needs tensorboard: pip install tensorboard"
_MEMORY_FIELDS = ("process_rss", "children_rss", "system_available", "device_allocated", "device_reserved",
                  "tree_memory")


class TensorBoardLogger:
    """Writes scalars under ``run_dir/tensorboard``: ``metrics/<name>`` per epoch, ``memory/<field>_gb``."""

    def __init__(self, run_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises ImportError with its own text when tensorboard is missing
            raise ConfigError(MISSING) from None
        self.log_dir = Path(run_dir) / "tensorboard"
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_epoch(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Every finite number in ``metrics`` (losses, accuracy, lr, microbatch...) at ``epoch``."""
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            self._writer.add_scalar(f"metrics/{name}", value, epoch)

    def log_memory(self, step: int, sample: Any) -> None:
        """A memory sample (the sampler's ``Sample`` or a mapping of its columns) in GB at ``step``."""
        for name in _MEMORY_FIELDS:
            value = sample.get(name) if isinstance(sample, Mapping) else getattr(sample, name, None)
            if isinstance(value, int | float) and not isinstance(value, bool):
                self._writer.add_scalar(f"memory/{name}_gb", value / 1e9, step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class TensorBoardCallback(Callback):
    """Epoch metrics at each epoch end; the latest memory sample every ``every`` seconds of training."""

    def __init__(self, state: State, every: float = 1.0) -> None:
        self.logger = TensorBoardLogger(state.run.root)  # a one-line ConfigError when not installed
        self.every = every
        self._last = 0.0

    def on_step_end(self, state: State) -> None:
        now = time.monotonic()
        if now - self._last >= self.every and state.memory.latest is not None:
            self.logger.log_memory(state.step, state.memory.latest)
            self._last = now

    def on_epoch_end(self, state: State) -> None:
        self.logger.log_epoch(state.epoch + 1, {"train_loss": state.train_loss, "lr": state.lr,
                                                "microbatch": state.guard.microbatch, **state.metrics})

    def on_end(self, state: State) -> None:
        self.logger.close()
