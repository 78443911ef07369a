"""Optional TensorBoard logging (``tensorboard=true``): epoch metrics and the memory timeline.

torch.utils.tensorboard is imported when a logger is made, never when the
report package is imported, so the supervisor and ``oomguard report`` stay
free of torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oomguard.errors import ConfigError

MISSING = "tensorboard=true needs tensorboard: pip install tensorboard"
_MEMORY_FIELDS = ("process_rss", "children_rss", "system_available", "device_allocated", "device_reserved")


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
