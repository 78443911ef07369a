"""The predicted epoch peak against the measured one in real runs of ``oomguard train``; what prints it."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from cli_helpers import oomguard
from oomguard.events import HELD_PARTS, PHASE_PARTS

TENTH = 0.10


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv", newline="") as file:
        return list(csv.DictReader(file))


def events(run: Path, kind: str) -> list[dict[str, Any]]:
    lines = (json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line.strip())
    return [event for event in lines if event["event"] == kind]


def assert_within_a_tenth(run: Path) -> list[dict[str, str]]:
    """Every epoch's measured peak within a tenth of its prediction, under the budget; the rows."""
    table = rows(run)
    assert table, "no epoch finished"
    for row in table:
        predicted, measured = float(row["predicted_peak_mb"]), float(row["peak_memory_mb"])
        assert abs(measured / predicted - 1) <= TENTH, row
    return table


def test_the_builtin_task_predicts_each_epochs_peak_with_its_loader_workers(tmp_path: Path) -> None:
    done = oomguard("train", "--no-supervise", "dev_samples=256", "epochs=3", "batch=16", "imgsz=16",
                    "workers=2", "memory_limit=700MB", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "exp"
    table = assert_within_a_tenth(run)
    assert all(float(row["peak_memory_mb"]) <= 700 for row in table)

    (plan,) = events(run, "plan")
    parts = plan["components"]
    assert {"process", "model", "optimizer", "snapshot", "workers", "activations", "evaluation"} <= set(parts)
    held = sum(parts.get(name, 0) for name in HELD_PARTS)
    assert plan["predicted_peak"] == held + max(parts.get(name, 0) for name in PHASE_PARTS)
    checks = events(run, "peak_check")
    assert [check["epoch"] for check in checks] == [1, 2, 3]
    # No checkpoint is in flight in a fresh run's first epoch; the one written at its end is in the next.
    assert "snapshot" not in checks[0]["parts"] and checks[1]["parts"]["snapshot"] == parts["snapshot"]
    assert [round(check["predicted"] / 1e6, 1) for check in checks] == [
        float(row["predicted_peak_mb"]) for row in table]
    assert "parted" not in (run / "report.html").read_text()


def test_probe_and_rehearse_print_the_same_prediction_part_by_part(tmp_path: Path) -> None:
    args = ["dev_samples=64", "batch=16", "imgsz=16", "workers=0", "memory_limit=2GB"]
    probed = oomguard("probe", *args, cwd=tmp_path)
    assert probed.returncode == 0, probed.stderr
    rehearsed = oomguard("train", "rehearse=true", "epochs=5", "warmup_epochs=0", *args, cwd=tmp_path)
    assert rehearsed.returncode == 0, rehearsed.stderr
    for out in (probed.stdout, rehearsed.stdout):
        start = out.index("predicted epoch peak at microbatch 16, eval microbatch 16:")
        lines = out[start:].splitlines()[1:]
        named = [line.split("  ")[1].strip() for line in lines if line.startswith("  ")]
        assert named[:3] == ["the process (libraries, data)", "model weights and buffers", "optimizer state"]
        assert "training step at the microbatch" in named and "evaluation at the eval microbatch" in named
        assert named[-1] == "predicted epoch peak"
    as_json = oomguard("probe", *args, "--json", cwd=tmp_path)
    plan = json.loads(as_json.stdout)
    assert plan["predicted_peak"] == sum(plan["components"].get(name, 0) for name in HELD_PARTS) + max(
        plan["components"].get(name, 0) for name in PHASE_PARTS)
