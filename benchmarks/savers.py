"""Memory savers on the CPU: a deep conv net whose microbatch 1 does not fit the budget without them.

A residual conv net (24 blocks at half the input's resolution) at 256 px: one sample's activations take
more than the budget's room. Every measurement runs in a process of its own, so each starts from a clean
heap, and the budget is the same room above what that process holds before it trains:

  probe SAVERS    oomguard's probe with those savers on and no budget: the peak above the start at
                  microbatch 1, 2, 4, and samples per second
  oomguard        Guard(memory_limit=budget) with savers=auto, amp=auto on STEPS batches: the savers and
                  microbatch it chose, samples per second, the steps' peak, any out-of-memory
  fixed SAVERS N  the same steps by hand with those savers and microbatch N under the same budget

The hand-picked candidates are every combination of savers with the largest microbatch its probe says
fits; the best is the fastest that ran without running out of memory.

Prints one JSON object:
  room                    bytes of budget above the start
  checkpoint_import       bytes torch's first checkpoint adds for good (it imports torch._dynamo)
  peaks                   {savers: {microbatch: bytes above the start}} (checkpointing's after the import)
  rates                   {savers: samples per second at microbatch 1}
  oomguard                {savers, microbatch, samples_per_s, peak, ooms, no_fit}
  hand_picked             [{savers, microbatch, samples_per_s, ooms}] and best_hand_picked
  oomguard_vs_best        oomguard's samples per second / the best hand-picked

Usage: python benchmarks/savers.py [--imgsz 256] [--room 160] [--steps 4] [--batch 8]
Smoke: python benchmarks/savers.py --imgsz 128 --room 60 --steps 2 --batch 4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import torch
from torch import nn

MB = 1000**2
COMBOS = ((), ("activation_checkpointing",), ("amp",), ("activation_checkpointing", "amp"))


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class DeepConv(nn.Module):
    def __init__(self, width: int = 16, depth: int = 24, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(width))
        self.blocks = nn.Sequential(*[Block(width) for _ in range(depth)])
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def _setup(imgsz: int, batch: int) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    torch.manual_seed(0)
    model = DeepConv()
    generator = torch.Generator().manual_seed(1)
    data = (torch.randn(batch, 3, imgsz, imgsz, generator=generator), torch.randint(0, 10, (batch,)))
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), data


def loss_fn(model: nn.Module, batch: Any) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def child(kind: str, imgsz: int, room: int, steps: int, batch: int, savers: tuple[str, ...],
          microbatch: int) -> dict[str, Any]:
    """One measurement in this process (see the module docstring)."""
    from oomguard import Guard, host
    from oomguard.devices import release_host_memory
    from oomguard.errors import MemoryBudgetError

    torch.set_num_threads(1)
    model, optimizer, data = _setup(imgsz, batch)
    release_host_memory()
    start = host.tree_memory(precise=True).total
    if kind == "probe":
        guard = Guard(model, optimizer, memory_limit="off", savers=list(savers) or "off", amp="auto")
        before = host.tree_memory(precise=True).total
        plan = guard._probe(data, loss_fn, None)  # the probe alone, with these savers forced on
        return {"savers": list(savers), "import": before - start,
                "peaks": {row.size: row.peak - plan.start for row in plan.table if row.ok},
                "rate": 2 / plan.table[0].seconds}
    auto = kind == "oomguard"
    guard = Guard(model, optimizer, memory_limit=start + room, amp="auto",
                  savers="auto" if auto else (list(savers) or "off"),
                  microbatch="auto" if auto else microbatch)
    try:
        guard.step(data, loss_fn)  # plans (oomguard) and warms up
        release_host_memory()
        host.reset_peak_rss()
        began = time.perf_counter()
        for _ in range(steps):
            guard.step(data, loss_fn)
        seconds = time.perf_counter() - began
        no_fit = False
    except MemoryBudgetError:
        seconds, no_fit = float("nan"), True
    kinds = [event["event"] for event in guard.events.history]
    return {"savers": list(guard.savers.in_force), "microbatch": guard.microbatch,
            "samples_per_s": round(steps * batch / seconds, 3) if not no_fit else None,
            "peak": (host.own_peak_rss() or 0) + host.tree_memory().total - host.process_rss() - start,
            "ooms": kinds.count("oom"), "no_fit": no_fit}


def _run(args: argparse.Namespace, kind: str, savers: tuple[str, ...] = (), microbatch: int = 0
         ) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, "--imgsz", str(args.imgsz), "--room",
               str(args.room), "--steps", str(args.steps), "--batch", str(args.batch), "--microbatch",
               str(microbatch), "--savers", ",".join(savers)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--room", type=int, default=160, help="MB of budget above the process's start")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--child", default=None)
    parser.add_argument("--savers", default="")
    parser.add_argument("--microbatch", type=int, default=0)
    args = parser.parse_args()
    if args.child:
        savers = tuple(name for name in args.savers.split(",") if name)
        print(json.dumps(child(args.child, args.imgsz, args.room * MB, args.steps, args.batch, savers,
                               args.microbatch)))
        return
    room = args.room * MB
    probes = {combo: _run(args, "probe", combo) for combo in COMBOS}
    hand = []
    for combo, probe in probes.items():
        fits = [int(size) for size, extra in probe["peaks"].items() if extra + probe["import"] <= room]
        if fits:
            hand.append(_run(args, "fixed", combo, max(fits)))
    ours = _run(args, "oomguard")
    clean = [h for h in hand if h["samples_per_s"] and not h["ooms"]]
    best = max(clean, key=lambda h: h["samples_per_s"], default=None)
    print(json.dumps({
        "model": f"DeepConv (24 residual blocks, 16 channels) at {args.imgsz} px, batch {args.batch}",
        "room": room,
        "checkpoint_import": probes[("activation_checkpointing",)]["import"],
        "peaks": {"+".join(c) or "none": p["peaks"] for c, p in probes.items()},
        "rates": {"+".join(c) or "none": round(p["rate"], 3) for c, p in probes.items()},
        "oomguard": ours,
        "hand_picked": hand,
        "best_hand_picked": best,
        "oomguard_vs_best": round(ours["samples_per_s"] / best["samples_per_s"], 3)
        if best and ours["samples_per_s"] else None,
    }))


if __name__ == "__main__":
    main()
