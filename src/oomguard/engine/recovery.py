"""How big a microbatch may be: a linear memory model, and the sizes after an OOM or a quiet stretch.

A step's peak memory is modelled as ``start + fixed + per_sample * size``:
``start`` is what the process holds between steps (measured each time, so a
model that grew or a cache that filled is seen), ``fixed`` what any step adds
whatever its size (gradients, optimizer temporaries) and ``per_sample`` the
activations of one sample. The probe measures ``fixed`` and ``per_sample``; a
failure raises ``per_sample`` to what the failure proves. Everything here is
pure arithmetic, so the sizes the Guard tries can be checked exactly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

_TRIED = re.compile(r"tried to allocate ([0-9.]+) ?([kmgt]?i?b)", re.IGNORECASE)
# torch's allocators print binary sizes in both spellings: "2.00 GiB" (CUDA, MPS today) and "600.15 MB"
# (MPS before it adopted c10's format_size).
_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


@dataclass(frozen=True)
class MemoryModel:
    """Peak bytes of a step of microbatch ``size`` that starts at ``start`` bytes."""

    fixed: float = 0.0
    per_sample: float = 0.0
    #: The slope last measured on a step that fitted (the probe's, or a quiet step's):
    #: what growing back trusts, since a failure's slope may have been a passing spike.
    measured: float = 0.0

    def predict(self, start: int, size: int) -> int:
        return int(start + self.fixed + self.per_sample * size)

    def largest(self, start: int, target: float, ceiling: int) -> int:
        """The largest size in ``[0, ceiling]`` predicted to peak at or under ``target`` bytes."""
        room = target - start - self.fixed
        if room < 0:
            return 0
        if self.per_sample <= 0:
            return ceiling
        return min(ceiling, math.floor(room / self.per_sample + 1e-9))  # 1e-9: float noise, not bytes


def target_bytes(start: int, limit: int, headroom: float, reserve: int = 0) -> float:
    """Where a step should peak: ``headroom`` of the room between ``start`` and the limit less ``reserve``.

    The margin scales with the part that is predicted (the step's own memory),
    not with what the process already holds, which is measured.
    """
    return start + headroom * (limit - reserve - start)


def requested_bytes(error: str) -> int | None:
    """The failed allocation a CUDA/MPS OOM message names ("Tried to allocate 2.00 GiB"), if any."""
    match = _TRIED.search(error)
    if match is None:
        return None
    return int(float(match.group(1)) * _UNITS.get(match.group(2).lower(), 1))


def failure_bound(peak: int | None, limit: int | None, error: str = "") -> tuple[int | None, bool]:
    """Bytes the failed step needed at least, and whether that was measured rather than assumed.

    Measured: a peak over the limit (oomguard's own check on CPU), or the peak
    plus the request the allocator refused. Otherwise the limit itself is all
    we know: an allocator OOM happens before the peak is reached.
    """
    tried = requested_bytes(error)
    if tried is not None and peak is not None:
        return max(peak + tried, limit or 0), True
    if peak is not None and limit is not None and peak > limit:
        return peak, True
    return (limit if limit is not None else peak), False


def shrink(model: MemoryModel, size: int, start: int, bound: int | None, target: float,
           measured: bool = True) -> tuple[int, MemoryModel]:
    """The size to redo the batch with after a microbatch of ``size`` needed at least ``bound`` bytes.

    The failure proves ``per_sample >= (bound - start - fixed) / size``; the new
    size is the largest the raised slope says fits under ``target``, at least 1
    and below ``size``. When neither the bound nor the model's slope was ever
    measured, the slope is only a floor, so it goes no higher than half.
    """
    if bound is None or bound <= start + model.fixed:
        return max(1, size // 2), model
    proven = (bound - start - model.fixed) / size
    raised = replace(model, per_sample=max(model.per_sample, proven))
    new = raised.largest(start, target, size - 1)
    if not measured and model.measured <= 0:
        new = min(new, size // 2)
    return max(1, new), raised


def grow(model: MemoryModel, size: int, start: int, peak: int | None, target: float, ceiling: int
         ) -> tuple[int, MemoryModel]:
    """The size to try after a quiet stretch at ``size``; ``size`` itself when more is not predicted to fit.

    Trusts the slope measured on the quiet step (``peak`` at ``size``) or the
    probe's, whichever is larger, and never goes above ``ceiling``.
    """
    slope = model.measured
    if peak is not None and size > 0 and peak > start + model.fixed:
        slope = max(slope, (peak - start - model.fixed) / size)
    if slope <= 0:
        return size, model
    trial = replace(model, per_sample=slope, measured=slope)
    new = trial.largest(start, target, ceiling)
    if new <= size:
        return size, model
    return new, trial
