"""Where oomguard keeps what it computes once per machine: the builtin dataset, the image index."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$OOMGUARD_CACHE``, else ``$XDG_CACHE_HOME/oomguard``, else ``~/.cache/oomguard``.

    The user's own cache directory: writable by whoever runs oomguard, and never
    inside a dataset folder that user may not own.
    """
    if os.environ.get("OOMGUARD_CACHE"):
        return Path(os.environ["OOMGUARD_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "oomguard"
