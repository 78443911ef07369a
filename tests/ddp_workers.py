"""Rank bodies for tests/test_distributed.py: importable, so torch.multiprocessing can spawn them."""

from __future__ import annotations

import gc
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from oomguard import Guard
from oomguard.data.shard import rank_span
from oomguard.events import EventLog

OOM = "CUDA out of memory. Tried to allocate 2.00 GiB"


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))


def global_batches(steps: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 6, generator=generator), torch.randn(size, 1, generator=generator))
            for _ in range(steps)]


def train_rank(rank: int, world: int, port: int, out: str, fail_rank: int, fail_step: int, steps: int,
               size: int) -> None:
    """Train ``tiny_model`` with a Guard on a DDP wrapper; ``fail_rank`` runs out of memory once.

    The ranks are clients of a store the test process hosts on ``port``, as they are of the
    launcher's agent in ``oomguard train``: a rank hosting the store can abort at exit while its
    peer is still connected.
    """
    store = dist.TCPStore("127.0.0.1", port, is_master=False)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    events = EventLog(Path(out) / f"events-{rank}.jsonl", rank=rank)
    guard = Guard(DistributedDataParallel(model), optimizer, memory_limit="off", microbatch=8, events=events)
    sizes = []
    for step, (x, y) in enumerate(global_batches(steps, size)):
        start, stop = rank_span(len(x), rank, world)

        def loss_fn(module: nn.Module, batch: tuple[torch.Tensor, ...], step: int = step) -> torch.Tensor:
            if rank == fail_rank and step == fail_step and len(batch[0]) > 4:
                raise RuntimeError(OOM)  # what CUDA raises, injected
            return F.mse_loss(module(batch[0]), batch[1])

        guard.step((x[start:stop], y[start:stop]), loss_fn)
        sizes.append(guard.microbatch)
    torch.save({"sizes": sizes, "params": [p.detach().clone() for p in model.parameters()]},
               Path(out) / f"rank{rank}.pt")
    del guard  # DDP's reducer keeps the process group alive: free it first (see Group.close)
    gc.collect()
    dist.destroy_process_group()
