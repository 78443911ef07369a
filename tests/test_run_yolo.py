"""A user's own ``yolo detect train`` command under ``oomguard run``: killed, it finishes in its own folder.

The command is the user's, unchanged (``project=p name=y``, a relative
project: ultralytics 8.4 puts it in ``<runs_dir>/detect/p/y``), trained by the
real ultralytics on a tiny dataset; the kills are real SIGKILLs, the memory
kills the kernel's own in the cgroup of ``--memory-limit``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import zipfile
from functools import partial
from pathlib import Path

import pytest
import yaml

from cgroup_helpers import MB, Squeeze
from detect_helpers import make_detection_dataset
from oomguard.integrations.ultralytics.folders import saved_epoch
from oomguard.supervise.cap import CgroupCap
from oomguard.supervise.presets import preset_for
from run_helpers import attempt_pid, events, finish, start_run, user_env, wait_for

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                                reason="ultralytics is not installed")

YOLO = str(Path(sys.executable).with_name("yolo"))
LIMIT = 1500 * MB  # a YOLOv8n training at imgsz=64 stays well under it (about 0.8 GB)


def _user(tmp_path: Path) -> dict[str, str]:
    """A user's environment whose ultralytics settings put runs in ``tmp_path/runs`` (never the real one)."""
    settings = tmp_path / "config" / "Ultralytics" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"runs_dir": str(tmp_path / "runs")}))
    return user_env(YOLO_CONFIG_DIR=str(tmp_path / "config"), YOLO_OFFLINE="1")


def _command(tmp_path: Path) -> list[str]:
    data = make_detection_dataset(tmp_path / "boxes", train=64, val=8)
    return [YOLO, "detect", "train", f"data={data}", "model=yolov8n.yaml", "imgsz=64", "epochs=3", "batch=16",
            "project=p", "name=y", "workers=0"]


def _whole(path: Path) -> bool:
    """``path`` is a complete ``torch.save`` file (ultralytics writes ``last.pt`` in place)."""
    return path.is_file() and zipfile.is_zipfile(path)


def _saved_anew(last: Path, before: int | None, sup: Path, attempt: int) -> int | None:
    """The pid of ``attempt`` once a whole ``last`` other than the one saved at ``before`` is there."""
    if not _whole(last) or last.stat().st_mtime_ns == before:
        return None
    return attempt_pid(sup, attempt)


def _epochs(results: Path) -> list[int]:
    with open(results, newline="") as file:
        return [int(float(row["epoch"])) for row in csv.DictReader(file, skipinitialspace=True)]


def _one_folder(project: Path) -> Path:
    """The run's folder: ``project/y``, and nothing beside it (no ``y-2``)."""
    assert sorted(p.name for p in project.iterdir()) == ["y"]
    return project / "y"


def test_killed_before_its_first_checkpoint_then_in_epoch_2_it_finishes_in_its_folder(tmp_path: Path) -> None:
    command = _command(tmp_path)
    run, sup = tmp_path / "runs" / "detect" / "p" / "y", tmp_path / "sup"
    last = run / "weights" / "last.pt"
    env = _user(tmp_path)
    preset = preset_for(command, None, cwd=tmp_path, env=env)  # as oomguard run makes it, before the start
    process = start_run(["--run-dir", "sup", "--", *command], tmp_path, env)

    # Attempt 1 is killed once ultralytics made its folder, before any epoch ended.
    pid = wait_for(lambda: (run / "args.yaml").is_file() and attempt_pid(sup, 1), process, "a training")
    os.kill(pid, signal.SIGKILL)
    assert not last.exists(), "an epoch ended before the kill"

    # Attempt 2 starts over in the same folder, and is killed once its epoch 1 is saved.
    pid = wait_for(lambda: _whole(last) and attempt_pid(sup, 2), process, "a checkpoint of attempt 2")
    os.kill(pid, signal.SIGKILL)
    assert saved_epoch(last) in (0, 1)  # ultralytics' own epoch field, read without torch

    output = finish(process, tmp_path).replace("\n", "")  # the console wraps long lines
    assert _one_folder(run.parent) == run
    assert _epochs(run / "results.csv") == [1, 2, 3]
    restarts = events(sup, "restart")
    assert [r.get("resume_from") for r in restarts] == [None, str(last)]
    assert restarts[0]["argv"] == [*command, "exist_ok=True"]
    assert restarts[1]["argv"] == [*[a for a in command if not a.startswith("model=")], f"model={last}",
                                   "resume=True"]
    restarting = r"restarting( in [0-9.]+s)?: yolo preset "  # an unexplained kill waits a little first
    assert re.search(restarting + re.escape(f"starts over in {run} (no epoch had finished)"), output)
    assert re.search(restarting + re.escape(f"resumes from {last}"), output)
    assert "is not a resumable training checkpoint" not in output

    # Killed in its closing validation instead, the run would only be validated again, in the same folder.
    assert saved_epoch(last) == -1  # the end of the training marked it final
    validation = preset.restart(command, memory=False).argv
    assert validation[:4] == [YOLO, "detect", "val", f"model={run / 'weights' / 'best.pt'}"]
    done = subprocess.run(validation, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _one_folder(run.parent) == run and sorted(p.name for p in run.parent.parent.iterdir()) == ["p"]
    assert _epochs(run / "results.csv") == [1, 2, 3]


@pytest.mark.skipif(CgroupCap.available() is None, reason="the cgroup v1 memory controller is not writable")
def test_memory_kills_in_a_memory_cgroup_lower_the_batch_and_keep_the_folder(tmp_path: Path) -> None:
    parent = CgroupCap.available()
    assert parent is not None
    command = _command(tmp_path)
    run, sup = tmp_path / "runs" / "detect" / "p" / "y", tmp_path / "sup"
    last = run / "weights" / "last.pt"
    process = start_run(["--memory-limit", f"{LIMIT}", "--run-dir", "sup", "--", *command], tmp_path,
                        _user(tmp_path))
    squeezes, saved = [], None
    for attempt in (1, 2):  # memory-killed by the kernel in epoch 2, then (resumed) in epoch 3
        wait_for(partial(attempt_pid, sup, attempt), process, f"attempt {attempt}")
        squeezes.append(Squeeze(parent / f"oomguard-{process.pid}-{attempt}"))
        pid = wait_for(partial(_saved_anew, last, saved, sup, attempt), process,
                       f"a new checkpoint of attempt {attempt}")
        os.kill(pid, signal.SIGSTOP)  # frozen in this epoch however long the squeeze takes on a busy machine
        squeezes[-1].now(victim=pid)
        wait_for(partial(attempt_pid, sup, attempt + 1), process, f"attempt {attempt + 1}")
        saved = last.stat().st_mtime_ns  # the checkpoint the next attempt starts from

    output = finish(process, tmp_path)
    for squeeze in squeezes:  # the supervisor emptied each attempt's cgroup
        assert squeeze.process.wait(timeout=30) == -signal.SIGKILL
    kills = events(sup, "kill")
    assert [(k["cause"], k["killer"]) for k in kills] == [("memory_kill", "cgroup")] * 2
    restarts = events(sup, "restart")
    assert [r.get("resume_from") for r in restarts] == [str(last)] * 2
    assert [[a for a in r["argv"] if a.startswith("batch=")] for r in restarts] == [["batch=12"], ["batch=9"]]
    assert yaml.safe_load((run / "args.yaml").read_text())["batch"] == 9  # ultralytics trained with it
    assert _one_folder(run.parent) == run
    assert _epochs(run / "results.csv") == [1, 2, 3]
    assert "is not a resumable training checkpoint" not in output
