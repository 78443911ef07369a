"""oomguard: make PyTorch training runs finish on the memory they have."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oomguard.data.resumable import ResumableLoader
    from oomguard.engine.guard import Guard
    from oomguard.errors import MemoryPressureError

__all__ = ["Guard", "MemoryPressureError", "ResumableLoader", "__version__"]
__version__ = "0.1.0"

# Imported lazily so that `oomguard run` and the supervisor start without torch.
_HOMES = {"Guard": "oomguard.engine.guard", "ResumableLoader": "oomguard.data.resumable",
          "MemoryPressureError": "oomguard.errors"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'oomguard' has no attribute {name!r}")
    return getattr(import_module(home), name)
