"""Supervised ``oomguard train`` with real kills: the run comes back by itself and finishes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from cli_helpers import oomguard
from test_resume_exact import RUN, checkpoints_written, final_model


def events(run: Path, kind: str) -> list[dict[str, object]]:
    path = run / "events.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [event for event in map(json.loads, lines) if event["event"] == kind]


def child_pid(run: Path, attempt: int, supervisor: subprocess.Popen[str], limit: float = 60) -> int | None:
    """The pid of the training child of ``attempt``, from its own ``start`` event."""
    deadline = time.monotonic() + limit
    while True:
        starts = [e for e in events(run, "start") if e.get("attempt") == attempt]
        if starts:
            return int(starts[-1]["pid"])  # type: ignore[arg-type]
        if supervisor.poll() is not None:
            return None
        assert time.monotonic() < deadline, f"attempt {attempt} never started"
        time.sleep(0.02)


def test_random_sigkills_of_the_child_are_survived_bit_identically(tmp_path: Path) -> None:
    reference = oomguard("train", "--no-supervise", *RUN, "workers=0", "name=ref", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr

    run = tmp_path / "runs" / "supervised"
    env = {**os.environ, "OOMGUARD_CACHE": str(tmp_path / "cache")}
    supervisor = subprocess.Popen([sys.executable, "-m", "oomguard", "train", *RUN, "workers=0",
                                   "name=supervised"], cwd=tmp_path, env=env, text=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rng = random.Random(7)
    kills = 0
    for attempt in range(1, 4):
        pid = child_pid(run, attempt, supervisor)
        if pid is None:
            break
        target = checkpoints_written(run) + 1
        while checkpoints_written(run) < target and supervisor.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))  # a random moment, not a synchronisation
        try:
            os.kill(pid, signal.SIGKILL)
            kills += 1
        except ProcessLookupError:
            break
    _, stderr = supervisor.communicate(timeout=300)
    assert supervisor.returncode == 0, stderr
    assert kills >= 2

    expected, got = final_model(tmp_path / "runs" / "ref"), final_model(run)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    restarts = events(run, "restart")
    assert len(restarts) == len(events(run, "kill")) == kills
    assert {event["cause"] for event in events(run, "kill")} == {"unexplained_kill"}
    assert all(event.get("overrides") in ({}, None) for event in restarts)  # same plan
    assert len(events(run, "finish")) == 1


def test_a_memory_cap_kill_restarts_with_a_smaller_microbatch(tmp_path: Path) -> None:
    # memory_limit=off reproduces the seeds' failure: the whole batch of 64 needs ~1.1 GB here,
    # microbatch 16 ~0.6 GB; the cap kills the child like the OS would, the ladder shrinks it.
    done = oomguard("train", "model=builtin:resnet", "imgsz=64", "batch=64", "dev_samples=128", "epochs=1",
                    "memory_limit=off", "memory_cap=720MB", "workers=0", "name=capped", cwd=tmp_path,
                    timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "runs" / "capped"
    kills = events(run, "kill")
    assert kills and all(kill["cause"] == "memory_kill" for kill in kills)
    sizes = [restart["plan"]["microbatch"] for restart in events(run, "restart")]  # type: ignore[index]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < 64
    assert len(events(run, "finish")) == 1
    assert (run / "weights" / "last.pt").is_file()
