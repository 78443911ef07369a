"""Hugging Face ``transformers.Trainer`` under oomguard's memory watch: ``OomguardCallback``.

::

    from oomguard.integrations.transformers import OomguardCallback

    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[OomguardCallback()])
    trainer.train(resume_from_checkpoint=...)   # oomguard run restarts it with --resume_from_checkpoint

The Trainer keeps its own loop and checkpoints (``output_dir/checkpoint-N``).
The callback writes the memory timeline, events and report to a run directory
(``oomguard run``'s, else ``run_dir``, else ``output_dir/oomguard``), warns
about leaks, and on memory pressure has the Trainer save a checkpoint at once;
when pressure persists it saves and stops training, and under a supervisor the
process exits with status 75 so that ``oomguard run`` resumes it from that
checkpoint once the memory is back. It cannot shrink the Trainer's batch
inside a run (the ``oomguard run`` preset halves ``--per_device_train_batch_size``
after a memory kill, with twice the accumulation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from oomguard.devices import device_of, get_device
from oomguard.integrations.trainer_watch import Act, TrainerWatch, run_directory


class OomguardCallback(TrainerCallback):  # type: ignore[misc]
    """See the module docstring. ``memory_limit`` and ``min_available`` mean what they mean for the Guard."""

    def __init__(self, run_dir: str | Path | None = None, memory_limit: str | float | int = "auto",
                 min_available: str | int = "auto") -> None:
        self.run_dir, self.memory_limit, self.min_available = run_dir, memory_limit, min_available
        self.watch: TrainerWatch | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        device = device_of(model) if model is not None else get_device("auto")
        run_dir = run_directory(self.run_dir, Path(args.output_dir) / "oomguard")
        self.watch = TrainerWatch(run_dir, device, self.memory_limit, self.min_available)
        config = {"trainer": "transformers", "output_dir": str(args.output_dir),
                  "max_steps": int(state.max_steps)}
        self.watch.begin(int(state.global_step), config)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.watch is None:
            return
        act = self.watch.after_step(int(state.global_step))
        if act is not None:
            control.should_save = True  # the Trainer writes checkpoint-<step> right after this step
        if act is Act.STOP:
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.watch is not None:
            watch, self.watch = self.watch, None
            watch.end(int(state.global_step))
