"""Build a State from a Config: seeds, device, task, model, optimizer, Guard, data order, loaders."""

from __future__ import annotations

import inspect
import os
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from oomguard import devices
from oomguard.config import Config
from oomguard.data.loader import make_eval_loader, make_rank_loader, make_train_loader
from oomguard.data.sampler import ResumableSampler
from oomguard.data.shard import RankBatches
from oomguard.data.skipping import SkipReport
from oomguard.devices import Device
from oomguard.distributed.group import Group
from oomguard.engine.guard import Guard
from oomguard.events import EventLog
from oomguard.loop.schedule import DEFAULT_WEIGHT_DECAY, base_lr
from oomguard.loop.state import State
from oomguard.memory.sampler import MemorySampler
from oomguard.rundir import RunDir
from oomguard.tasks import build_task


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def make_optimizer(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    decay = config.weight_decay if config.weight_decay is not None else DEFAULT_WEIGHT_DECAY[config.optimizer]
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=base_lr(config), momentum=config.momentum,
                               weight_decay=decay, nesterov=config.momentum > 0)
    return torch.optim.AdamW(params, lr=base_lr(config), weight_decay=decay)


def amp_settings(config: Config, device: Device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """Mixed precision as the device does it (float16 with a GradScaler on CUDA, bfloat16 elsewhere,
    float16 or nothing on MPS before macOS 14) with ``amp=true``; nothing else (``amp=auto`` leaves it to
    the Guard's memory savers)."""
    if config.amp is not True:
        return None, None
    precision = device.mixed_precision()
    scaler = torch.amp.GradScaler(device.torch_device.type) if precision.scaler else None
    return precision.dtype, scaler


def rank_device(config: Config, local_rank: int | None) -> Device:
    """``config.device``; for a rank of a group on a multi-GPU machine, the GPU of its local rank."""
    return devices.rank_device(config.device, local_rank)


def data_parallel(model: torch.nn.Module, device: Device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel, with no collective in its forward.

    Buffers are not synchronised in forwards: that is a collective, and a rank
    redoing a step after an OOM runs more forwards than its peers. BatchNorm
    statistics stay per rank; checkpoints hold rank 0's.
    """
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.torch_device] if device.kind == "cuda" else None
    names = inspect.signature(DistributedDataParallel).parameters
    # The old name warns from torch 2.13 on; older torch has only it.
    no_buffer_sync: dict[str, Any] = {
        "forward_sync_buffers" if "forward_sync_buffers" in names else "broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True, **no_buffer_sync)


def build_state(config: Config, run: RunDir, events: EventLog, timeline: bool = True,
                group: Group | None = None, say: Callable[[str], None] | None = None) -> State:
    """Everything the loop needs, fresh; a resume then loads a checkpoint into it.

    In a data-parallel ``group`` the Guard trains a DistributedDataParallel
    wrapper (State.model stays the plain module, for checkpoints and
    evaluation), each rank loads its slice of every global batch and
    evaluates its slice of the validation set. ``say`` gets the data's
    console lines: its layout, images left out, images that became unreadable.
    """
    seed_everything(config.seed, config.deterministic)
    device = rank_device(config, group.local_rank if group is not None else None)
    main = group is None or group.is_main
    task = build_task(config, run, say, main=main)
    model = task.build_model().to(device.torch_device)
    optimizer = make_optimizer(config, model)
    amp_dtype, scaler = amp_settings(config, device)
    rank = group.rank if group is not None else 0
    memory = MemorySampler(device, run.memory if timeline else None, interval=config.sample_every, rank=rank,
                           events=events)
    trained: torch.nn.Module = model
    if group is not None:
        trained = data_parallel(model, device)
    guard = Guard(
        trained, optimizer, memory_limit=config.memory_limit, microbatch=config.microbatch,
        eval_microbatch=config.val_batch, ceiling=config.batch, device=device, scaler=scaler,
        amp_dtype=amp_dtype, events=events, sampler=memory, memory_cap=config.memory_cap,
        budget_share=group.local_world if group is not None else 1, min_available=config.min_available,
        savers=config.savers, amp=config.amp,
    )
    sampler = ResumableSampler(len(task.train_set), seed=config.seed)
    # An image unreadable when its batch loads: an event (every rank's), a warning (rank 0's).
    report = SkipReport(events, say if main else None,
                        where=lambda: (state.epoch_offset + state.epoch + 1, state.step + 1))
    eval_batch = max(config.batch, config.val_batch if isinstance(config.val_batch, int) else 0)
    if group is None:
        train_loader = make_train_loader(task.train_set, config.batch, sampler, config.workers, config.seed,
                                         report=report)
        val_set = task.val_set
    else:
        batches = RankBatches(sampler, config.batch, group.rank, group.world)
        train_loader = make_rank_loader(task.train_set, batches, config.workers, config.seed, report=report)
        val_set = Subset(task.val_set, range(group.rank, len(task.val_set), group.world))  # type: ignore[assignment]
    val_loader = make_eval_loader(val_set, eval_batch, config.workers, report=report)
    steps_per_epoch = -(-len(task.train_set) // config.batch)
    state = State(
        config=config, run=run, device=device, task=task, model=model, optimizer=optimizer,
        guard=guard, sampler=sampler, events=events, memory=memory, train_loader=train_loader,
        val_loader=val_loader, steps_per_epoch=steps_per_epoch, scaler=scaler, group=group,
    )
    memory.add_listener(lambda sample: state.note_peak(sample.used))  # Device.used, as the sampler read it
    return state
