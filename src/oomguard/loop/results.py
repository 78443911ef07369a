"""``results.csv``: one row per finished epoch, kept consistent across kills and resumes."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

from oomguard.atomic import replacing
from oomguard.events import PeakCheck
from oomguard.loop.callbacks import Callback
from oomguard.loop.state import State

LEADING = ("epoch", "train_loss")
TRAILING = ("lr", "microbatch", "eval_microbatch", "peak_memory_mb", "predicted_peak_mb", "seconds")


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as file:
        return [row for row in csv.DictReader(file) if row.get("epoch")]


def write_rows(path: Path, columns: list[str], rows: list[dict[str, object]]) -> None:
    with replacing(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def csv_cell(value: object) -> object:
    """A value as results.csv writes it: floats to 6 significant digits, NaN as an empty cell."""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def predicted_mb(check: PeakCheck | None) -> float | None:
    """The epoch's predicted peak in MB, as results.csv writes it beside the measured one."""
    return None if check is None else round(check.predicted / 1e6, 1)


class ResultsWriter(Callback):
    """Appends a row at each epoch end; on resume drops rows past the checkpoint's epoch."""

    def __init__(self, metric_names: list[str], staged: bool = False) -> None:
        leading = [LEADING[0], "stage", *LEADING[1:]] if staged else list(LEADING)
        self.columns = [*leading, *metric_names, *TRAILING]

    def on_start(self, state: State) -> None:
        path = state.run.results
        rows = read_rows(path)
        kept = [row for row in rows if int(row["epoch"]) <= state.epoch_offset + state.epoch]
        if kept != rows or (rows and list(rows[0]) != self.columns):
            write_rows(path, self.columns, kept)  # type: ignore[arg-type]

    def on_epoch_end(self, state: State) -> None:
        seconds = state.epoch_seconds_before + time.monotonic() - state.epoch_started
        check = state.peak_check
        row: dict[str, object] = {
            "epoch": state.epoch_offset + state.epoch + 1,
            "stage": None if state.stage is None else state.stage + 1,
            "train_loss": state.train_loss,
            **state.metrics,
            "lr": state.lr,
            # The sizes the epoch ended with (the peak check may have resized them for the next).
            "microbatch": check.microbatch if check is not None else state.guard.microbatch,
            "eval_microbatch": check.eval_microbatch if check is not None else state.guard.eval_microbatch,
            "peak_memory_mb": round(state.epoch_peak / 1e6, 1),
            "seconds": round(seconds, 2),
            "predicted_peak_mb": predicted_mb(check),
        }
        path = state.run.results
        new = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({key: csv_cell(value) for key, value in row.items()})
