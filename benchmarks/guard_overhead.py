"""What Guard.step costs over a bare training loop when memory is plentiful (no split): must be < 2%.

Two copies of the same model train on the same batches, one step of each in
turn (so machine noise hits both alike): a bare loop (forward, backward,
optimizer step, zero_grad) and Guard.step with the whole batch as the
microbatch and the budget check on. A tiny model measures the Guard's fixed
cost per step in microseconds, where a realistic model would hide it.

Prints one JSON object:
  bare_ms / guard_ms   median step time of the realistic model
  overhead             guard_ms / bare_ms - 1 (target: < 0.02; noise-bound on a busy machine)
  overhead_from_fixed_cost   tiny extra_us / bare step: the Guard's own cost, free of that noise
  tiny                 {"bare_us", "guard_us", "extra_us"}: the same for a 2-layer MLP

Usage: python benchmarks/guard_overhead.py [--imgsz 32] [--batch 32] [--steps 30] [--model builtin:resnet]
Smoke: python benchmarks/guard_overhead.py --steps 4 --tiny-steps 50
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from oomguard import Guard
from oomguard.models import build_model


def interleaved(model: nn.Module, batch: Any, loss_fn: Callable[[nn.Module, Any], torch.Tensor], steps: int,
                warmup: int = 3) -> tuple[float, float]:
    """Median seconds per step of the bare loop and of Guard.step, run one after the other."""
    bare_model, guarded_model = model, copy.deepcopy(model)
    bare_opt = torch.optim.SGD(bare_model.parameters(), lr=0.01, momentum=0.9)
    guard = Guard(guarded_model, torch.optim.SGD(guarded_model.parameters(), lr=0.01, momentum=0.9),
                  memory_limit="auto", microbatch=len(batch[0]))

    def bare_step() -> None:
        loss = loss_fn(bare_model, batch)
        loss.backward()
        bare_opt.step()
        bare_opt.zero_grad(set_to_none=True)

    bare: list[float] = []
    guarded: list[float] = []
    pair = [(bare_step, bare), (lambda: guard.step(batch, loss_fn), guarded)]
    for index in range(warmup + steps):
        for run, times in pair if index % 2 else pair[::-1]:  # who goes first alternates
            began = time.perf_counter()
            run()
            if index >= warmup:
                times.append(time.perf_counter() - began)
    assert guard.microbatch == len(batch[0]) and not [e for e in guard.events.history if e["event"] == "oom"]
    return statistics.median(bare), statistics.median(guarded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imgsz", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--tiny-steps", type=int, default=500)
    parser.add_argument("--model", default="builtin:resnet")
    args = parser.parse_args()
    torch.manual_seed(0)

    def classify(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(net(batch[0])["logits"], batch[1])

    model = build_model(args.model, num_classes=10, num_targets=0, imgsz=args.imgsz)
    batch = (torch.randn(args.batch, 3, args.imgsz, args.imgsz), torch.randint(0, 10, (args.batch,)))
    bare, guarded = interleaved(model, batch, classify, args.steps)

    def regress(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return ((net(batch[0]) - batch[1]) ** 2).mean()

    tiny = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
    tiny_batch = (torch.randn(8, 16), torch.randn(8, 1))
    tiny_bare, tiny_guarded = interleaved(tiny, tiny_batch, regress, args.tiny_steps)
    print(json.dumps({
        "model": args.model, "imgsz": args.imgsz, "batch": args.batch, "steps": args.steps,
        "bare_ms": round(bare * 1e3, 2), "guard_ms": round(guarded * 1e3, 2),
        "overhead": round(guarded / bare - 1, 4),
        "overhead_from_fixed_cost": round((tiny_guarded - tiny_bare) / bare, 5),
        "tiny": {"bare_us": round(tiny_bare * 1e6, 1), "guard_us": round(tiny_guarded * 1e6, 1),
                 "extra_us": round((tiny_guarded - tiny_bare) * 1e6, 1)},
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
