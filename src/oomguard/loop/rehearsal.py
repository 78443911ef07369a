"""``rehearse=true``: a short dress rehearsal that says whether the whole run will fit.

It trains at most :data:`REHEARSE_STEPS` steps (or one epoch, whichever is
less), runs one validation pass and writes one checkpoint, all with the real
plan (whose predicted epoch peak it prints part by part, as ``oomguard
probe`` does), in a temporary run directory (nothing is left behind: no
weights, no run directory to refuse the real run later). The memory used after each step
is fitted like a leak (lower envelope, Theil–Sen), and the peak at the end of
the full run is projected as the rehearsal's peak plus that slope times the
steps still to go (a slope that is not sustained counts as flat).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from oomguard import host
from oomguard.config import Config
from oomguard.engine.probe_result import ProbeResult
from oomguard.events import EventLog
from oomguard.loop.callbacks import Callback, CallbackList
from oomguard.loop.checkpointing import Checkpointing
from oomguard.loop.state import State
from oomguard.loop.stopping import StopCause
from oomguard.loop.train import fit, validate
from oomguard.memory.leak import SUSTAINED_TAU, LeakDetector
from oomguard.rundir import RunDir
from oomguard.units import format_bytes

REHEARSE_STEPS = 200


@dataclass(frozen=True)
class Projection:
    steps: int  # rehearsed
    total_steps: int  # of the full run
    peak: int  # measured in the rehearsal, budget bytes
    slope: float  # bytes per step, 0 when no sustained climb
    projected: int
    budget: int

    @property
    def fits(self) -> bool:
        return self.projected <= self.budget

    def words(self) -> str:
        verdict = "fits" if self.fits else "will not fit"
        growth = f", growing {format_bytes(self.slope)} per step" if self.slope > 0 else ""
        return (f"rehearsed {self.steps} of {self.total_steps} steps, a validation pass and a checkpoint; "
                f"peak {format_bytes(self.peak)}{growth}; projected peak at the end: "
                f"{format_bytes(self.projected)} of budget {format_bytes(self.budget)}: {verdict}")


def project(peak: int, slope: float, steps: int, total_steps: int, budget: int) -> Projection:
    """The peak at the end of the run: today's peak plus the climb over the steps still to go."""
    projected = int(peak + max(0.0, slope) * max(0, total_steps - steps))
    return Projection(steps, total_steps, peak, max(0.0, slope), projected, budget)


class StepLimit(Callback):
    """Records the memory after each step; stops the loop after ``limit`` steps or at the epoch's end."""

    def __init__(self, limit: int) -> None:
        self.limit, self.steps = limit, 0
        self.detector = LeakDetector(warmup=min(20, limit // 4), windows=(5,), min_windows=6)

    def on_step_end(self, state: State) -> None:
        self.steps += 1
        self.detector.add(self.steps, state.guard.meter.current())  # as the budget counts it
        if self.steps >= self.limit:
            state.request_stop(StopCause.REHEARSAL, "rehearsal")

    def on_epoch_end(self, state: State) -> None:
        state.request_stop(StopCause.REHEARSAL, "rehearsal")

    def slope(self) -> float:
        trend = self.detector.trend()
        return trend.slope if trend is not None and trend.tau >= SUSTAINED_TAU else 0.0


def rehearse(config: Config, build: Callable[[Config, RunDir, EventLog], State],
             say: Callable[[str], None] = print) -> Projection:
    """Run the rehearsal in a temporary directory and project the end of the run."""
    with tempfile.TemporaryDirectory(prefix="oomguard-rehearsal-") as folder:
        run = RunDir(Path(folder) / "run")
        run.root.mkdir(parents=True)
        events = EventLog(run.events)
        state = build(config, run, events)
        limit = min(REHEARSE_STEPS, state.steps_per_epoch)
        steps = StepLimit(limit)
        checkpointing = Checkpointing(state, console=say)
        state.memory.start()
        try:
            fit(state, CallbackList([steps]))
            state.stop = None
            plan = state.guard.last_plan
            if plan is not None:  # the same prediction ``oomguard probe`` prints
                result = ProbeResult(plan, str(state.device.torch_device), state.guard.budget.describe())
                say(result.prediction())
            with torch.no_grad():
                validate(state)
            checkpointing.save_now(state)
            checkpointing.writer.close()
            peak = max(state.guard.peak_memory, state.epoch_peak)
        finally:
            state.memory.stop()
        budget = state.guard.budget.limit or host.total_memory()
        total = state.steps_per_epoch * config.epochs
        return project(peak, steps.slope(), steps.steps, total, budget)
