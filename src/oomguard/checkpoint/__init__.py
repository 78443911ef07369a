"""Atomic, checksummed checkpoints and the full training state they hold.

Typical use by the loop::

    with RunLock(run.root):
        store = CheckpointStore(run.weights, keep=config.keep, events=events, console=console)
        found = store.load_latest()                      # None on a fresh run
        if found:
            point = restore_state(found[0], model=model, optimizer=opt, scheduler=sched, device=device)
        writer = AsyncCheckpointer(store, every=config.checkpoint_every)
        for step ...:
            ...
            if writer.due() or end_of_epoch:
                writer.submit(capture_state(model=model, optimizer=opt, ...), step, best=improved)
            if writer.should_stop:
                raise SystemExit(writer.stop_reason)
        writer.close()
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oomguard.checkpoint.lock import RunLock
    from oomguard.checkpoint.rng import capture_rng, restore_rng
    from oomguard.checkpoint.snapshots import check_loadable, snapshot, snapshot_bytes
    from oomguard.checkpoint.state import FORMAT, ResumePoint, capture_state, plain_config, restore_state
    from oomguard.checkpoint.store import CheckpointError, CheckpointStore, SaveResult, load_checkpoint
    from oomguard.checkpoint.writer import AsyncCheckpointer

# Imported on first use, so that the supervisor can take the RunLock without importing torch.
_HOMES = {
    "RunLock": "lock",
    "capture_rng": "rng", "restore_rng": "rng",
    "check_loadable": "snapshots", "snapshot": "snapshots", "snapshot_bytes": "snapshots",
    "FORMAT": "state", "ResumePoint": "state", "capture_state": "state", "plain_config": "state",
    "restore_state": "state",
    "CheckpointError": "store", "CheckpointStore": "store", "SaveResult": "store", "load_checkpoint": "store",
    "AsyncCheckpointer": "writer",
}

__all__ = [
    "FORMAT",
    "AsyncCheckpointer",
    "CheckpointError",
    "CheckpointStore",
    "ResumePoint",
    "RunLock",
    "SaveResult",
    "capture_rng",
    "capture_state",
    "check_loadable",
    "load_checkpoint",
    "plain_config",
    "restore_rng",
    "restore_state",
    "snapshot",
    "snapshot_bytes",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'oomguard.checkpoint' has no attribute {name!r}")
    return getattr(import_module(f"oomguard.checkpoint.{home}"), name)
