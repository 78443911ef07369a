"""Random number generator states as tensors and numbers, so a weights-only load reads them.

A resumed run draws the same dropout masks, augmentations and shuffles as the
run that was interrupted only if every generator it uses continues where it
stopped: Python's ``random``, numpy's global generator, torch's CPU generator
and the accelerator's (through :class:`~oomguard.devices.Device`, the only
place that knows the backend).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from oomguard.devices import Device

RawRng = tuple[Any, Any, torch.Tensor, Any]


def raw_rng(device: Device | None = None) -> RawRng:
    """The generators' states as their libraries give them: cheap to take every step (tens of µs)."""
    device_state = device.rng_state() if device is not None else None
    return random.getstate(), np.random.get_state(legacy=True), torch.get_rng_state(), (
        None if device is None or device_state is None else (device.kind, device_state))


def rng_from_raw(raw: RawRng) -> dict[str, Any]:
    """A state from :func:`raw_rng` made of tensors, ints and floats only (what a checkpoint stores)."""
    (version, words, gauss_next), (kind, keys, pos, has_gauss, cached_gaussian), cpu, on_device = raw
    return {
        "python": {
            "version": int(version),
            "state": torch.tensor(words, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": cpu,
        "device": None if on_device is None else {"kind": on_device[0], "state": on_device[1].detach().cpu()},
    }


def capture_rng(device: Device | None = None) -> dict[str, Any]:
    """The state of every global generator, made of tensors, ints and floats only."""
    return rng_from_raw(raw_rng(device))


def restore_rng(state: dict[str, Any], device: Device | None = None) -> bool:
    """Put the generators back to ``state`` from :func:`capture_rng`.

    Returns False when the checkpoint holds an accelerator generator that
    ``device`` cannot take (a CUDA run resumed on CPU): the host generators are
    restored, the device draws will differ.
    """
    python = state["python"]
    words = tuple(int(word) for word in python["state"].tolist())
    random.setstate((int(python["version"]), words, python["gauss_next"]))
    numpy = state["numpy"]
    np.random.set_state((
        numpy["kind"],
        numpy["keys"].cpu().numpy().astype(np.uint32),
        int(numpy["pos"]),
        int(numpy["has_gauss"]),
        float(numpy["cached_gaussian"]),
    ))
    torch.set_rng_state(state["torch"].cpu())
    saved = state.get("device")
    if saved is None:
        return True
    if device is None or device.kind != saved["kind"]:
        return False
    device.set_rng_state(saved["state"].cpu())
    return True
