"""Data-parallel throughput: the same run on 1 process and on N ranks (gloo on CPU, NCCL on CUDA).

Prints one JSON object:
  runs[]            one per world size: nproc, samples_per_s (steady epochs: the first, with the plan,
                    left out), epoch_s (their median), peak_mb (rank 0's peak, results.csv), seconds
                    (the whole command, start-up included), final accuracy
  speedup           samples_per_s of the largest nproc over nproc=1
  agreement_us      the cost of the Guard's per-step agreements (all-gather + 2 all-reduces of a few
                    numbers, gloo), median over 200 steps on 2 ranks, in microseconds

On a 2-core CPU machine two ranks share the cores that one process already
uses (intra-op threads), so no speedup is expected there: what this shows is
the overhead of the group. On a machine with a GPU per rank, the speedup is
the figure to read.

Usage: python benchmarks/distributed.py [--nproc 2] [--epochs 3] [--samples 1024]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp


def train(nproc: int, epochs: int, samples: int, folder: Path) -> dict[str, Any]:
    name = f"n{nproc}"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "oomguard", "train", "--no-supervise", f"nproc={nproc}",
                    f"epochs={epochs}", f"dev_samples={samples}", f"name={name}", "workers=0"],
                   cwd=folder, check=True, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    with open(folder / "runs" / name / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    steady = [float(row["seconds"]) for row in rows[1:]] or [float(rows[0]["seconds"])]
    epoch_s = statistics.median(steady)
    return {"nproc": nproc, "samples_per_s": round(samples / epoch_s, 1), "epoch_s": round(epoch_s, 2),
            "peak_mb": max(float(row["peak_memory_mb"]) for row in rows), "seconds": round(seconds, 1),
            "accuracy": float(rows[-1]["accuracy"])}


def _agreements(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from oomguard.distributed.group import Group

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    group = Group(rank=rank, world=world, local_rank=rank, local_world=world, device=torch.device("cpu"))
    times = []
    for _ in range(200):
        started = time.perf_counter()
        group.gather_ints([8, 4])
        group.any(False)
        group.any(False)
        times.append(time.perf_counter() - started)
    if rank == 0:
        Path(out).write_text(str(statistics.median(times)))
    dist.destroy_process_group()


def agreement_cost() -> float:
    from oomguard.distributed.launch import free_port

    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "t")
        mp.spawn(_agreements, args=(2, free_port(), out), nprocs=2, join=True)
        return float(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs = [train(n, args.epochs, args.samples, folder) for n in sorted({1, args.nproc})]
    print(json.dumps({"runs": runs, "speedup": round(runs[-1]["samples_per_s"] / runs[0]["samples_per_s"], 2),
                      "agreement_us": round(agreement_cost() * 1e6, 1)}))


if __name__ == "__main__":
    main()
