"""``oomguard train`` end to end in real processes: the run directory, both tasks, refusal, resume."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from cli_helpers import make_folder_dataset, make_table_dataset, oomguard

TINY = ["epochs=2", "batch=16", "imgsz=16", "warmup_epochs=0", "workers=0"]


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv", newline="") as file:
        return list(csv.DictReader(file))


def events(run: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def assert_run_directory(run: Path, epochs: int) -> None:
    for name in ("config.yaml", "results.csv", "events.jsonl", "memory.csv", "weights/last.pt",
                 "weights/best.pt", "report.html", "memory.png"):
        assert (run / name).is_file(), name
    checkpoint = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert isinstance(checkpoint["model"], dict)
    assert all(isinstance(v, torch.Tensor) for v in checkpoint["model"].values())
    assert [int(row["epoch"]) for row in rows(run)] == list(range(1, epochs + 1))
    kinds = [event["event"] for event in events(run)]
    assert kinds[0] == "start" and kinds[-1] == "finish" and "plan" in kinds


def test_classify_on_an_image_folder(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "colours")
    done = oomguard("train", "--no-supervise", f"data={data}", "task=classify", "lr=0.01", *TINY,
                    "epochs=4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "exp"
    assert_run_directory(run, epochs=4)
    last = rows(run)[-1]
    assert float(last["accuracy"]) > 0.6  # chance is 1/3
    assert "mae_mass" not in last


def test_multitask_on_a_csv_table(tmp_path: Path) -> None:
    data = make_table_dataset(tmp_path / "food")
    done = oomguard("train", "--no-supervise", f"data={data}", "lr=0.01", *TINY, "epochs=15",
                    "name=food", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "food"
    assert_run_directory(run, epochs=15)
    last = rows(run)[-1]
    assert float(last["accuracy"]) > 0.6
    # MAE is in grams: predicting the mean for everything would be off by ~100 g.
    assert 0 < float(last["mae_mass"]) < 60


def test_an_existing_run_is_refused_then_resumed(tmp_path: Path) -> None:
    args = ["train", "--no-supervise", "dev_samples=64", *TINY, "epochs=1"]
    assert oomguard(*args, cwd=tmp_path).returncode == 0
    run = tmp_path / "runs" / "exp"
    before = (run / "results.csv").read_text()

    again = oomguard(*args, cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"oomguard: error: run directory {Path('runs') / 'exp'} already exists; add --resume to continue "
        f"it, or choose another name= for a new run"
    )
    assert (run / "results.csv").read_text() == before

    resumed = oomguard("train", "--no-supervise", "--resume", "epochs=3", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert [int(row["epoch"]) for row in rows(run)] == [1, 2, 3]
    starts = [event for event in events(run) if event["event"] == "start"]
    assert [start["resume"] for start in starts] == [False, True]
    assert starts[1]["epoch"] == 1  # continued after the first epoch, not from scratch


def test_resume_without_a_run_says_what_to_do(tmp_path: Path) -> None:
    done = oomguard("train", "--resume", "name=never", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"oomguard: error: nothing to resume: {Path('runs') / 'never'} does not exist; "
        f"drop --resume to start a new run"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["epochs=zero"], "oomguard: error: bad value for 'epochs': expected a positive integer, got 'zero'"),
        (["batchsize=8"], "oomguard: error: unknown config key 'batchsize' (did you mean 'batch'?); "
                          "see the keys in the README"),
        (["nope.yaml"], "oomguard: error: config file 'nope.yaml' not found; give an existing .yaml file"),
        (["data=missing/dir"], None),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_run_directory(
    tmp_path: Path, args: list[str], message: str | None
) -> None:
    done = oomguard("train", *args, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith("oomguard: error: ")
    if message is not None:
        assert lines[0] == message
        assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_missing_is_refused_before_any_work(tmp_path: Path) -> None:
    done = oomguard("train", "tensorboard=true", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "oomguard: error: tensorboard=true needs tensorboard: pip install tensorboard")
    assert not (tmp_path / "runs").exists()
