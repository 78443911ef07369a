"""``task=detect``: YOLOv8n from ``yolov8n.yaml`` through ultralytics, in an oomguard run directory."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from cgroup_helpers import MB, join, memory_cgroup, start_balloon
from cli_helpers import oomguard
from detect_helpers import make_detection_dataset
from oomguard.events import read_events

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ultralytics") is None,
    reason="ultralytics is not installed (.ci/install-vision installs it with a CPU-loadable torchvision)",
)

ENV = {"YOLO_OFFLINE": "1"}


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
    (indexed,) = [e for e in log if e["event"] == "data"]  # ultralytics' own checks, summed up
    assert (indexed["train"], indexed["val"], indexed["classes"], indexed["skipped"]) == (16, 4, 2, 0)
    # The epoch's peak predicted from the probe: the model, its EMA copy, AdamW's state, ultralytics'
    # save, its mosaic images, a step of 16 images and a validation of 32; measured within a tenth.
    assert {"model", "ema", "optimizer", "snapshot", "cache", "activations", "evaluation"} <= set(
        plan["components"])  # type: ignore[arg-type]
    assert plan["eval_microbatch"] == 32
    for row in table:
        predicted, measured = float(row["predicted_peak_mb"]), float(row["peak_memory_mb"])
        assert abs(measured / predicted - 1) <= 0.10, row
    assert [e["epoch"] for e in log if e["event"] == "peak_check"] == [1, 2]

    # Ultralytics' own weights of that run as the model of a new one (a .pt instead of a .yaml), on data
    # with an image broken since: ultralytics leaves it out, and the run's events and skipped.csv say so.
    broken = tmp_path / "boxes" / "images" / "train" / "3.png"
    broken.write_bytes(broken.read_bytes()[:200])
    weights_file = run / "yolo" / "weights" / "best.pt"
    again = oomguard("train", "--no-supervise", *args(data, 1), f"model={weights_file}", "name=again",
                     cwd=tmp_path, env=ENV)
    assert again.returncode == 0, again.stderr
    assert [int(row["epoch"]) for row in rows(tmp_path / "runs" / "again")] == [1]
    (indexed,) = [e for e in events(tmp_path / "runs" / "again") if e["event"] == "data"]
    assert (indexed["train"], indexed["skipped"], indexed["skipped_files"]) == (15, 1, [str(broken)])
    with open(tmp_path / "runs" / "again" / "skipped.csv", newline="") as file:
        (row,) = list(csv.DictReader(file))
    assert (row["image"], row["split"]) == ("images/train/3.png", "train") and row["reason"]
    assert "data: ultralytics left out 1 corrupt image (its warnings above)" in again.stdout


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


def kill_after_checkpoints(argv: list[str], cwd: Path, run: Path, count: int = 1) -> None:
    """Start ``oomguard ARGV`` and SIGKILL it once it has written ``count`` epochs' checkpoints."""
    env = {**os.environ, "OOMGUARD_CACHE": str(cwd / "cache"), **ENV}
    process = subprocess.Popen([sys.executable, "-m", "oomguard", *argv], cwd=cwd, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    seen = len(list(read_events(run / "events.jsonl")))
    while [e["event"] for e in list(read_events(run / "events.jsonl"))[seen:]].count("checkpoint") < count:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no epoch finished in time"
        time.sleep(0.01)
    process.kill()
    process.wait(timeout=30)


def test_memory_pressure_checkpoints_mid_epoch_exits_75_and_the_resume_finishes(tmp_path: Path) -> None:
    data = make_detection_dataset(tmp_path / "boxes", train=48)
    run = tmp_path / "runs" / "exp"
    base = ["train", "--no-supervise", *args(data, 3), "microbatch=8"]  # 6 batches an epoch
    low = "min_available=100000GB"  # more than any machine has: pressure from the first batch on

    # In a first epoch ultralytics has nothing to resume from: no checkpoint, exit 75, epoch 1 starts over.
    first = oomguard(*base, low, cwd=tmp_path, env=ENV)
    assert first.returncode == 75, first.stderr
    assert "no resumable checkpoint inside a first epoch (epoch 1 starts over on resume)" in first.stdout
    log = events(run)
    pressure = [e for e in log if e["event"] == "pressure"]
    assert [(e["action"], e["epoch"], e["step"]) for e in pressure] == [("checkpoint", 1, 1), ("exit", 1, 4)]
    assert all(e["need"] > 0 and e["min_available"] == 100_000 * 10**9 for e in pressure)
    assert "checkpoint" not in [e["event"] for e in log] and log[-1]["event"] == "stop"
    assert not (run / "results.csv").exists() and not (run / "yolo" / "weights" / "last.pt").exists()

    # Epoch 1 done (then killed); pressure inside epoch 2 saves ultralytics' last.pt as "epoch 1 finished".
    kill_after_checkpoints([*base, "--resume", "min_available=auto"], tmp_path, run)
    second = oomguard(*base, "--resume", low, cwd=tmp_path, env=ENV)
    assert second.returncode == 75, second.stderr
    log = events(run)
    tail = log[max(i for i, e in enumerate(log) if e["event"] == "start"):]
    kinds = [e["event"] for e in tail if e["event"] != "data"]  # ultralytics' dataset summary aside
    assert kinds == ["start", "plan", "pressure", "checkpoint", "pressure", "checkpoint", "stop"]
    assert tail[0]["resume"] is True
    saves = [e for e in tail if e["event"] == "checkpoint"]
    assert all(e["epoch"] == 1 and e["path"] == str(run / "yolo" / "weights" / "last.pt") for e in saves)
    assert [e["step"] for e in saves] == [1, 4] and tail[-1]["epoch"] == 1
    assert torch.load(run / "yolo" / "weights" / "last.pt", weights_only=False)["epoch"] == 0
    assert [int(row["epoch"]) for row in rows(run)] == [1]

    third = oomguard(*base, "--resume", "min_available=auto", cwd=tmp_path, env=ENV)
    assert third.returncode == 0, third.stderr
    assert [int(row["epoch"]) for row in rows(run)] == [1, 2, 3]
    assert events(run)[-1]["event"] == "finish"
    assert (run / "report.html").is_file()


def test_supervised_pressure_waits_for_memory_then_resumes_the_epoch(tmp_path: Path) -> None:
    """A real squeeze: a balloon in the run's cgroup, released only once the run has left on pressure."""
    data = make_detection_dataset(tmp_path / "boxes", train=48)
    run = tmp_path / "runs" / "exp"
    base = ["train", *args(data, 3), "microbatch=8"]
    kill_after_checkpoints([*base, "--no-supervise"], tmp_path, run)  # epoch 1 done: resumable
    env = {**os.environ, "OOMGUARD_CACHE": str(tmp_path / "cache"), **ENV}
    with memory_cgroup(2048 * MB) as group:
        balloon = start_balloon(group, 1024 * MB)  # leaves the run (~0.7 GB) under its 700 MB minimum
        supervisor = subprocess.Popen([sys.executable, "-m", "oomguard", *base, "--resume",
                                       "min_available=700MB"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, preexec_fn=lambda: join(group))
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            for line in supervisor.stdout or ():
                lines.put(line)

        reader = threading.Thread(target=read)
        reader.start()
        output, deadline = "", time.monotonic() + 240
        while "waiting up to" not in output:  # the child left on pressure; the supervisor waits for memory
            output += lines.get(timeout=max(0.0, deadline - time.monotonic()))
        balloon.kill()  # the memory comes back: the supervisor's wait ends
        balloon.wait()
        supervisor.wait(timeout=300)
        reader.join()
    while not lines.empty():
        output += lines.get()
    assert supervisor.returncode == 0, output
    log = events(run)
    pressure = [e for e in log if e["event"] == "pressure"]
    assert [e["action"] for e in pressure] == ["checkpoint", "exit"] and pressure[0]["epoch"] == 2
    restart = next(e for e in log if e["event"] == "restart")
    assert restart["cause"] == "pressure"
    starts = [e for e in log if e["event"] == "start"]
    assert len(starts) == 3 and all(e["resume"] for e in starts[1:])
    assert [int(row["epoch"]) for row in rows(run)] == [1, 2, 3]
    assert log[-1]["event"] == "finish"


def write_staged_config(path: Path, data: Path) -> Path:
    path.write_text(f"task: detect\nmodel: yolov8n.yaml\ndata: {data}\nbatch: 8\nworkers: 0\n"
                    "stages:\n  - {epochs: 1, imgsz: 64}\n  - {epochs: 1, imgsz: 96, lr: 0.001}\n")
    return path


def test_detection_stages_train_one_after_the_other_into_one_run_directory(tmp_path: Path) -> None:
    data = make_detection_dataset(tmp_path / "boxes", train=8, val=2)
    config = write_staged_config(tmp_path / "staged.yaml", data)
    done = oomguard("train", "--no-supervise", str(config), cwd=tmp_path, env=ENV)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "exp"
    table = rows(run)
    assert [(int(row["epoch"]), int(row["stage"])) for row in table] == [(1, 1), (2, 2)]
    assert list(table[0])[:3] == ["epoch", "stage", "train_loss"]
    for name in ("config.yaml", "memory.csv", "weights/last.pt", "weights/best.pt", "report.html"):
        assert (run / name).is_file(), name
    assert torch.load(run / "weights" / "last.pt", weights_only=True)["epoch"] == 2
    for stage in ("stage-1", "stage-2"):
        assert (run / "yolo" / stage / "weights" / "last.pt").is_file(), stage
    second = torch.load(run / "yolo" / "stage-2" / "weights" / "last.pt", weights_only=False)["train_args"]
    assert Path(tmp_path, second["model"]) == run / "yolo" / "stage-1" / "weights" / "last.pt"
    assert (second["imgsz"], second["lr0"]) == (96, 0.001)
    log = events(run)
    stages = [e for e in log if e["event"] == "stage"]
    assert [(e["stage"], e["stages"], e["first_epoch"], e["last_epoch"], e["resume"]) for e in stages] == [
        (1, 2, 1, 1, False), (2, 2, 2, 2, False)]
    assert stages[1]["overrides"] == {"epochs": 1, "imgsz": 96, "lr": 0.001}
    assert [e["event"] for e in log].count("plan") == 2  # a new image size, a new plan

    # Resuming a finished staged run trains nothing more.
    again = oomguard("train", "--no-supervise", "--resume", str(config), cwd=tmp_path, env=ENV)
    assert again.returncode == 0, again.stderr
    assert "all epochs were already trained" in again.stdout
    assert [int(row["epoch"]) for row in rows(run)] == [1, 2]


def test_a_staged_detection_run_resumes_in_the_stage_it_was_stopped_in(tmp_path: Path) -> None:
    data = make_detection_dataset(tmp_path / "boxes", train=8, val=2)
    config = tmp_path / "staged.yaml"
    config.write_text(f"task: detect\nmodel: yolov8n.yaml\ndata: {data}\nbatch: 8\nworkers: 0\n"
                      "microbatch: 2\nstages:\n  - {epochs: 1, imgsz: 64}\n  - {epochs: 2, imgsz: 96}\n")
    run = tmp_path / "runs" / "exp"
    kill_after_checkpoints(["train", "--no-supervise", str(config)], tmp_path, run, count=2)
    assert [(int(row["epoch"]), int(row["stage"])) for row in rows(run)] == [(1, 1), (2, 2)]

    done = oomguard("train", "--no-supervise", "--resume", str(config), cwd=tmp_path, env=ENV)
    assert done.returncode == 0, done.stderr
    assert [(int(row["epoch"]), int(row["stage"])) for row in rows(run)] == [(1, 1), (2, 2), (3, 2)]
    log = events(run)
    tail = log[max(i for i, e in enumerate(log) if e["event"] == "start"):]
    stages = [e for e in tail if e["event"] == "stage"]
    assert [(e["stage"], e["resume"], e["epoch"]) for e in stages] == [(2, True, 2)]  # inside stage 2
    assert [e["epoch"] for e in tail if e["event"] == "epoch"] == [3]


def test_a_detection_config_without_a_yolo_model_is_refused_before_any_work(tmp_path: Path) -> None:
    data = make_detection_dataset(tmp_path / "boxes", train=1, val=1)
    done = oomguard("train", "--no-supervise", "task=detect", f"data={data}", cwd=tmp_path, env=ENV)
    assert done.returncode == 2
    assert done.stderr.strip() == ("oomguard: error: task=detect needs a YOLO model file, got "
                                   "model='builtin:tiny'; give model=yolov8n.yaml or a local .pt")
    assert not (tmp_path / "runs").exists()


PLAIN_YOLO = """
import json, sys
from ultralytics import YOLO
data, project, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = []
model = YOLO("yolov8n.yaml")
model.add_callback("on_train_start", lambda trainer: seen.append(trainer.batch_size * trainer.accumulate))
model.train(data=data, epochs=1, imgsz=64, batch=batch, workers=0, device="cpu", project=project,
            name="plain", plots=False, val=False, verbose=False)
print(json.dumps(seen))
"""


def test_the_effective_batch_is_plain_ultralytics_own_with_and_without_a_smaller_batch(tmp_path: Path,
                                                                                      ) -> None:
    data = make_detection_dataset(tmp_path / "boxes", train=64, val=4)
    plain = subprocess.run([sys.executable, "-c", PLAIN_YOLO, str(data), str(tmp_path / "plain"), "16"],
                           capture_output=True, text=True, cwd=tmp_path, env={**os.environ, **ENV},
                           timeout=600)
    assert plain.returncode == 0, plain.stderr
    (expected,) = json.loads(plain.stdout.strip().splitlines()[-1])
    assert expected == 64  # 16 images a step, accumulated 4 times up to ultralytics' nbs of 64

    base = ["train", "--no-supervise", *args(data, 1)]
    free = oomguard(*base, "name=free", cwd=tmp_path, env=ENV)
    assert free.returncode == 0, free.stderr
    (row,) = rows(tmp_path / "runs" / "free")
    assert (int(row["microbatch"]), int(row["effective_batch"])) == (16, expected)

    # A budget at the peak the probe measured for 16 images: 16 no longer fits, a smaller step does.
    plan = next(e for e in events(tmp_path / "runs" / "free") if e["event"] == "plan")
    peak16 = next(r["peak"] for r in plan["table"] if r["size"] == 16)  # type: ignore[index]
    tight = oomguard(*base, "name=tight", f"memory_limit={peak16}B", cwd=tmp_path, env=ENV)
    assert tight.returncode == 0, tight.stderr
    (row,) = rows(tmp_path / "runs" / "tight")
    assert int(row["microbatch"]) < 16
    assert int(row["effective_batch"]) == expected

