"""This process's place in a data-parallel group, and the few collectives oomguard itself needs.

A rank is a process started by torch.distributed's launcher (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``... in its environment, with ``WORLD_SIZE`` > 1).
It joins the default process group over ``env://``: NCCL for CUDA tensors,
gloo otherwise. Every collective here moves a handful of numbers; the
gradients themselves go through DistributedDataParallel.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from oomguard.devices import Device

#: How long a collective may wait for a peer before the group gives up (a dead peer usually fails faster).
TIMEOUT = timedelta(minutes=10)


@dataclass
class Group:
    """Rank, world size and local rank of this process, and collectives over small lists of numbers."""

    rank: int
    world: int
    local_rank: int
    local_world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def join(cls, device: Device) -> Group:
        """Join the group the launcher set up in the environment, on ``device`` (already this rank's)."""
        device.bind()
        if not dist.is_initialized():
            dist.init_process_group(device.collective_backend, timeout=TIMEOUT)
        return cls(rank=dist.get_rank(), world=dist.get_world_size(),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                   local_world=int(os.environ.get("LOCAL_WORLD_SIZE", "1")), device=device.torch_device)

    def _tensor(self, values: list[float] | list[int], dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=self.device)

    def gather_ints(self, values: list[int]) -> list[list[int]]:
        """Every rank's ``values`` (the same length on every rank), in rank order."""
        mine = self._tensor(values, torch.int64)
        parts = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(parts, mine)
        return [[int(v) for v in part.tolist()] for part in parts]

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one."""
        return bool(self.max(int(flag)))

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums of ``values`` over the ranks (float64)."""
        tensor = self._tensor(values, torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return [float(v) for v in tensor.tolist()]

    def max(self, value: int) -> int:
        """The largest ``value`` over the ranks."""
        tensor = self._tensor([value], torch.int64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        """Leave the group; call it once the rank's training (and its DDP wrapper) is dropped.

        The collection first frees a DDP reducer left in a reference cycle, which
        holds the process group: the group must really be destroyed while Python
        is alive. Left to interpreter shutdown, gloo's worker threads free their
        last work's tensors without an interpreter and the rank aborts (SIGABRT,
        "terminate called without an active exception") after it finished.
        """
        if dist.is_initialized():
            gc.collect()
            dist.destroy_process_group()
