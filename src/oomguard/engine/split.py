"""Cutting a batch into microbatches, moving them to the device and joining outputs back.

A batch is a tensor, or a tuple/list/dict of them with the batch dimension
first. Inside a container, a *list* whose length is the batch size holds one
entry per sample (file names, per-image box tensors) and is cut too; tuples
and dicts are structure and are walked; anything else is passed through to
every microbatch unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

from oomguard.errors import DataError


def _first_tensor(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if not isinstance(batch, list | tuple):
        return None
    for value in batch:
        found = _first_tensor(value)
        if found is not None:
            return found
    return None


def batch_size(batch: Any) -> int:
    """Samples in ``batch``: the first dimension of its first tensor."""
    tensor = _first_tensor(batch)
    if tensor is None or tensor.dim() == 0:
        raise DataError(
            f"batch holds no tensor with a batch dimension (got {type(batch).__name__}); pass a tensor, "
            "or a tuple/list/dict of tensors with the batch first"
        )
    return int(tensor.shape[0])


def chunk_spans(total: int, microbatch: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each microbatch: as few as ``microbatch`` allows, sizes within one of each other.

    ``total=64, microbatch=44`` gives two chunks of 32 rather than 44 + 20: the
    same number of passes at a lower peak.
    """
    if total <= 0:
        return []
    count = -(-total // max(1, microbatch))
    base, extra = divmod(total, count)
    spans, start = [], 0
    for index in range(count):
        stop = start + base + (1 if index < extra else 0)
        spans.append((start, stop))
        start = stop
    return spans


def largest_chunk(total: int, microbatch: int) -> int:
    """The largest span :func:`chunk_spans` makes of ``total`` samples at ``microbatch``."""
    if total <= 0:
        return microbatch
    return -(-total // -(-total // max(1, microbatch)))


def take(batch: Any, start: int, stop: int, total: int) -> Any:
    """Samples ``start:stop`` of a batch of ``total`` samples (views, no copies)."""
    return _take(batch, start, stop, total, top=True)


def _take(value: Any, start: int, stop: int, total: int, top: bool) -> Any:
    if isinstance(value, torch.Tensor):
        return value[start:stop] if value.dim() > 0 and value.shape[0] == total else value
    if isinstance(value, Mapping):
        return {key: _take(item, start, stop, total, False) for key, item in value.items()}
    if isinstance(value, list) and not top and len(value) == total:
        return value[start:stop]
    if isinstance(value, list | tuple):
        items = [_take(item, start, stop, total, False) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    return value


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor on ``device``; tensors already there are returned as they are."""
    if isinstance(batch, torch.Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: to_device(item, device) for key, item in batch.items()}
    if isinstance(batch, list | tuple):
        items = [to_device(item, device) for item in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else type(batch)(items)
    return batch


def detach_cpu(value: Any) -> Any:
    """Outputs kept across microbatches: detached, on the CPU, same structure."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, Mapping):
        return {key: detach_cpu(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        items = [detach_cpu(item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    return value


def concat(parts: list[Any]) -> Any:
    """Join per-microbatch outputs of the same structure along the batch dimension.

    Tensors are concatenated (0-d tensors stacked), lists extended; any other
    value is taken from the first microbatch.
    """
    first = parts[0]
    if len(parts) == 1:
        return first
    if isinstance(first, torch.Tensor):
        return torch.stack(parts) if first.dim() == 0 else torch.cat(parts)
    if isinstance(first, Mapping):
        return {key: concat([part[key] for part in parts]) for key in first}
    if isinstance(first, tuple):
        items = [concat([part[index] for part in parts]) for index in range(len(first))]
        return type(first)(*items) if hasattr(first, "_fields") else tuple(items)
    if isinstance(first, list):
        return [item for part in parts for item in part]
    return first


def iter_chunks(batch: Any, total: int, spans: list[tuple[int, int]]) -> Iterator[tuple[Any, int]]:
    """Each microbatch of ``batch`` with its number of samples."""
    for start, stop in spans:
        yield take(batch, start, stop, total), stop - start
