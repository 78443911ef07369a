"""``task=detect``: YOLOv8n from ``yolov8n.yaml`` through ultralytics, in an oomguard run directory."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_helpers import oomguard

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ultralytics") is None,
    reason="ultralytics is not installed (.ci/install-vision installs it with a CPU-loadable torchvision)",
)

ENV = {"YOLO_OFFLINE": "1"}


def make_detection_dataset(root: Path, train: int = 16, val: int = 4, size: int = 64) -> Path:
    """Grey images with red (class 0) and blue (class 1) boxes, in ultralytics' layout, and its data.yaml."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            noise = rng.integers(0, 20, (size, size, 3), dtype=np.uint8)
            pixels = np.full((size, size, 3), 90, np.uint8) + noise
            lines = []
            for _ in range(2):
                w, h = (int(v) for v in rng.integers(size // 5, size // 2, 2))
                x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                cls = int(rng.integers(0, 2))
                pixels[y:y + h, x:x + w] = (230, 40, 40) if cls == 0 else (40, 40, 230)
                lines.append(f"{cls} {(x + w / 2) / size:.4f} {(y + h / 2) / size:.4f} {w / size:.4f} "
                             f"{h / size:.4f}")
            Image.fromarray(pixels).save(root / "images" / split / f"{i}.png")
            (root / "labels" / split / f"{i}.txt").write_text("\n".join(lines) + "\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\n"
                    "names:\n  0: red\n  1: blue\n")
    return data


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv", newline="") as file:
        return list(csv.DictReader(file))


def events(run: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]


def args(data: Path, epochs: int) -> list[str]:
    return ["task=detect", "model=yolov8n.yaml", f"data={data}", f"epochs={epochs}", "imgsz=64", "batch=16",
            "workers=0"]


def test_yolov8n_trains_two_epochs_into_a_run_directory(tmp_path: Path) -> None:
    data = make_detection_dataset(tmp_path / "boxes")
    done = oomguard("train", "--no-supervise", *args(data, 2), cwd=tmp_path, env=ENV)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "exp"
    for name in ("config.yaml", "memory.csv", "weights/best.pt", "report.html", "memory.png"):
        assert (run / name).is_file(), name
    weights = torch.load(run / "weights" / "last.pt", weights_only=True)["model"]
    assert all(isinstance(v, torch.Tensor) for v in weights.values()) and len(weights) > 100
    table = rows(run)
    assert [int(row["epoch"]) for row in table] == [1, 2]
    assert (run / "yolo" / "weights" / "last.pt").is_file()  # ultralytics' own files stay inside the run
    log = events(run)
    plan = next(event for event in log if event["event"] == "plan")  # measured on the YOLO model itself
    assert [row["size"] for row in plan["table"]] == [1, 2, 4, 8, 16]  # type: ignore[index]
    assert all(float(row["train_loss"]) > 0 and int(row["microbatch"]) == plan["microbatch"] for row in table)
    kinds = [event["event"] for event in log]
    assert kinds[:2] == ["start", "plan"] and kinds[-1] == "finish" and kinds.count("checkpoint") == 2

    # Ultralytics' own weights of that run as the model of a new one (a .pt instead of a .yaml).
    weights_file = run / "yolo" / "weights" / "best.pt"
    again = oomguard("train", "--no-supervise", *args(data, 1), f"model={weights_file}", "name=again",
                     cwd=tmp_path, env=ENV)
    assert again.returncode == 0, again.stderr
    assert [int(row["epoch"]) for row in rows(tmp_path / "runs" / "again")] == [1]


def test_a_detection_run_killed_mid_epoch_is_restarted_and_finishes(tmp_path: Path) -> None:
    data = make_detection_dataset(tmp_path / "boxes", train=48)
    env = {**os.environ, "OOMGUARD_CACHE": str(tmp_path / "cache"), **ENV}
    auto = [arg for arg in args(data, 4) if arg != "task=detect"]  # a data.yaml implies detection
    process = subprocess.Popen([sys.executable, "-m", "oomguard", "train", *auto, "microbatch=8"],
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    run = tmp_path / "runs" / "exp"
    deadline = time.monotonic() + 240
    child = None
    while child is None and process.poll() is None:  # the child's pid, once it has finished epoch 1
        assert time.monotonic() < deadline, "no epoch finished in time"
        log = events(run) if (run / "events.jsonl").exists() else []
        if any(e["event"] == "checkpoint" for e in log):
            child = next(e["pid"] for e in log if e["event"] == "start")
        time.sleep(0.01)
    assert child is not None, "the run finished before it could be killed"
    os.kill(int(child), signal.SIGKILL)  # type: ignore[call-overload]
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    log = events(run)
    starts = [e for e in log if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["resume"] is True
    assert any(e["event"] == "kill" for e in log) and any(e["event"] == "restart" for e in log)
    assert [int(row["epoch"]) for row in rows(run)] == [1, 2, 3, 4]
    assert log[-1]["event"] == "finish"


def test_a_detection_config_without_a_yolo_model_is_refused_before_any_work(tmp_path: Path) -> None:
    data = make_detection_dataset(tmp_path / "boxes", train=1, val=1)
    done = oomguard("train", "--no-supervise", "task=detect", f"data={data}", cwd=tmp_path, env=ENV)
    assert done.returncode == 2
    assert done.stderr.strip() == ("oomguard: error: task=detect needs a YOLO model file, got "
                                   "model='builtin:tiny'; give model=yolov8n.yaml or a local .pt")
    assert not (tmp_path / "runs").exists()
