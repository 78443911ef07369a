"""A run SIGKILLed at random moments and resumed each time ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cli_helpers import oomguard

RUN = ["deterministic=true", "seed=3", "dev_samples=384", "epochs=4", "batch=16", "imgsz=32",
       "checkpoint_every=0.2s", "warmup_epochs=0.5"]


STEPS_PER_EPOCH = 24  # 384 samples in batches of 16


def checkpoints_written(run: Path, mid_epoch: bool = False) -> int:
    """Checkpoints in the event log so far (only those inside an epoch with ``mid_epoch``)."""
    path = run / "events.jsonl"
    if not path.exists():
        return 0
    written = [json.loads(line) for line in path.read_text().splitlines()
               if '"event":"checkpoint"' in line and '"error"' not in line and '"corrupt"' not in line]
    return sum(1 for event in written if not mid_epoch or event["step"] % STEPS_PER_EPOCH)


def start(tmp_path: Path, name: str, workers: int, resume: bool) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "oomguard", "train", "--no-supervise", *RUN, f"workers={workers}",
            f"name={name}"]
    env = {**os.environ, "OOMGUARD_CACHE": str(tmp_path / "cache")}
    return subprocess.Popen(args + (["--resume"] if resume else []), cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def wait_for_checkpoints(run: Path, count: int, process: subprocess.Popen[str], limit: float = 120,
                         mid_epoch: bool = False) -> bool:
    """Poll the event log until ``count`` checkpoints are written; False if the run ended first."""
    deadline = time.monotonic() + limit
    while checkpoints_written(run, mid_epoch) < count:
        if process.poll() is not None:
            return False
        assert time.monotonic() < deadline, "no checkpoint written in time"
        time.sleep(0.02)
    return True


def final_model(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "weights" / "last.pt", weights_only=True)["model"]


@pytest.mark.parametrize(("workers", "kills"), [(0, 3), (2, 2)])
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path: Path, workers: int,
                                                                kills: int) -> None:
    reference = oomguard("train", "--no-supervise", *RUN, f"workers={workers}", "name=ref", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr

    rng = random.Random(workers * 100 + kills)
    run = tmp_path / "runs" / "killed"
    killed = 0
    for attempt in range(kills + 1):
        process = start(tmp_path, "killed", workers, resume=attempt > 0)
        # The first kill follows a checkpoint inside an epoch at once, so that one resume surely lands
        # mid-epoch; the others come at a random moment after fresh progress (mid-step, mid-validation,
        # mid-checkpoint-write).
        first = attempt == 0
        progressed = attempt < kills and wait_for_checkpoints(
            run, checkpoints_written(run, mid_epoch=first) + 1, process, mid_epoch=first)
        if progressed:
            time.sleep(rng.uniform(0.0, 0.01 if first else 0.4))
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                killed += 1
        _, stderr = process.communicate(timeout=300)
        if process.returncode == 0:
            break
        assert process.returncode == -signal.SIGKILL, stderr
    else:
        final = start(tmp_path, "killed", workers, resume=True)
        _, stderr = final.communicate(timeout=300)
        assert final.returncode == 0, stderr
    assert killed >= 2, "the run finished before it could be killed; make it longer"

    expected, got = final_model(tmp_path / "runs" / "ref"), final_model(run)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    starts = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()
              if '"event":"start"' in line]
    assert len(starts) == killed + 1
    assert any(start["resume"] and start["step"] % STEPS_PER_EPOCH for start in starts), \
        "no resume landed mid-epoch"
