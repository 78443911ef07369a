"""Progress on the console: a live bar on a terminal, one plain line every few seconds elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from oomguard.loop.callbacks import Callback
from oomguard.loop.state import State
from oomguard.units import format_bytes


def memory_text(state: State) -> str:
    sample = state.memory.latest
    if sample is None:
        return ""
    parts = [f"mem {format_bytes(sample.tree_memory)}"]
    if not state.device.unified or state.device.kind == "mps":
        parts.append(f"{state.device.kind} {format_bytes(sample.device_reserved)}")
    parts.append(f"avail {format_bytes(sample.system_available)}")
    return " ".join(parts)


def epoch_label(state: State) -> str:
    """``3/4``: the epoch in progress and the last of its stage, numbered across stages."""
    return f"{state.epoch_offset + state.epoch + 1}/{state.epoch_offset + state.config.epochs}"


def epoch_summary(state: State) -> str:
    metrics = " ".join(f"{key} {value:.4g}" for key, value in state.metrics.items())
    seconds = state.epoch_seconds_before + time.monotonic() - state.epoch_started
    return (
        f"epoch {epoch_label(state)}  loss {state.train_loss:.4g}  {metrics}  "
        f"| {seconds:.1f}s  peak {format_bytes(state.epoch_peak)}  microbatch {state.guard.microbatch}"
    ).replace("  |", " |")


class ProgressPrinter(Callback):
    """Rich bar when ``stream`` is a terminal; otherwise a plain line every ``every`` seconds."""

    def __init__(self, stream: TextIO | None = None, every: float = 10.0, quiet: bool = False) -> None:
        #: Print nothing (ranks other than 0 of a group: one voice per run).
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.every = every
        self.live = self.stream.isatty()
        self.console = Console(file=self.stream, highlight=False)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._last = 0.0
        self._samples_at_start = 0
        self._started = 0.0

    def print(self, text: str) -> None:
        if self.quiet:
            return
        self.console.print(text, markup=False, soft_wrap=True)

    def _speed(self, state: State) -> float:
        elapsed = time.monotonic() - self._started
        return (state.position - self._samples_at_start) / elapsed if elapsed > 0 else 0.0

    def _status(self, state: State) -> str:
        return (
            f"loss {state.train_loss:.4g}  {self._speed(state):.0f} samples/s  "
            f"microbatch {state.guard.microbatch}  {memory_text(state)}"
        )

    def on_epoch_start(self, state: State) -> None:
        self._started = self._last = time.monotonic()
        self._samples_at_start = state.position
        if not self.live:
            return
        self._progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
            console=self.console, transient=True,
        )
        self._progress.start()
        done = state.position // max(1, state.config.batch)
        self._task = self._progress.add_task(
            "train", total=state.steps_per_epoch, completed=done,
            epoch=epoch_label(state), status="",
        )

    def on_step_end(self, state: State) -> None:
        now = time.monotonic()
        if self._progress is not None and self._task is not None:
            if now - self._last >= 0.2:
                self._progress.update(self._task, completed=self._step_in_epoch(state),
                                      status=self._status(state))
                self._last = now
        elif now - self._last >= self.every:
            self.print(
                f"epoch {epoch_label(state)} step "
                f"{self._step_in_epoch(state)}/{state.steps_per_epoch}  {self._status(state)}"
            )
            self._last = now

    def _step_in_epoch(self, state: State) -> int:
        return -(-state.position // max(1, state.config.batch))

    def _close_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def on_epoch_end(self, state: State) -> None:
        self._close_bar()
        self.print(epoch_summary(state))

    def on_end(self, state: State) -> None:
        self._close_bar()
