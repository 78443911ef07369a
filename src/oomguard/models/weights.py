"""Loading local pretrained weights into a model, tolerant of a different head. Never downloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from oomguard.errors import ConfigError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors in a ``.pt``/``.pth``/``.bin`` (also an oomguard checkpoint) or ``.safetensors`` file."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            f"pretrained={str(file)!r} not found; give a local weights file or pretrained=false"
        )
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(file))
        else:
            loaded = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is the user's to fix, not a traceback
        raise ConfigError(
            f"pretrained={str(file)!r} is not a readable weights file ({type(err).__name__}); "
            "give a .pt/.pth state_dict or a .safetensors file"
        ) from None
    for key in ("model", "state_dict", "model_state_dict"):  # checkpoints that wrap the weights
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict):
        raise ConfigError(f"pretrained={str(file)!r} holds a {type(loaded).__name__}, not a state_dict")
    return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


def load_matching(module: nn.Module, path: str | Path, prefixes: tuple[str, ...] = ("",)) -> int:
    """Copy the tensors of ``path`` whose name (after stripping a prefix) and shape match; return how many.

    Missing or differently shaped tensors (a head for another number of
    classes) keep their fresh initialisation. Zero matches is an error: the
    file is for another architecture.
    """
    own = module.state_dict()
    matched: dict[str, torch.Tensor] = {}
    for name, tensor in read_state_dict(path).items():
        for prefix in prefixes:
            key = prefix + name
            if key in own and own[key].shape == tensor.shape:
                matched[key] = tensor
                break
    if not matched:
        raise ConfigError(
            f"pretrained={str(path)!r} matches none of the model's {len(own)} tensors; "
            "give weights for this architecture"
        )
    module.load_state_dict(matched, strict=False)
    return len(matched)
