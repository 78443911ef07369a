"""The in-memory copy a checkpoint is written from.

The training loop only waits for :func:`snapshot`: every tensor is cloned to
CPU and every container copied, so the background writer sees the state of
this instant however the loop updates the model afterwards. The same walk
refuses anything that ``torch.load(weights_only=True)`` could not read back,
naming where it is, so a bad state fails when it is taken, not at resume.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch

# What the weights-only unpickler rebuilds besides tensors and containers.
# Exact types: a subclass (numpy.float64 is a float, an enum member a str) pickles as its own class.
_LEAVES = frozenset(
    {str, int, float, bool, complex, bytes, type(None), torch.dtype, torch.device, torch.Size}
)
_MAPPINGS = (dict, OrderedDict)
_SEQUENCES = (list, tuple, set)


def snapshot(state: Any) -> Any:
    """A private copy of ``state``: tensors cloned to CPU, containers copied, numpy scalars made Python.

    A tensor reached twice is copied once, so shared tensors stay shared.
    Raises TypeError naming the key path of any value a weights-only load refuses.
    """
    return _copy(state, "state", {})


def snapshot_bytes(state: Any) -> int:
    """Bytes the tensors of ``state`` take once snapshotted (each tensor counted once).

    Works on the live state too, so the memory budget can reserve the room
    before the copy is made.
    """
    seen: set[int] = set()
    total = 0
    stack = [state]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            if id(item) not in seen:
                seen.add(id(item))
                total += item.nelement() * item.element_size()
        elif isinstance(item, _MAPPINGS):
            stack.extend(item.values())
        elif isinstance(item, _SEQUENCES) and not isinstance(item, torch.Size):
            stack.extend(item)
    return total


def check_loadable(state: Any) -> None:
    """Raise TypeError if ``torch.load(weights_only=True)`` could not read ``state`` back."""
    _walk(state, "state")


def _to_cpu(tensor: torch.Tensor) -> torch.Tensor:
    # copy=True also copies CPU tensors; a view becomes a tensor of its own size,
    # so a slice never drags its whole base storage into the file.
    return tensor.detach().to("cpu", copy=True)


def _refuse(value: Any, where: str) -> TypeError:
    return TypeError(
        f"checkpoint {where} is a {type(value).__module__}.{type(value).__qualname__}, which "
        f"torch.load(weights_only=True) cannot read; store it as tensors, lists, dicts or numbers"
    )


def _copy(value: Any, where: str, memo: dict[int, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        copied = memo.get(id(value))
        if copied is None:
            copied = memo[id(value)] = _to_cpu(value)
        return copied
    if type(value) in _LEAVES:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if type(value) in _MAPPINGS:
        items = []
        for key, item in value.items():
            if type(key) not in _LEAVES:
                raise _refuse(key, f"{where} key {key!r}")
            items.append((key, _copy(item, f"{where}[{key!r}]", memo)))
        return type(value)(items)
    if type(value) in _SEQUENCES:
        return type(value)(_copy(item, f"{where}[{i}]", memo) for i, item in enumerate(value))
    raise _refuse(value, where)


def _walk(value: Any, where: str) -> None:
    if isinstance(value, torch.Tensor) or type(value) in _LEAVES:
        return
    if type(value) in _MAPPINGS:
        for key, item in value.items():
            if type(key) not in _LEAVES:
                raise _refuse(key, f"{where} key {key!r}")
            _walk(item, f"{where}[{key!r}]")
        return
    if type(value) in _SEQUENCES:
        for i, item in enumerate(value):
            _walk(item, f"{where}[{i}]")
        return
    raise _refuse(value, where)
