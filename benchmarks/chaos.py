"""Chaos: a supervised training SIGKILLed at random moments, against the same run left alone.

Both runs are supervised ``oomguard train`` (the default mode) with the same
configuration, in a temporary directory; the chaotic one has its training
child SIGKILLed ``--kills`` times: at moments 1-4 s apart at random (a moment
that finds the supervisor between attempts kills nothing), and every third one
right as the child starts (in its start-up, before it loaded its checkpoint).

Prints one JSON object:
  kills                   SIGKILLs that landed
  startup_kills           of those, the kills the supervisor reported as start-up deaths
  restarts                restart events
  waits_s                 the wait before each restart (unexplained kills: 1 s, 2 s, 4 s... 60 s)
  wait_total_s            their sum
  lost_s                  each kill's lost work (time since the checkpoint it resumed from)
  lost_max_s, lost_total_s
  startup_s               median seconds from a restart (after its wait) to the child's own start event
                          (its checkpoint loaded): the window in which a kill is a start-up death
  uninterrupted_s         wall time of the run left alone
  chaos_s                 wall time of the run under kills, until it finished
  overhead_s              chaos_s - uninterrupted_s
  identical               the final weights are bit-identical
  exit_code               the chaotic supervisor's exit status (0: finished)

Usage: python benchmarks/chaos.py [--kills 8] [--seed 16] [--restart-wait 1s] [--max-restarts 20]
       [key=value ...]   (training config; default: a 2-epoch run of the built-in data, 768 samples)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import torch

DEFAULT = ["deterministic=true", "seed=3", "dev_samples=768", "epochs=2", "batch=16", "imgsz=32",
           "warmup_epochs=0.5", "workers=0"]


def events(run: Path, kind: str) -> list[dict[str, Any]]:
    path = run / "events.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e.get("event") == kind]


def current_child(supervisor: subprocess.Popen[bytes]) -> psutil.Process | None:
    """The supervisor's training child (not its keeper) now; None between attempts."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(supervisor.pid).children():
            if not any(part.endswith("keeper.py") for part in child.cmdline()):
                return child
    return None


def train(folder: Path, name: str, config: list[str], kills: int, rng: random.Random
          ) -> tuple[float, int, int]:
    """Run one supervised training under ``kills`` SIGKILLs; (seconds, kills that landed, exit status).

    Kills come at moments 1-4 s apart at random (a moment between two attempts kills nothing), and
    every third right as a child starts.
    """
    env = {**os.environ, "OOMGUARD_CACHE": str(folder / "cache")}
    began = time.monotonic()
    supervisor = subprocess.Popen([sys.executable, "-m", "oomguard", "train", *config, f"name={name}"],
                                  cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    landed = 0
    while landed < kills and supervisor.poll() is None:
        if landed % 3 == 1:
            child = current_child(supervisor)
            while child is None and supervisor.poll() is None:
                time.sleep(0.01)
                child = current_child(supervisor)
            time.sleep(rng.uniform(0.0, 0.3))
        else:
            time.sleep(rng.uniform(1.0, 4.0))
            child = current_child(supervisor)
        if child is None:
            continue
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
            child.wait(60)
            landed += 1
    code = supervisor.wait()
    return time.monotonic() - began, landed, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--restart-wait", default="1s")
    parser.add_argument("--max-restarts", type=int, default=20)
    parser.add_argument("config", nargs="*")
    args = parser.parse_args()
    config = [*DEFAULT, *args.config, f"max_restarts={args.max_restarts}",
              f"restart_wait={args.restart_wait}"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        calm_s, _, _ = train(folder, "calm", config, 0, random.Random(args.seed))
        chaos_s, kills, code = train(folder, "chaos", config, args.kills, random.Random(args.seed))
        calm, chaos = folder / "runs" / "calm", folder / "runs" / "chaos"
        expected = torch.load(calm / "weights" / "last.pt", weights_only=True)["model"]
        got = torch.load(chaos / "weights" / "last.pt", weights_only=True)["model"]
        identical = expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
        killed, restarts = events(chaos, "kill"), events(chaos, "restart")
        starts = {e["attempt"]: e["time"] for e in events(chaos, "start")}
    waits = [float(r.get("wait") or 0.0) for r in restarts]
    lost = [float(k.get("lost_seconds") or 0.0) for k in killed]
    startups = sorted(starts[r["attempt"]] - r["time"] - float(r.get("wait") or 0.0)
                      for r in restarts if r["attempt"] in starts)
    print(json.dumps({
        "kills": kills,
        "startup_kills": sum(1 for k in killed if k.get("startup")),
        "restarts": len(restarts),
        "waits_s": waits,
        "wait_total_s": round(sum(waits), 3),
        "lost_s": lost,
        "lost_max_s": max(lost, default=0.0),
        "lost_total_s": round(sum(lost), 3),
        "startup_s": round(statistics.median(startups), 1) if startups else None,
        "uninterrupted_s": round(calm_s, 1),
        "chaos_s": round(chaos_s, 1),
        "overhead_s": round(chaos_s - calm_s, 1),
        "identical": identical,
        "exit_code": code,
    }))


if __name__ == "__main__":
    main()
