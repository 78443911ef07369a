"""The restart ladder: after each death for memory, the next safer plan, one rung at a time.

Rungs, in order (a rung that would change nothing is skipped):

1. ``microbatch``: half the training microbatch. The effective batch
   (``batch``) is unchanged, so the optimizer sees the same updates. For
   ``oomguard train`` this rung repeats while memory kills continue, down to
   1/8 of where it started, before the next rung.
2. ``eval``: half the eval microbatch (``val_batch``) and validate half as
   often (``val_every`` doubled).
3. ``loader``: ``workers=0`` and ``cache=false`` (no worker processes, no
   images held in RAM). ``workers=0`` only where the workers' own (private)
   memory at the end of the attempt would have made the difference (see
   :class:`LoaderMemory`); pages they share with the training process stay
   when they go. Without a memory timeline to tell, it is taken as before.
4. ``release``: release cached memory twice as often (``release_every``
   halved; only where the configuration has that key).
5. ``savers``: the exact memory savers the attempt could use
   (activation checkpointing; optimizer state in host memory on CUDA) on from
   the start (``savers=[...]``), whatever the plan measured: the same model
   and the same updates, at some speed.
6. ``amp``: mixed precision too, where ``amp=auto`` allows it (it changes the
   numbers a little, not what the model is).
7. ``imgsz``: images 3/4 the size, a multiple of 32 — only with
   ``allow_degrade=true``, as it changes what the model learns.
8. ``device``: train on the CPU instead of CUDA or MPS (slower, same model).

The savers rungs are taken only where the attempt said which savers it could
use (its ``start`` event's ``savers_usable``).

Overrides accumulate: a restart passes every override of the rungs taken so
far, so each attempt is the previous plan made one step safer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oomguard.config import EXACT_SAVERS, SAVER_NAMES
from oomguard.supervise.attribution import NEAR_LIMIT

RELEASE_KEY = "release_every"


@dataclass(frozen=True)
class LoaderMemory:
    """The loader workers in an attempt's last samples (bytes; summed over the ranks of a group)."""

    #: What the workers held alone, their own pages: what ``workers=0`` gives back.
    private: int
    #: The process tree's memory at its highest, each page counted once.
    peak: int
    #: The host budget it ran under (None: unknown, or a GPU budget that host memory does not count in).
    limit: int | None

    def would_matter(self) -> bool:
        """Whether giving back the workers' own memory brings the peak under ``NEAR_LIMIT`` of the limit
        (where the supervisor counts a death as one for memory), or by as much where no limit is known."""
        if self.limit:
            excess = max(self.peak, self.limit) - NEAR_LIMIT * self.limit
        else:
            excess = (1 - NEAR_LIMIT) * self.peak
        return self.private >= excess


@dataclass(frozen=True)
class PlanState:
    """What the child ran with in its last attempt (None where it did not say)."""

    microbatch: int | None = None
    eval_microbatch: int | None = None
    val_every: int = 1
    workers: int = 0
    cache: bool = False
    imgsz: int | None = None
    device: str = "cpu"  # the device it actually used: cpu, cuda:N, mps
    release_every: int | None = None  # None: never released on a schedule yet
    loader: LoaderMemory | None = None  # what its loader workers held at the end (None: not known)
    savers: tuple[str, ...] = ()  # the memory savers in force at the end
    savers_usable: tuple[str, ...] | None = None  # those it could switch on (None: it did not say)


@dataclass(frozen=True)
class Rung:
    """One step down: its position, name, what it does in words, and the config overrides."""

    index: int
    name: str
    description: str
    overrides: dict[str, Any]


def _half(value: int | None) -> int | None:
    return max(1, value // 2) if value is not None and value > 1 else None


def _microbatch(state: PlanState) -> dict[str, Any] | None:
    smaller = _half(state.microbatch)
    return {"microbatch": smaller} if smaller else None


def _eval(state: PlanState) -> dict[str, Any] | None:
    overrides: dict[str, Any] = {"val_every": state.val_every * 2}
    smaller = _half(state.eval_microbatch)
    if smaller:
        overrides["val_batch"] = smaller
    return overrides


def _loader(state: PlanState) -> dict[str, Any] | None:
    if state.workers > 0 and (state.loader is None or state.loader.would_matter()):
        return {"workers": 0, "cache": False}
    return {"cache": False} if state.cache else None


def _release(state: PlanState) -> dict[str, Any] | None:
    # Never released on a schedule so far: start at every 100 steps, then twice as often each time.
    smaller = _half(state.release_every) if state.release_every else 100
    return {RELEASE_KEY: smaller} if smaller else None


def _imgsz(state: PlanState) -> dict[str, Any] | None:
    if state.imgsz is None or state.imgsz <= 32:
        return None
    smaller = state.imgsz * 3 // 4
    smaller = max(32, smaller - smaller % 32) if smaller >= 64 else max(8, smaller - smaller % 8)
    return {"imgsz": smaller} if smaller < state.imgsz else None


def _with(state: PlanState, names: set[str]) -> dict[str, Any] | None:
    wanted = [name for name in SAVER_NAMES if name in names or name in state.savers]
    return {"savers": wanted} if set(wanted) != set(state.savers) else None


def _savers(state: PlanState) -> dict[str, Any] | None:
    if state.savers_usable is None:
        return None
    return _with(state, {name for name in state.savers_usable if name in EXACT_SAVERS})


def _amp(state: PlanState) -> dict[str, Any] | None:
    if state.savers_usable is None or "amp" not in state.savers_usable:
        return None
    return _with(state, {name for name in state.savers_usable if name in EXACT_SAVERS} | {"amp"})


def _device(state: PlanState) -> dict[str, Any] | None:
    return None if state.device == "cpu" else {"device": "cpu"}


# (name, description, change, needs allow_degrade)
RUNGS: tuple[tuple[str, str, Callable[[PlanState], dict[str, Any] | None], bool], ...] = (
    ("microbatch", "smaller training microbatch (same effective batch)", _microbatch, False),
    ("eval", "smaller eval microbatch, validation less often", _eval, False),
    ("loader", "no loader workers, no RAM cache", _loader, False),
    ("release", "release cached memory more often", _release, False),
    ("savers", "memory savers on (activation checkpointing, optimizer state in host memory)", _savers, False),
    ("amp", "mixed precision on (amp=auto)", _amp, False),
    ("imgsz", "smaller images (allow_degrade)", _imgsz, True),
    ("device", "train on the CPU", _device, False),
)


def next_rung(state: PlanState, after: int, allow_degrade: bool) -> Rung | None:
    """The first rung below rung ``after`` (-1: none taken yet) that changes something, or None."""
    for index in range(after + 1, len(RUNGS)):
        name, description, change, degrades = RUNGS[index]
        if degrades and not allow_degrade:
            continue
        overrides = change(state)
        if overrides:
            return Rung(index, name, description, overrides)
    return None
