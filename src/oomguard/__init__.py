"""oomguard: make PyTorch training runs finish on the memory they have."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oomguard.engine.guard import Guard

__all__ = ["Guard", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Imported lazily so that `oomguard run` and the supervisor start without torch.
    if name == "Guard":
        from oomguard.engine.guard import Guard

        return Guard
    raise AttributeError(f"module 'oomguard' has no attribute {name!r}")
