"""``tensorboard=true``: losses, metrics and memory as TensorBoard scalars, side by side."""

from __future__ import annotations

import time

from oomguard.loop.callbacks import Callback
from oomguard.loop.state import State
from oomguard.report.tensorboard import TensorBoardLogger


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
