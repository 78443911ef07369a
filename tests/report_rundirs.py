"""Run directories built by hand for the report tests: memory.csv, events.jsonl, results.csv."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

GB = 10**9
T0 = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
COLUMNS = ("time", "process_rss", "children_rss", "system_available", "device_allocated",
           "device_reserved", "step", "rank")


def write_memory(path: Path, rows: list[tuple[float, ...]], header: tuple[str, ...] = COLUMNS) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def write_events(path: Path, events: list[dict[str, Any]]) -> None:
    with open(path, "w") as file:
        for event in events:
            file.write(json.dumps(event) + "\n")


def write_results(path: Path, epochs: int) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", "train_loss", "val_loss", "accuracy", "top5", "mae_calories", "lr",
                         "microbatch", "eval_microbatch", "peak_memory_mb", "seconds"])
        for epoch in range(1, epochs + 1):
            decay = [math.exp(-epoch / n) for n in (4, 5, 3, 2, 6)]
            writer.writerow([epoch, round(2.3 * decay[0] + 0.2, 4), round(2.4 * decay[1] + 0.3, 4),
                             round(1 - 0.9 * decay[2], 4), round(1 - 0.5 * decay[3], 4),
                             round(120 * decay[4] + 20, 2), 0.001, 16, 32, 11000, 600])


def rss_at(seconds: float) -> int:
    """A process that grows over each attempt, with a sharp validation spike every 10 minutes."""
    base = 6.0 + 0.8 * math.sin(seconds / 900)
    spike = 4.1 if int(seconds) % 600 in range(590, 593) else 0.0
    return int((base + spike) * GB)


def train_run(root: Path, *, seconds: int = 7200, finished: bool = True, leak: bool = False) -> Path:
    """A 2-hour ``oomguard train`` run on a 16 GB machine with a 12 GB budget and two memory kills."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(0, seconds, 2):
        rss = rss_at(s)
        rows.append((T0 + s, rss, 300_000_000, 16 * GB - rss - 2 * GB - 300_000_000, 0, 0, s // 2, 0))
    write_memory(root / "memory.csv", rows)
    budget = 12 * GB
    events: list[dict[str, Any]] = [
        {"time": T0 + 1, "event": "start", "pid": 10, "attempt": 1, "resume": False, "device": "cpu",
         "budget": budget, "epoch": 0, "config": {"epochs": 12}},
        {"time": T0 + 5, "event": "plan", "microbatch": 32, "eval_microbatch": 64, "ceiling": 48,
         "budget": budget, "fit": {"a": 5 * GB, "b": 150_000_000}, "table": [{"size": 8, "peak": 6 * GB}]},
        {"time": T0 + 1800, "event": "oom", "phase": "train", "microbatch": 32, "peak": 12_400_000_000,
         "budget": budget, "error": "over budget"},
        {"time": T0 + 1801, "event": "shrink", "phase": "train", "from": 32, "to": 16, "reason": "oom",
         "predicted": 9 * GB},
        {"time": T0 + 3000, "event": "kill", "cause": "memory_kill", "signal": 9, "exit_code": -9,
         "attempt": 1},
        {"time": T0 + 3004, "event": "restart", "cause": "memory_kill", "attempt": 2,
         "overrides": {"microbatch": 8}},
        {"time": T0 + 3010, "event": "start", "pid": 11, "attempt": 2, "resume": True, "device": "cpu",
         "budget": budget, "epoch": 4},
        {"time": T0 + 3015, "event": "plan", "microbatch": 8, "eval_microbatch": 32, "ceiling": 16,
         "budget": budget},
        {"time": T0 + 3700, "event": "grow", "phase": "train", "from": 8, "to": 12, "reason": "headroom",
         "predicted": 8 * GB},
        {"time": T0 + 4800, "event": "kill", "cause": "memory_kill", "signal": 9, "exit_code": -9,
         "attempt": 2},
        {"time": T0 + 4804, "event": "restart", "cause": "memory_kill", "attempt": 3,
         "overrides": {"microbatch": 8, "val_batch": 16}},
        {"time": T0 + 4810, "event": "start", "pid": 12, "attempt": 3, "resume": True, "device": "cpu",
         "budget": budget, "epoch": 7},
        {"time": T0 + 6000, "event": "pressure", "available": 1_100_000_000},
    ]
    for minute in range(10, seconds // 60, 10):
        events.append({"time": T0 + minute * 60 + 5, "event": "checkpoint", "path": "weights/last.pt",
                       "epoch": minute // 10, "step": minute * 30, "seconds": 0.4, "bytes": 90_000_000})
    if leak:
        events.append({"time": T0 + 6500, "event": "leak", "bytes_per_hour": 1_200_000_000})
    if finished:
        events.append({"time": T0 + seconds - 1, "event": "finish", "epochs": 12, "seconds": 2400.0,
                       "best": 0.91})
    events.sort(key=lambda e: e["time"])
    write_events(root / "events.jsonl", events)
    write_results(root / "results.csv", 12 if finished else 9)
    (root / "config.yaml").write_text("epochs: 12\nbatch: 64\nmemory_limit: 12GB\nmemory_cap: 14GB\n")
    return root


def supervised_command_run(root: Path) -> Path:
    """What ``oomguard run -- CMD`` leaves: memory.csv and events.jsonl, no results.csv or config.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [(T0 + s, int((1 + 0.01 * s) * GB), 0, 8 * GB, 0, 0, 0, 0) for s in range(0, 120)]
    write_memory(root / "memory.csv", rows)
    write_events(root / "events.jsonl", [
        {"time": T0, "event": "start", "pid": 99, "attempt": 1, "budget": 3 * GB},
        {"time": T0 + 60, "event": "kill", "cause": "memory_kill", "signal": 9, "attempt": 1},
        {"time": T0 + 61, "event": "restart", "cause": "memory_kill", "attempt": 2, "overrides": "--resume"},
        {"time": T0 + 62, "event": "start", "pid": 100, "attempt": 2, "budget": 3 * GB},
    ])
    return root
