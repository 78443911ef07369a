"""What a checkpoint costs the training loop: the in-memory snapshot vs the background write.

Prints one JSON object:
  snapshot_s                 seconds submit() keeps the loop (copy to CPU + thread start), median
  write_s                    seconds the background thread spends writing (torch.save + fsync + links), median
  write_cpu_s                CPU seconds of that thread (hashing, copies to the page cache): the most it
                             can take from training when every core is busy, median
  bytes                      checkpoint file size
  snapshot_bytes             memory the snapshot holds while it is written (for the budget)
  loop_cost_s                snapshot_s + write_cpu_s: an upper bound of the training time one checkpoint
                             costs (wall-time differences of training with and without are noise-bound
                             on a shared machine)
  share_at_one_per_minute    loop_cost_s / 60

Usage: python benchmarks/checkpoint_cost.py [--params 10000000] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from oomguard.checkpoint import AsyncCheckpointer, CheckpointStore, SaveResult, capture_state, snapshot_bytes
from oomguard.devices import get_device


def build(params: int, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """Three square linear layers with about ``params`` parameters, AdamW state filled."""
    width = int((params / 3) ** 0.5)
    model = torch.nn.Sequential(*(torch.nn.Linear(width, width) for _ in range(3))).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step(model, optimizer, width, device)
    return model, optimizer


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, width: int, device: torch.device) -> None:
    loss = model(torch.randn(16, width, device=device)).square().mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class TimedStore(CheckpointStore):
    """Records the CPU time of the writer thread for each save."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cpu_seconds: list[float] = []

    def save(self, state: Any, step: int, best: bool = False) -> SaveResult:
        start = time.thread_time()
        result = super().save(state, step, best)
        self.cpu_seconds.append(time.thread_time() - start)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    device = get_device(args.device)
    model, optimizer = build(args.params, device.torch_device)
    width = model[0].in_features
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        store = TimedStore(Path(tmp) / "weights", keep=2)
        writer = AsyncCheckpointer(store)
        snapshots: list[float] = []
        writes: list[float] = []
        for number in range(args.repeats + 1):  # the first save warms up allocator and files
            state = capture_state(model=model, optimizer=optimizer, epoch=0, step=number, device=device)
            writer.submit(state, step=number)
            snapshots.append(writer.submit_seconds)
            result = writer.wait()
            assert result is not None and result.ok, result
            writes.append(result.seconds)
            step(model, optimizer, width, device.torch_device)
        snapshot_s = statistics.median(snapshots[1:])
        write_cpu_s = statistics.median(store.cpu_seconds[1:])
        loop_cost = snapshot_s + write_cpu_s
        print(json.dumps({
            "device": str(device.torch_device),
            "parameters": sum(p.numel() for p in model.parameters()),
            "snapshot_s": round(snapshot_s, 4),
            "write_s": round(statistics.median(writes[1:]), 4),
            "write_cpu_s": round(write_cpu_s, 4),
            "bytes": result.bytes,
            "snapshot_bytes": snapshot_bytes(state),
            "loop_cost_s": round(loop_cost, 4),
            "share_at_one_per_minute": round(loop_cost / 60, 5),
        }))


if __name__ == "__main__":
    main()
