"""A training's beginning and end, as every trainer of oomguard announces them.

The built-in loop (:mod:`oomguard.loop.run`) and the ultralytics integration
both write the same ``start`` event when they begin and end with an
:class:`Outcome`: a ``finish`` event, or a ``stop`` event with its typed
cause, the console line that says what happens next, and the exit status.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oomguard import environment
from oomguard import events as ev
from oomguard.config import Config
from oomguard.events import EventLog
from oomguard.loop.stopping import StopCause, StopRequest
from oomguard.units import format_bytes


@dataclass(frozen=True)
class Outcome:
    """How a training ended: finished (``stop`` None) or stopped early, and where it was."""

    stop: StopRequest | None
    seconds: float
    epochs: int  # the run's last epoch, across stages
    epoch: int  # epochs done
    step: int | None = None
    best: float | None = None
    metric: str | None = None  # the name of ``best``
    metrics: dict[str, float] = field(default_factory=dict)
    microbatch: int | None = None

    @property
    def finished(self) -> bool:
        return self.stop is None

    @property
    def exit_code(self) -> int:
        return 0 if self.stop is None else self.stop.exit_code


def announce_start(events: EventLog, config: Config, *, resume: bool, device: str, budget: int | None,
                   epoch: int | None = None, step: int | None = None, ranks: int | None = None,
                   pids: list[int] | None = None, steps_per_epoch: int | None = None,
                   savers: list[str] | None = None, savers_on: list[str] | None = None) -> None:
    """The ``start`` event of this process's attempt at the run; ``savers``: the memory savers it may use,
    ``savers_on``: those in force now."""
    events.emit(ev.Start(pid=os.getpid(), attempt=environment.attempt(), resume=resume, device=device,
                         budget=budget, config=config.model_dump(mode="json"), epoch=epoch, step=step,
                         ranks=ranks, pids=pids, supervisor=environment.supervisor_pid(),
                         steps_per_epoch=steps_per_epoch, savers_usable=savers,
                         savers=savers_on))


def announce_end(events: EventLog, outcome: Outcome, config: Config, say: Callable[[str], None],
                 root: Any) -> None:
    """The ``finish`` or ``stop`` event and the console line that says what comes next."""
    resume = f"oomguard train --resume project={config.project} name={config.name}"
    stop = outcome.stop
    if stop is None:
        events.emit(ev.Finish(epochs=outcome.epochs, seconds=round(outcome.seconds, 2), best=outcome.best,
                              metrics=outcome.metrics))
        best = ""
        if outcome.metric is not None:
            value = outcome.best if outcome.best is not None else math.nan
            best = f"; best {outcome.metric} {value:.4f}"
        say(f"finished in {outcome.seconds:.0f}s{best}; results in {root}")
        return
    events.emit(ev.Stop(cause=stop.cause.value, reason=stop.reason, exit_code=stop.exit_code,
                        epoch=outcome.epoch, step=outcome.step, need=stop.need))
    if stop.cause is StopCause.PRESSURE:
        smallest = f", even at microbatch {outcome.microbatch}" if outcome.microbatch is not None else ""
        where = f"; checkpointed at step {outcome.step}" if outcome.step is not None else ""
        need = format_bytes(stop.need) if stop.need else "more memory"
        say(f"stopped: {stop.reason}{smallest}{where}; resume when {need} is available (the supervisor "
            f"waits for it): {resume}")
    else:
        say(f"stopped ({stop.reason}); continue with: {resume}")
