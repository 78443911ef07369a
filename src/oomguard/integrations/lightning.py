"""Lightning's ``Trainer`` under oomguard's memory watch: ``OomguardCallback``.

::

    from oomguard.integrations.lightning import OomguardCallback

    trainer = L.Trainer(callbacks=[OomguardCallback()], default_root_dir="runs/lit")
    trainer.fit(model, data, ckpt_path="last")   # oomguard run restarts it from the last checkpoint

The Trainer keeps its own loop and checkpoints. The callback writes the
memory timeline, events and report to a run directory (``oomguard run``'s,
else ``run_dir``, else ``default_root_dir/oomguard``), warns about leaks, and
on memory pressure saves ``last.ckpt`` through the trainer at once (where its
``ModelCheckpoint`` keeps checkpoints, else ``default_root_dir/checkpoints``);
when pressure persists it saves and stops through ``trainer.should_stop``,
and under a supervisor the process exits with status 75 so that ``oomguard
run`` resumes it from that checkpoint once the memory is back. A checkpoint
saved inside an epoch resumes as Lightning resumes such checkpoints (its loop
counters are exact; a plain DataLoader starts its epoch over).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from oomguard.devices import device_of
from oomguard.integrations.trainer_watch import Act, TrainerWatch, run_directory

LAST = "last.ckpt"


def checkpoint_dir(trainer: Any) -> Path:
    """Where ``trainer`` keeps checkpoints: its ModelCheckpoint's folder, else ``root/checkpoints``."""
    keeper = getattr(trainer, "checkpoint_callback", None)
    folder = getattr(keeper, "dirpath", None)
    return Path(folder) if folder else Path(trainer.default_root_dir) / "checkpoints"


class OomguardCallback(Callback):  # type: ignore[misc]
    """See the module docstring. ``memory_limit`` and ``min_available`` mean what they mean for the Guard."""

    def __init__(self, run_dir: str | Path | None = None, memory_limit: str | float | int = "auto",
                 min_available: str | int = "auto") -> None:
        self.run_dir, self.memory_limit, self.min_available = run_dir, memory_limit, min_available
        self.watch: TrainerWatch | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        run_dir = run_directory(self.run_dir, Path(trainer.default_root_dir) / "oomguard")
        self.watch = TrainerWatch(run_dir, device_of(pl_module), self.memory_limit, self.min_available)
        self.watch.begin(int(trainer.global_step), {"trainer": "lightning",
                                                    "default_root_dir": str(trainer.default_root_dir),
                                                    "max_epochs": trainer.max_epochs})

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.watch is None:
            return
        act = self.watch.after_step(int(trainer.global_step))
        if act is None:
            return
        trainer.save_checkpoint(checkpoint_dir(trainer) / LAST)
        if act is Act.STOP:
            trainer.should_stop = True

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.watch is not None:
            watch, self.watch = self.watch, None
            watch.end(int(trainer.global_step), epochs=int(trainer.current_epoch))
