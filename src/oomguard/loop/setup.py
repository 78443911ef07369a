"""Build a State from a Config: seeds, device, task, model, optimizer, Guard, data order, loaders."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from oomguard.config import Config
from oomguard.data.loader import make_eval_loader, make_train_loader
from oomguard.data.sampler import ResumableSampler
from oomguard.devices import Device, get_device
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
    """Mixed precision: float16 with a GradScaler on CUDA, bfloat16 elsewhere, nothing when off."""
    if not config.amp:
        return None, None
    if device.kind == "cuda":
        return torch.float16, torch.amp.GradScaler("cuda")
    return torch.bfloat16, None


def build_state(config: Config, run: RunDir, events: EventLog, timeline: bool = True) -> State:
    """Everything the loop needs, fresh; a resume then loads a checkpoint into it."""
    seed_everything(config.seed, config.deterministic)
    device = get_device(config.device)
    task = build_task(config)
    model = task.build_model().to(device.torch_device)
    optimizer = make_optimizer(config, model)
    amp_dtype, scaler = amp_settings(config, device)
    memory = MemorySampler(device, run.memory if timeline else None, interval=config.sample_every)
    guard = Guard(
        model, optimizer, memory_limit=config.memory_limit, microbatch=config.microbatch,
        eval_microbatch=config.val_batch, ceiling=config.batch, device=device, scaler=scaler,
        amp_dtype=amp_dtype, events=events, sampler=memory, memory_cap=config.memory_cap,
    )
    sampler = ResumableSampler(len(task.train_set), seed=config.seed)
    train_loader = make_train_loader(task.train_set, config.batch, sampler, config.workers, config.seed)
    eval_batch = max(config.batch, config.val_batch if isinstance(config.val_batch, int) else 0)
    val_loader = make_eval_loader(task.val_set, eval_batch, config.workers)
    steps_per_epoch = -(-len(task.train_set) // config.batch)
    state = State(
        config=config, run=run, device=device, task=task, model=model, optimizer=optimizer,
        guard=guard, sampler=sampler, events=events, memory=memory, train_loader=train_loader,
        val_loader=val_loader, steps_per_epoch=steps_per_epoch, scaler=scaler,
    )
    memory.add_listener(lambda sample: _track_peak(state, sample.tree_rss, sample.device_reserved))
    return state


def _track_peak(state: State, tree_rss: int, device_reserved: int) -> None:
    used = tree_rss + device_reserved if state.device.unified else device_reserved
    if used > state.epoch_peak:
        state.epoch_peak = used
