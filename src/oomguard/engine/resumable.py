"""Checkpoints and exact resume of a hand-written loop, through its Guard.

::

    guard = Guard(model, optimizer, run_dir="runs/food", checkpoint_every="2m", scheduler=sched)
    state = {"epoch": 0, "loader": loader}
    guard.restore(state)                    # True when it resumed from the newest checkpoint in run_dir
    for epoch in range(state["epoch"], epochs):
        state["epoch"] = epoch
        for batch in loader:
            guard.step(batch, loss_fn)      # timed and emergency checkpoints happen here
    guard.save(); guard.close()

What a checkpoint holds, and as of when:

- the model, optimizer, scheduler, GradScaler, the Guard's plan and the plain
  values of ``state`` (numbers, strings, tensors, lists and dicts of them): as
  they are when a step starts, so a loop that updates ``state`` after each
  step is always saved consistently;
- the random generators (Python, NumPy, torch, the device's) and the
  ``state_dict()`` of the objects in ``state`` (a resumable loader): as they
  were when the previous step ended, before the loop fetched the batch it is
  about to train on. A resume fetches that batch again, with the same draws.
- A plain ``DataLoader`` has no position to save: a resume starts its epoch
  again, and the console says so once.
- An integer ``state["epoch"]`` follows a :class:`~oomguard.data.resumable.ResumableLoader`
  that was handed out to the end of its epoch: a checkpoint taken after the
  loop's last epoch (``guard.save()``) resumes with nothing left to train.

Checkpoints are written in the background (an in-memory snapshot first),
atomically and checksummed, into ``run_dir/weights`` exactly as ``oomguard
train`` writes them (``last.pt`` loads with ``weights_only=True``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader

from oomguard import environment
from oomguard import events as ev
from oomguard.checkpoint import AsyncCheckpointer, CheckpointStore, RunLock, capture_state, restore_state
from oomguard.checkpoint.rng import RawRng, raw_rng, rng_from_raw
from oomguard.checkpoint.snapshots import check_loadable, snapshot
from oomguard.codes import EXIT_PRESSURE
from oomguard.data.resumable import ResumableLoader
from oomguard.errors import MemoryPressureError, RunDirError
from oomguard.memory.pressure import PressureDecision

if TYPE_CHECKING:
    from oomguard.engine.guard import Guard

#: The ``extra`` key of a checkpoint that holds the loop's own ``state``.
STATE_KEY = "loop_state"


def _stateful(value: Any) -> bool:
    return callable(getattr(value, "state_dict", None)) and callable(getattr(value, "load_state_dict", None))


def _loadable(value: Any) -> bool:
    try:
        check_loadable(value)
    except TypeError:
        return False
    return True


class LoopCheckpoints:
    """The Guard's checkpoints of a hand-written loop (see the module docstring)."""

    def __init__(self, guard: Guard, run_dir: Path, every: float | None, scheduler: Any = None, keep: int = 2,
                 console: Callable[[str], None] | None = None) -> None:
        self.guard, self.scheduler = guard, scheduler
        self.console = console or _stderr
        self.lock = RunLock(run_dir)
        self.lock.acquire()
        self.store = CheckpointStore(Path(run_dir) / "weights", keep=keep, events=guard.events,
                                     console=self.console)
        self.writer = AsyncCheckpointer(self.store, every=every)
        self.state: MutableMapping[str, Any] | None = None
        self.step = 0
        #: As the last step ended: the state_dict() of the stateful values of ``state``, and the generators.
        self._positions: dict[str, Any] = {}
        self._rng: RawRng | None = None
        self._said: set[str] = set()

    # -- the Protection the Guard calls ---------------------------------------------------------------

    def step_number(self) -> int:
        return self.step

    def before_step(self) -> None:
        if self.writer.due():
            self._submit()

    def after_step(self) -> None:
        self.step += 1
        self._mark()

    def save_now(self) -> None:
        self._submit()
        self.writer.wait()

    def stop_for_pressure(self, decision: PressureDecision) -> None:
        """Checkpoint, then exit 75 under a supervisor (it resumes when memory is back), else raise."""
        self.save_now()
        message = (f"{decision.words()}, even at microbatch 1; checkpointed at step {self.step}; resume when "
                   f"{decision.need:,} bytes are available")
        if environment.SUPERVISED in os.environ:
            self.guard.events.emit(ev.Stop(cause="pressure", reason=message, exit_code=EXIT_PRESSURE,
                                           step=self.step, need=decision.need))
            self.close()
            print(f"oomguard: stopped: {message} (the supervisor waits for it)", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_PRESSURE)
        raise MemoryPressureError(message)

    # -- the loop's own calls ---------------------------------------------------------------------------

    def restore(self, state: MutableMapping[str, Any] | None) -> bool:
        """Remember ``state``; load the newest valid checkpoint into everything; True when there was one."""
        self.state = state
        found = self.store.load_latest()
        if found is not None:
            checkpoint, path = found
            runner = self.guard.runner
            point = restore_state(checkpoint, model=runner.eval_model, optimizer=runner.optimizer,
                                  scheduler=self.scheduler, scaler=runner.scaler, device=self.guard.device)
            self.guard.load_state_dict(point.plan)
            self.step = point.step
            self._load_state(dict(point.extra.get(STATE_KEY) or {}))
            self.console(f"resuming {path.parent.parent} from {path.name}: step {self.step}")
        self._mark()
        self._warn_about(state or {})
        return found is not None

    def save(self) -> None:
        """A checkpoint of everything as it is now (the end of a loop), written before this returns."""
        self._mark()
        self.save_now()

    def close(self) -> None:
        """Finish the write in flight and free the run directory's lock."""
        self.writer.close()
        self.lock.release()

    # -- inside -----------------------------------------------------------------------------------------

    def _mark(self) -> None:
        state = self.state or {}
        self._positions = {key: snapshot(value.state_dict()) for key, value in state.items()
                           if _stateful(value)}
        self._rng = raw_rng(self.guard.device)

    def _submit(self) -> None:
        runner = self.guard.runner
        state = self.state or {}
        plain = {key: value for key, value in state.items() if not _stateful(value) and _loadable(value)}
        epoch = state.get("epoch")
        checkpoint = capture_state(
            model=runner.eval_model, optimizer=runner.optimizer, scheduler=self.scheduler,
            scaler=runner.scaler, step=self.step,
            epoch=epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else 0,
            plan=self.guard.state_dict(), device=self.guard.device,
            rng=rng_from_raw(self._rng) if self._rng is not None else None,
            extra={STATE_KEY: {"values": plain, "objects": self._positions}},
        )
        self.writer.submit(checkpoint, step=self.step)
        if self.writer.should_stop:  # the disk kept failing: stop before more unprotected work piles up
            raise RunDirError(self.writer.stop_reason)

    def _load_state(self, saved: dict[str, Any]) -> None:
        if self.state is None:
            return
        for key, value in dict(saved.get("values") or {}).items():
            self.state[key] = value
        for key, position in dict(saved.get("objects") or {}).items():
            target = self.state.get(key)
            if target is not None and _stateful(target):
                target.load_state_dict(position)
        # ``state["epoch"]`` is set as an epoch starts; a loader handed out to its end is one epoch further
        # (a checkpoint at the end of the loop, after its last epoch): the loop goes on where the data is.
        epoch = self.state.get("epoch")
        loaders = [value.next_epoch() for value in self.state.values() if isinstance(value, ResumableLoader)]
        if isinstance(epoch, int) and not isinstance(epoch, bool) and loaders and max(loaders) > epoch:
            self.state["epoch"] = max(loaders)

    def _warn_about(self, state: MutableMapping[str, Any]) -> None:
        """Once per key: what a checkpoint cannot hold, and a DataLoader that will restart its epoch."""
        for key, value in state.items():
            if key in self._said or _stateful(value) or _loadable(value):
                continue
            self._said.add(key)
            if isinstance(value, DataLoader):
                self.console(f"state[{key!r}] is a DataLoader without state_dict(): a resume starts its "
                             "epoch again; oomguard.ResumableLoader (or torchdata's StatefulDataLoader) "
                             "continues at the next sample")
            else:
                self.console(f"state[{key!r}] (a {type(value).__name__}) has no state_dict() and is not a "
                             "plain value: checkpoints leave it out")


def _stderr(text: str) -> None:
    print(f"oomguard: {text}", file=sys.stderr, flush=True)
