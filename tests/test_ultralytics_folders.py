"""Where ultralytics saves a training: oomguard's reading of a command line, checked against ultralytics."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oomguard.integrations.ultralytics.folders import (
    command_arguments,
    model_task,
    read_arguments,
    runs_dir,
    saved_epoch,
    settings_file,
    train_folder,
)

needs_ultralytics = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                                       reason="ultralytics is not installed")

#: Ultralytics' own answer, for each case: its get_save_dir on the settings oomguard read from the command.
ULTRALYTICS_SAYS = """
import json, sys
from ultralytics.cfg import get_cfg, get_save_dir
for settings in json.loads(sys.argv[1]):
    print("save_dir:", get_save_dir(get_cfg(overrides=settings)))
"""

CASES = [
    "detect train project=p name=y",
    "train model=yolov8n-seg.yaml project=p name=y",  # the task from the model's name
    "detect train project=p name=taken",  # taken -> taken-3 (taken and taken-2 exist)
    "detect train project=p name=taken exist_ok",
    "detect train name=a/b",  # no project: RUNS/detect/a/b
    "pose train",  # no project, no name: RUNS/pose/train
    "detect train project={tmp}/abs name=y",  # an absolute project is used as it is
    "detect train project=none name=none",
]


def _settings_env(tmp_path: Path, runs: str) -> dict[str, str]:
    config = tmp_path / "config"
    (config / "Ultralytics").mkdir(parents=True, exist_ok=True)
    (config / "Ultralytics" / "settings.json").write_text(json.dumps({"runs_dir": runs}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS")}
    return {**env, "YOLO_CONFIG_DIR": str(config), "YOLO_OFFLINE": "1"}


def _ultralytics_save_dirs(settings: list[dict[str, object]], cwd: Path, env: dict[str, str]) -> list[Path]:
    for entry in settings:  # what ultralytics' trainer adds before it asks for the folder
        entry.setdefault("mode", "train")
        entry["task"] = entry.get("task") or model_task(str(entry.get("model") or ""))
        entry.pop("model", None)
    done = subprocess.run([sys.executable, "-c", ULTRALYTICS_SAYS, json.dumps(settings)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [Path(line.removeprefix("save_dir: ")) for line in done.stdout.splitlines()
            if line.startswith("save_dir: ")]  # ultralytics logs to stdout too


@needs_ultralytics
def test_the_folder_is_the_one_ultralytics_chooses(tmp_path: Path) -> None:
    env = _settings_env(tmp_path, "relative/runs")  # a relative runs_dir: under the command's folder
    for taken in ("taken", "taken-2"):
        (tmp_path / "relative" / "runs" / "detect" / "p" / taken).mkdir(parents=True)
    settings = [read_arguments(case.format(tmp=tmp_path).split()) for case in CASES]
    ours = [train_folder(s, tmp_path, env).save_dir for s in settings]
    theirs = _ultralytics_save_dirs([dict(s) for s in settings], tmp_path, env)
    assert ours == theirs
    runs = tmp_path / "relative" / "runs"
    assert ours[:3] == [runs / "detect/p/y", runs / "segment/p/y", runs / "detect/p/taken-3"]
    assert ours[3:] == [runs / "detect/p/taken", runs / "detect/a/b", runs / "pose/train", tmp_path / "abs/y",
                        runs / "detect/train"]


@needs_ultralytics
def test_while_ultralytics_thinks_tests_run_it_saves_beside_its_package(tmp_path: Path) -> None:
    env = {**_settings_env(tmp_path, str(tmp_path / "runs")), "PYTEST_CURRENT_TEST": "x.py::test (call)"}
    settings = read_arguments(["detect", "train", "project=p", "name=y"])
    ours = train_folder(settings, tmp_path, env).save_dir
    assert ours == _ultralytics_save_dirs([dict(settings)], tmp_path, env)[0]
    assert ours.parts[-6:] == ("tests", "tmp", "runs", "detect", "p", "y")


def test_the_runs_dir_comes_from_the_settings_file(tmp_path: Path) -> None:
    env = {"YOLO_CONFIG_DIR": str(tmp_path / "config")}
    assert settings_file(env) == tmp_path / "config" / "Ultralytics" / "settings.json"
    assert settings_file({"HOME": "/home/u"}, "linux") == Path("/home/u/.config/Ultralytics/settings.json")
    assert settings_file({"HOME": "/home/u", "XDG_CONFIG_HOME": "/x"}, "linux") == Path(
        "/x/Ultralytics/settings.json")
    assert settings_file({"HOME": "/Users/u"}, "darwin") == Path(
        "/Users/u/Library/Application Support/Ultralytics/settings.json")
    settings_file(env).parent.mkdir(parents=True)
    settings_file(env).write_text(json.dumps({"runs_dir": "/data/runs"}))
    assert runs_dir(tmp_path, env) == Path("/data/runs")
    settings_file(env).write_text("{not json")  # ultralytics resets it to its defaults: runs/ somewhere
    assert runs_dir(tmp_path, env).name == "runs"


def test_a_command_line_is_read_as_ultralytics_reads_it(tmp_path: Path) -> None:
    assert command_arguments(["/v/bin/yolo", "train"]) == ["train"]
    assert command_arguments(["python3", "-m", "ultralytics", "detect", "train"]) == ["detect", "train"]
    assert command_arguments(["python", "train.py"]) is None
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("project: from_cfg\nname: n\nepochs: 3\n")
    args = ["segment", "train", "--name", "=", "y,", "exist_ok", f"cfg={cfg}", "project=None", "batch=8"]
    assert read_arguments(args) == {"task": "segment", "mode": "train", "name": "y", "exist_ok": True,
                                    "project": None, "epochs": "3", "batch": "8"}


@pytest.mark.parametrize(("model", "task"), [
    ("yolov8n.yaml", "detect"), ("yolov8n-seg.pt", "segment"), ("yolo11s-cls.yaml", "classify"),
    ("w/yolov8m-pose.pt", "pose"), ("yolov8n-obb.yaml", "obb"), ("runs/segment/x/best.pt", "segment"),
    (None, "detect")])
def test_the_task_is_guessed_from_the_models_name(model: str | None, task: str) -> None:
    assert model_task(model) == task


def test_the_epoch_of_a_checkpoint_is_read_without_unpickling_it(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "last.pt"
    for epoch in (0, 7, 300, 70_000, -1):  # -1: ultralytics' mark of a training that ended
        torch.save({"date": "2026", "epoch": epoch, "optimizer": {"state": {"epoch": 99}}}, path)
        assert saved_epoch(path) == epoch
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a kill in the middle of the write
    assert saved_epoch(path) is None
    torch.save({"model": torch.zeros(3)}, path)
    assert saved_epoch(path) is None
    assert saved_epoch(tmp_path / "missing.pt") is None
