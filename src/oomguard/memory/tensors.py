"""A census of live tensors, and what grew between two of them: the diagnosis of a leak; and the bytes of
data (tensors, arrays) a process holds besides its model: a refusal's explanation.

``gc.get_objects()`` walks every tracked Python object (tenths of a second in
a large process), so a census is only taken once a leak is suspected. A kept
loss holds its whole autograd graph, whose saved activations live in C++
nodes that the census cannot see: the tell is the *scalar with a grad_fn*
that grows by one per step.
"""

from __future__ import annotations

import gc
import sys
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True, order=True)
class Kind:
    """Tensors that count as the same thing: shape, dtype, device, and whether they hold a graph."""

    shape: tuple[int, ...]
    dtype: str
    device: str
    graph: bool

    def words(self) -> str:
        shape = "scalar" if not self.shape else "x".join(map(str, self.shape))
        graph = " with grad_fn" if self.graph else ""
        return f"{shape} {self.dtype.removeprefix('torch.')} tensor on {self.device}{graph}"


@dataclass(frozen=True)
class Growth:
    kind: Kind
    per_step: float


def _is_tensor(obj: object) -> bool:
    try:
        return isinstance(obj, torch.Tensor)
    except Exception:  # a proxy whose __class__ raises
        return False


def census() -> Counter[Kind]:
    """Live tensors by kind (parameters and gradients included)."""
    counts: Counter[Kind] = Counter()
    with warnings.catch_warnings():  # isinstance() touches deprecated module attributes on the way
        warnings.simplefilter("ignore")
        objects = gc.get_objects()
        tensors = [obj for obj in objects if _is_tensor(obj)]
    del objects
    for obj in tensors:
        try:
            kind = Kind(tuple(obj.shape), str(obj.dtype), str(obj.device), obj.grad_fn is not None)
        except Exception:  # a half-built or exotic object: not ours to judge
            continue
        counts[kind] += 1
    return counts


def growth(before: Counter[Kind], after: Counter[Kind], steps: int) -> list[Growth]:
    """Kinds whose count grew, most per step first."""
    steps = max(1, steps)
    grown = [Growth(kind, (after[kind] - before.get(kind, 0)) / steps) for kind in after
             if after[kind] > before.get(kind, 0)]
    return sorted(grown, key=lambda g: (-g.per_step, g.kind))


def advice(kind: Kind) -> str:
    if kind.graph and not kind.shape:
        return "a loss or metric is kept with its graph; store `loss.item()` or `loss.detach()`"
    if kind.graph:
        return "outputs are kept with their autograd graph; keep `.detach()`ed copies (or `.cpu()` them)"
    return "something keeps tensors every step (a list of outputs or a cache); clear it or keep less"


def diagnose(before: Counter[Kind], after: Counter[Kind], steps: int) -> str:
    """One sentence naming what grows per step and what to do, or a note that no tensor count grew."""
    grown = growth(before, after, steps)
    if not grown:
        return ("no live tensor count grew: the growth is outside tensors (allocator caches, Python "
                "objects, or a C extension)")
    top = grown[0]
    text = f"+{top.per_step:.3g} {top.kind.words()} per step: {advice(top.kind)}"
    others = [f"+{g.per_step:.3g} {g.kind.words()}" for g in grown[1:3] if g.per_step >= 0.05]
    return text + (f" (also {', '.join(others)} per step)" if others else "")


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in nested dicts, lists and tuples (a state dict, a snapshot)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from tensors_in(item)


def _buffer(obj: object, ndarray: type | None) -> tuple[int, int] | None:
    """(address, bytes) of the host memory behind a CPU tensor or an owning NumPy array, else None."""
    try:
        if _is_tensor(obj):
            assert isinstance(obj, torch.Tensor)
            if obj.device.type != "cpu" or obj.is_sparse:
                return None
            storage = obj.untyped_storage()
            return storage.data_ptr(), storage.nbytes()
        if ndarray is not None and isinstance(obj, ndarray) and getattr(obj, "base", None) is None:
            return obj.__array_interface__["data"][0], obj.nbytes  # type: ignore[attr-defined]
    except Exception:  # an exotic tensor (meta, nested, quantized...): not data we can size
        return None
    return None


def held_bytes(besides: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the CPU tensors and NumPy arrays alive in this process, each buffer once, less those of
    ``besides`` (the model's weights and the optimizer's state): the data it holds in memory.

    Walks every object the garbage collector tracks (tenths of a second in a large
    process): for an explanation, never for a measurement. Data kept as plain Python
    objects (lists of bytes, images) is not seen.
    """
    skip = {found[0] for found in (_buffer(t, None) for t in besides) if found is not None}
    numpy = sys.modules.get("numpy")
    ndarray = getattr(numpy, "ndarray", None)
    buffers: dict[int, int] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            found = _buffer(obj, ndarray)
            if found is not None and found[0] and found[0] not in skip:
                buffers[found[0]] = max(buffers.get(found[0], 0), found[1])
    return sum(buffers.values())
