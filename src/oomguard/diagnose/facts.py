"""What ``oomguard doctor`` measures about this machine, gathered once into plain data.

Gathering is kept apart from judging (``findings``) so the rules can be
tested with any machine described by hand: a 16 GB Mac, a CUDA box, a
machine without torch.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import sys
from dataclasses import dataclass, field

import psutil

from oomguard import host
from oomguard.config import Config
from oomguard.errors import OomguardError


@dataclass(frozen=True)
class Backend:
    """A torch backend that was found, and the memory it can give one process."""

    kind: str  # cpu, cuda, mps
    memory: int | None
    detail: str = ""


@dataclass(frozen=True)
class Facts:
    platform: str = sys.platform  # "darwin", "linux", "win32"
    machine: str = ""
    python: str = ""
    cpus: int = 1
    total_memory: int | None = None
    available_memory: int | None = None
    swap_total: int | None = None
    swap_used: int | None = None
    torch_version: str | None = None
    torch_error: str | None = None  # why torch did not import
    backends: tuple[Backend, ...] = field(default_factory=tuple)
    chosen: Backend | None = None  # what the config's device (or auto) would train on
    device_error: str | None = None  # why that device cannot be used
    start_method: str | None = None  # multiprocessing's default for DataLoader workers
    config: Config | None = None


def _torch() -> tuple[str | None, str | None]:
    try:
        import torch
    except Exception as err:  # a broken install raises more than ImportError
        return None, f"{type(err).__name__}: {err}".splitlines()[0]
    build = getattr(torch.version, "cuda", None)
    return f"{torch.__version__}" + (f" (CUDA {build} build)" if build else ""), None


def _backends(device: str) -> tuple[tuple[Backend, ...], Backend | None, str | None]:
    from oomguard.devices import get_device  # imports torch: only after it is known to import

    found = []
    for name in ("cpu", "cuda", "mps"):
        try:
            backend = get_device(name)
        except OomguardError:
            continue
        found.append(Backend(name, backend.total_memory(), backend.describe()))
    try:
        chosen = get_device(device)
    except OomguardError as err:
        return tuple(found), None, str(err)
    return tuple(found), Backend(chosen.kind, chosen.total_memory(), chosen.describe()), None


def gather(config: Config | None = None) -> Facts:
    """Measure this machine (cheap: no allocation, no training)."""
    swap = psutil.swap_memory()
    torch_version, torch_error = _torch()
    backends: tuple[Backend, ...] = ()
    chosen = None
    device_error = None
    if torch_version is not None:
        backends, chosen, device_error = _backends(config.device if config is not None else "auto")
    return Facts(
        platform=sys.platform,
        machine=platform.machine(),
        python=platform.python_version(),
        cpus=os.cpu_count() or 1,
        total_memory=host.total_memory(),
        available_memory=host.available_memory(),
        swap_total=int(swap.total),
        swap_used=int(swap.used),
        torch_version=torch_version,
        torch_error=torch_error,
        backends=backends,
        chosen=chosen,
        device_error=device_error,
        start_method=multiprocessing.get_context().get_start_method(),
        config=config,
    )

