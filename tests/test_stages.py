"""``stages:``: one run directory trained in stages, each from the previous stage's weights, resumable."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cli_helpers import make_folder_dataset, oomguard
from oomguard.config import build_config
from oomguard.loop.stages import stage_configs

CONFIG = """\
task: classify
batch: {batch}
imgsz: 16
warmup_epochs: 0
lr: 0.01
workers: 0
checkpoint_every: {every}
stages:
  - {{epochs: 2}}
  - {{epochs: {second}, imgsz: 24, lr: 0.001}}
"""


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv", newline="") as file:
        return list(csv.DictReader(file))


def events(run: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]


def write_config(tmp_path: Path, batch: int = 8, second: int = 2, every: str = "5m") -> Path:
    path = tmp_path / "staged.yaml"
    path.write_text(CONFIG.format(batch=batch, second=second, every=every))
    return path


def test_stage_configs_apply_overrides_to_the_base() -> None:
    config = build_config({"imgsz": 16, "lr": 0.01, "epochs": 7,
                           "stages": [{"epochs": 2}, {"epochs": 3, "imgsz": 24, "lr": 0.001}]})
    first, second = stage_configs(config)
    assert (first.epochs, first.imgsz, first.lr, first.stages) == (2, 16, 0.01, None)
    assert (second.epochs, second.imgsz, second.lr) == (3, 24, 0.001)
    assert stage_configs(build_config({"epochs": 7})) == [build_config({"epochs": 7})]


@pytest.mark.parametrize(("stage", "message"), [
    ({"imgsz": 4}, "stages[1]: bad value for 'imgsz': expected an integer image size of at least 8 pixels, "
                   "got 4"),
    ({"epoch": 2}, "stages[1]: unknown config key 'epoch' (did you mean 'epochs'?); "
                   "see the keys in the README"),
    ({"name": "b"}, "stages[1] sets 'name', which is the same for every stage; set it outside stages"),
])
def test_a_bad_stage_is_one_line_before_any_work(tmp_path: Path, stage: dict[str, object],
                                                 message: str) -> None:
    stages = json.dumps([{"epochs": 1}, stage])
    done = oomguard("train", "--no-supervise", f"stages={stages}", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"oomguard: error: {message}"
    assert not (tmp_path / "runs").exists()


def test_two_stages_share_one_run_directory(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "colours", per_class=8)
    done = oomguard("train", str(write_config(tmp_path)), "--no-supervise", f"data={data}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "exp"
    for name in ("config.yaml", "memory.csv", "weights/best.pt", "report.html"):
        assert (run / name).is_file(), name
    assert torch.load(run / "weights" / "last.pt", weights_only=True)["extra"]["stage"] == 1
    table = rows(run)
    assert [(int(r["epoch"]), int(r["stage"])) for r in table] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    # Stage 2 runs its own schedule from its own lr: cosine from 0.001, not the tail of stage 1's.
    assert 0.0005 < float(table[2]["lr"]) <= 0.001 < float(table[0]["lr"])
    log = events(run)
    stages = [e for e in log if e["event"] == "stage"]
    assert [(e["stage"], e["first_epoch"], e["last_epoch"], e["resume"]) for e in stages] == [
        (1, 1, 2, False), (2, 3, 4, False)]
    assert stages[1]["overrides"] == {"epochs": 2, "imgsz": 24, "lr": 0.001}
    assert stages[1]["step"] == 6  # 24 images, batch 8: stage 1 took 3 + 3 steps, stage 2 continues
    assert sum(e["event"] == "plan" for e in log) == 2  # a new image size gets a new memory plan
    assert log[-1]["event"] == "finish" and log[-1]["epochs"] == 4
    printed = done.stdout + done.stderr
    assert "stage 2/2 (epochs 3-4): epochs=2 imgsz=24 lr=0.001" in printed
    assert "epoch 4/4  loss" in printed  # epochs are numbered across stages on the console too


def stage_two_checkpoints(run: Path) -> int:
    """Checkpoints written after stage 2 started (from the event log, tolerant of a torn last line)."""
    if not (run / "events.jsonl").exists():
        return 0
    seen, count = False, 0
    for line in (run / "events.jsonl").read_text().splitlines():
        seen = seen or ('"event":"stage"' in line and '"stage":2' in line)
        count += seen and '"event":"checkpoint"' in line and '"error"' not in line
    return count


def test_sigkill_in_stage_two_resumes_stage_two(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "colours", per_class=8)
    config = write_config(tmp_path, batch=2, second=3, every="0.01s")  # a checkpoint after every step
    env = {**os.environ, "OOMGUARD_CACHE": str(tmp_path / "cache")}
    process = subprocess.Popen([sys.executable, "-m", "oomguard", "train", str(config), "--no-supervise",
                                f"data={data}"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    run = tmp_path / "runs" / "exp"
    deadline = time.monotonic() + 240
    while stage_two_checkpoints(run) < 2 and process.poll() is None:
        assert time.monotonic() < deadline, "stage 2 wrote no checkpoint in time"
        time.sleep(0.01)
    assert process.poll() is None, "the run finished before stage 2 could be killed; make it longer"
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    killed_at = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert killed_at["extra"]["stage"] == 1 and killed_at["step"] > 24  # stage 1: 2 epochs x 12 steps

    resumed = oomguard("train", "--resume", "--no-supervise", f"data={data}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    log = events(run)
    restart = max(i for i, e in enumerate(log) if e["event"] == "start")
    assert log[restart]["resume"] is True and log[restart]["step"] == killed_at["step"]
    again = [e for e in log[restart:] if e["event"] == "stage"]
    assert [(e["stage"], e["resume"]) for e in again] == [(2, True)]  # stage 2 continued, stage 1 not redone
    table = rows(run)
    assert [(int(r["epoch"]), int(r["stage"])) for r in table] == [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)]
    assert log[-1]["event"] == "finish" and log[-1]["epochs"] == 5
