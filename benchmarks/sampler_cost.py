"""What the memory sampler costs at 20 readings a second, with 0, 2 and 4 forked DataLoader workers.

For each worker count a process holds a dataset in memory, starts that many
workers (forked: they share the dataset and torch's libraries copy-on-write),
and runs the real sampler (``MemorySampler``, writing ``memory.csv``) for
``--seconds``. The sampler thread's own CPU time (its thread clock) over the
wall time is its share of one core: the target is under 1%. Besides it, one
reading of each kind is timed on its own: the cheap reading (``statm`` of each
process, calibrated) and the precise one (``smaps_rollup`` of each process),
and the old reading (RSS of the process and of its children found by psutil).

Prints one JSON object:
  interval_s, seconds, dataset_mb
  runs: [{"workers", "processes", "readings", "cpu_share", "ms_per_reading", "precise_every_s",
          "cheap_ms", "precise_ms", "old_rss_sum_ms", "counted_mb", "rss_sum_mb"}]
    cpu_share: the sampler thread's CPU seconds over wall seconds (share of one core)
    ms_per_reading: its CPU milliseconds per reading, all included (CSV row, precise readings)
    precise_every_s: seconds between its periodic precise readings (their cost sets it)
    cheap_ms / precise_ms / old_rss_sum_ms: CPU milliseconds of one reading of each kind, alone
  target_share: 0.01, within_target: every run's cpu_share under it

Usage: python benchmarks/sampler_cost.py [--seconds 20] [--dataset-mb 100] [--workers 0 2 4]
Smoke: python benchmarks/sampler_cost.py --seconds 2 --workers 0 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch
from torch.utils.data import DataLoader, TensorDataset

from oomguard import host
from oomguard.devices import get_device
from oomguard.host import tree
from oomguard.memory.sampler import MemorySampler

TARGET_SHARE = 0.01


def _ms_per_call(call: Callable[[], object], repeats: int) -> float:
    """CPU milliseconds of one call (this thread's clock), the median of ``repeats``."""
    times = []
    for _ in range(repeats):
        began = time.thread_time()
        call()
        times.append(time.thread_time() - began)
    times.sort()
    return times[len(times) // 2] * 1000


def _old_rss_sum() -> int:
    """What the sampler read before: this process's RSS and its children's, found by scanning /proc."""
    me = psutil.Process()
    return int(me.memory_info().rss) + sum(int(c.memory_info().rss) for c in me.children(recursive=True))


def one_run(workers: int, dataset: TensorDataset, seconds: float, interval: float) -> dict[str, Any]:
    loader = DataLoader(dataset, batch_size=64, num_workers=workers, persistent_workers=workers > 0,
                        multiprocessing_context="fork" if workers else None)
    batches = iter(loader)
    next(batches)  # the workers are up
    host.tree_memory(fresh=True)
    with tempfile.TemporaryDirectory() as folder:
        sampler = MemorySampler(get_device("cpu"), Path(folder) / "memory.csv", interval=interval).start()
        thread = sampler._thread
        assert thread is not None and thread.ident is not None
        clock = time.pthread_getcpuclockid(thread.ident)
        cpu0, wall0 = time.clock_gettime(clock), time.monotonic()
        threading.Event().wait(seconds)  # the main thread idles: the sampler's cost is its own clock
        cpu, wall = time.clock_gettime(clock) - cpu0, time.monotonic() - wall0
        sampler.stop()
        readings = len((Path(folder) / "memory.csv").read_text().splitlines()) - 2  # header, start()
    cheap_every, tree.PRECISE_EVERY = tree.PRECISE_EVERY, 1e9
    try:
        cheap = _ms_per_call(host.tree_memory, 200)
    finally:
        tree.PRECISE_EVERY = cheap_every
    precise = _ms_per_call(lambda: host.tree_memory(precise=True), 10)
    old = _ms_per_call(_old_rss_sum, 50)
    after = host.tree_memory(precise=True)
    del batches, loader
    return {
        "workers": workers,
        "processes": len(after.processes),
        "readings": readings,
        "cpu_share": round(cpu / wall, 5),
        "ms_per_reading": round(cpu / max(1, readings) * 1000, 4),
        "precise_every_s": round(tree.counter().precise_every, 2),
        "cheap_ms": round(cheap, 4),
        "precise_ms": round(precise, 3),
        "old_rss_sum_ms": round(old, 3),
        "counted_mb": round(after.total / 1e6, 1),
        "rss_sum_mb": round((after.root.rss + after.children_rss) / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--dataset-mb", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # more workers than cores
    n = args.dataset_mb * 1_000_000 // (3 * 32 * 32 * 4)
    dataset = TensorDataset(torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,)))
    runs = [one_run(workers, dataset, args.seconds, args.interval) for workers in args.workers]
    print(json.dumps({
        "interval_s": args.interval, "seconds": args.seconds, "dataset_mb": args.dataset_mb, "runs": runs,
        "target_share": TARGET_SHARE, "within_target": all(r["cpu_share"] < TARGET_SHARE for r in runs),
    }))


if __name__ == "__main__":
    main()
