"""The Guard's step under DistributedDataParallel: every rank agrees before anything collective happens.

One attempt at a step, on every rank::

    begin     all-gather (local samples, proposed microbatch): all ranks take the smallest
              microbatch, and each weights its loss by its share of the global batch
    no_sync   every microbatch but the last accumulates locally (no gradient all-reduce)
    last      the last microbatch's forward, then
    gate      all-reduce "did anyone fail so far?": a rank that ran out of memory, in any
              forward or in a local backward, never leaves its peers waiting inside DDP's
              gradient all-reduce; then the backward, which all-reduces the gradients
    settle    all-reduce "did anyone fail?" (the CPU budget check runs after that backward)

A rank that fails goes straight to ``settle``, which meets its peers' next
agreement (forwards hold no collective: buffers are not broadcast). On any
failure every rank drops the partial step; the rank that failed shrinks from
its own measurement, and the next ``begin`` makes every rank take that size.
One window is left: a real out-of-memory error raised *inside* the last
backward (CUDA, MPS) cannot be agreed on in-process, since the peers are inside
DDP's all-reduce; the collective then fails or times out, the group exits and
the supervisor restarts it from the last checkpoint one rung down.
"""

from __future__ import annotations

import contextlib
from typing import Any

from torch.nn.parallel import DistributedDataParallel

from oomguard.distributed.group import Group


class PeerOutOfMemory(RuntimeError):
    """Another rank ran out of memory in this step: drop the partial step and redo it with the group."""

    def __init__(self) -> None:
        super().__init__("out of memory on another rank of the group")


class StepSync:
    """The collectives of one step's attempts; see the module docstring."""

    def __init__(self, group: Group, model: DistributedDataParallel) -> None:
        self.group, self.model = group, model
        self._open = False

    def begin(self, samples: int, proposed: int) -> tuple[int, float]:
        """The microbatch every rank uses, and this rank's loss weight (its share of the global batch)."""
        gathered = self.group.gather_ints([samples, proposed])
        total = sum(count for count, _ in gathered)
        self._open = True
        return min(size for _, size in gathered), samples * self.group.world / total if total else 1.0

    def no_sync(self) -> contextlib.AbstractContextManager[Any]:
        return self.model.no_sync()

    def gate(self) -> None:
        """Between the last forward and its backward: raise PeerOutOfMemory when a peer failed."""
        if self.group.any(False):
            self._open = False
            raise PeerOutOfMemory

    def reset(self) -> None:
        """After a dropped attempt: DDP expects the backward of the last synced forward; forget it.

        Without this, the next microbatch's local (no_sync) backward would still
        all-reduce on this rank alone. ``_reset_state`` is the reducer's own reset
        for a backward that did not happen (what DDP itself calls when its process
        group changes).
        """
        self.model.reducer._reset_state()

    def settle(self, failed: bool) -> bool:
        """After the attempt: True on every rank when any rank failed (each rank calls it exactly once)."""
        if not self._open:
            return True  # the gate already said a peer failed
        self._open = False
        return self.group.any(failed)
