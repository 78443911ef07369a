"""Training under a memory budget four ways: the seeds' safe recipe, the old cautious plan, oomguard
auto (the predicted epoch peak and caution from evidence), the oracle.

The budget is set where the requested batch does not fit in one piece. Each
variant trains the same ResNet-like model on the same samples:

  seed_recipe  microbatch 2 with gradient accumulation, gc.collect() + empty_cache every 5 steps
  cautious     the plan before issue 18, from the same probe: 1.5x the measured slope of two
               microbatches, 90% of the room, no whole-step confirmation (probe included in the time)
  auto         oomguard.Guard(microbatch="auto"): probe included in the time
  oracle       the fastest fixed microbatch whose peak stayed within the budget in a sweep, no oomguard

On the CPU the budget is host memory (peak RSS). With ``--device cuda --budget-mb N`` it is the GPU's:
every variant runs under ``set_per_process_memory_fraction(N / card)``, peaks are the allocator's
reserved bytes (what that fraction caps), a variant that runs out of memory does not fit, and
``--batch 0`` picks a batch whose whole needs 1.5x the budget (measured at microbatch 8).

On the CPU a run's peak is the charge watermark of a memory cgroup it runs alone in
(``memory.max_usage_in_bytes``, cgroup v1, where this process may make one): the Guard resets the
process's own RSS high-water mark before each step it measures, and ``ru_maxrss`` goes with it, so
that is a lower bound only for the Guard's variants (``peak_source`` says which was used). Every run
is a fresh process (so its ru_maxrss is its own; this parent never imports torch, whose high-water
mark a child would inherit), and the variants run in alternation, ``--repeats`` times, so
machine noise hits all alike. Prints one JSON line:
  {"seed_recipe": {...}, "cautious": {...}, "auto": {...}, "oracle": {...}, "budget_mb": ..., ...}
each variant with samples_per_s and samples_per_cpu_s (medians: wall time, and CPU time, which machine
noise touches less), peak_rss_mb (max), peak_counted_mb (ru_maxrss less the
pages shared with other processes that the budget counts by share), microbatch, within_budget; the
Guard's variants with their plan, predicted_peak_mb and guard_peak_mb; the ratios auto/cautious,
auto/oracle and auto/seed_recipe (``_cpu``: by CPU time). On a shared machine, ``--threads 1`` keeps
the CPU time honest (idle intra-op threads spin).

The probe costs about one step of compute, so runs need a few dozen steps before auto can be
within 5% of the oracle: the default is 48 steps of 64 (about 6 minutes in all on 2 idle cores).

Usage: python benchmarks/budget.py [--imgsz 64] [--batch 64] [--samples 3072] [--repeats 3]
                                   [--room-mb N] [--model builtin:resnet] [--threads N]
Smoke: python benchmarks/budget.py --batch 32 --samples 640 --repeats 2 --sweep 2,4,8,16
GPU:   python benchmarks/budget.py --device cuda --budget-mb 16000 --imgsz 128 --batch 0 --steps 12
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MB = 1_000_000
VARIANTS = ("seed_recipe", "cautious", "auto", "oracle")
#: The old plan's caution: the slope it assumed (times the probed one), the share of the room it used.
OLD_GROWTH, OLD_HEADROOM = 1.5, 0.9
#: The name of the cgroup a run is measured in (the child knows its own by it).
GROUP_PREFIX = "oomguard-budget-"


# -- child side: one variant in this process --------------------------------------------------------
def child(args: argparse.Namespace) -> dict[str, Any]:
    import gc
    import resource
    import time

    import torch

    from oomguard import host
    from oomguard.devices import release_host_memory

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cuda = args.device == "cuda"
    device = torch.device(args.device)
    model = make_model(args.model, args.imgsz).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    pool = (1 if cuda else 4) * args.batch
    images = torch.randn(pool, 3, args.imgsz, args.imgsz, generator=generator)
    labels = torch.randint(0, 10, (pool,), generator=generator)
    steps = max(1, args.samples // args.batch)
    batches = [(images[i % pool:i % pool + args.batch], labels[i % pool:i % pool + args.batch])
               for i in range(0, steps * args.batch, args.batch)]

    def loss_fn(net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(net(batch[0])["logits"], batch[1])

    def bare_step(batch: tuple[torch.Tensor, torch.Tensor], microbatch: int) -> None:
        total = len(batch[0])
        for start in range(0, total, microbatch):
            end = start + microbatch
            part = (batch[0][start:end].to(device), batch[1][start:end].to(device))
            (loss_fn(model, part) * (len(part[0]) / total)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def empty_cache() -> None:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        release_host_memory()  # the CPU's empty_cache: hand freed heap pages back

    empty_cache()
    if cuda:
        if args.budget:
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, args.budget / total))
        torch.cuda.reset_peak_memory_stats()
        baseline, shared = torch.cuda.memory_reserved(), 0
    else:
        baseline = host.process_rss()
        reading = host.tree_memory(precise=True)
        # ru_maxrss counts every page this process maps; the budget counts shared ones (torch's libraries)
        # by its share only: the difference at the start is taken off the peak that is compared.
        shared = reading.root.rss - reading.own
    watermark = Watermark.start() if not cuda else None
    info: dict[str, Any] = {"variant": args.child, "baseline_mb": baseline / MB, "shared_mb": shared / MB,
                            "oom": False}
    began, cpu_began = time.perf_counter(), cpu_seconds()
    planned = began  # the bare variants have no plan; the Guard's set it once planned
    try:
        if args.child in ("auto", "cautious"):
            from oomguard import Guard

            guard = Guard(model, optimizer, memory_limit=args.budget or "auto", microbatch="auto",
                          ceiling=args.batch)
            plan = guard.plan(batches[0], loss_fn)
            if args.child == "cautious":
                guard.sizer.train.size = cautious_choice(plan)
            if cuda:
                torch.cuda.synchronize()
            planned = time.perf_counter()
            for batch in batches:
                guard.step(batch, loss_fn)
            kinds = [event["event"] for event in guard.events.history]
            info.update(microbatch=guard.microbatch, plan=guard.sizer.train.size if args.child == "cautious"
                        else plan.microbatch, probe_s=round(plan.seconds, 3),
                        predicted_peak_mb=round(plan.prediction.peak / MB, 1),
                        guard_peak_mb=round(guard.peak_memory / MB, 1),
                        events={kind: kinds.count(kind) for kind in sorted(set(kinds))})
        else:
            microbatch = 2 if args.child == "seed_recipe" else args.microbatch
            info["microbatch"] = microbatch
            if args.child == "seed_recipe" and args.seed_samples:  # slow at microbatch 2: its rate is enough
                batches = batches[:max(1, args.seed_samples // args.batch)]
            for index, batch in enumerate(batches, 1):
                bare_step(batch, microbatch)
                if args.child == "seed_recipe" and index % 5 == 0:
                    empty_cache()
        if cuda:
            torch.cuda.synchronize()
    except torch.OutOfMemoryError:  # a fixed microbatch that does not fit the card's budget
        info["oom"] = True
    ended = time.perf_counter()
    elapsed, cpu = ended - began, cpu_seconds() - cpu_began
    steps = len(batches)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if cuda:
        peak = torch.cuda.max_memory_reserved()
    elif watermark is not None:  # the pages the run brought in at its highest, over what it held at the start
        peak = baseline + watermark.grown()
    else:
        peak = maxrss
    info["ru_maxrss_mb"] = maxrss / MB
    info["peak_source"] = "allocator" if cuda else "cgroup" if watermark is not None else "ru_maxrss"
    info.update(samples=steps * args.batch, seconds=elapsed, samples_per_s=steps * args.batch / elapsed,
                # Without the probe: what the plan runs at once it runs (the probe's cost is the difference).
                samples_per_s_after_plan=steps * args.batch / max(ended - planned, 1e-9),
                cpu_seconds=cpu, samples_per_cpu_s=steps * args.batch / cpu, peak_mb=peak / MB)
    return info


class Watermark:
    """The charge watermark of the memory cgroup this run was started in alone (cgroup v1)."""

    def __init__(self, group: Path) -> None:
        self.group = group
        (group / "memory.max_usage_in_bytes").write_text("0")  # from the usage now on
        self.charged = int((group / "memory.usage_in_bytes").read_text())

    @classmethod
    def start(cls) -> Watermark | None:
        from oomguard import host

        group, _ = host.own_cgroup_dirs()
        if group is None or not group.name.startswith(GROUP_PREFIX) or not os.access(group, os.W_OK):
            return None
        return cls(group)

    def grown(self) -> int:
        return int((self.group / "memory.max_usage_in_bytes").read_text()) - self.charged


def cpu_seconds() -> float:
    """CPU time of this process so far (user + system, all its threads): on a machine shared with
    other work, the cost of the variant where wall time also holds the waits for a core."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cautious_choice(plan: Any) -> int:
    """The microbatch the plan before issue 18 took from the same probe: the line through the two-microbatch
    rows with 1.5x its slope, under 90% of the room, below any row that failed or went over that target."""
    from oomguard.engine.plan import model_from_rows

    rows = [row for row in plan.table if not row.whole]
    model = model_from_rows(rows)
    start = plan.start
    target = start + OLD_HEADROOM * (plan.budget - plan.snapshot_bytes - start)
    room = target - start - model.fixed
    best = plan.ceiling if model.per_sample <= 0 else int(room // (OLD_GROWTH * model.per_sample))
    for row in rows:
        if not row.ok or start + row.extra > target:
            best = min(best, row.size - 1)
    return max(1, min(best, plan.ceiling))


def make_model(spec: str, imgsz: int) -> Any:
    from oomguard.models import build_model

    return build_model(spec, num_classes=10, num_targets=0, imgsz=imgsz)


# -- parent side: budget, sweep, alternation ----------------------------------------------------------
def run(args: argparse.Namespace, variant: str, **extra: Any) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", variant, "--imgsz", str(args.imgsz), "--batch",
               str(args.batch), "--model", args.model, "--threads", str(args.threads),
               "--device", args.device]
    for key, value in {"samples": args.samples, **extra}.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    with own_group() as group:
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              preexec_fn=None if group is None else lambda: join(group))
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def own_group() -> Iterator[Path | None]:
    """A fresh memory cgroup (v1, no limit) for one run, where this process may make one; None elsewhere."""
    from oomguard import host

    parent, _ = host.own_cgroup_dirs()
    group = parent / f"{GROUP_PREFIX}{os.getpid()}" if parent is not None else None
    try:
        if group is not None:
            group.mkdir()
    except OSError:
        group = None
    try:
        yield group
    finally:
        if group is not None:
            with contextlib.suppress(OSError):
                group.rmdir()


def join(group: Path) -> None:
    (group / "cgroup.procs").write_text(str(os.getpid()))


def counted(result: dict[str, Any]) -> float:
    """The peak the budget counts, in MB."""
    return float(result["peak_mb"] - result["shared_mb"])


def fits(result: dict[str, Any], budget: int) -> bool:
    return not result["oom"] and counted(result) * MB <= budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64,
                        help="the batch (0: one whose whole needs 1.5x the budget)")
    parser.add_argument("--samples", type=int, default=3072, help="samples each variant trains on")
    parser.add_argument("--steps", type=int, default=0,
                        help="steps each variant trains (instead of --samples)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed-samples", type=int, default=0,
                        help="samples the seed recipe trains on (0: --samples; slow, its rate suffices)")
    parser.add_argument("--room-mb", type=float, default=None,
                        help="budget above the baseline (default: 40%% of what the whole batch needs)")
    parser.add_argument("--budget-mb", type=float, default=None,
                        help="the budget itself (GPU memory on cuda)")
    parser.add_argument("--sweep", default="2,4,6,8,12,16,24,32,48,64", help="oracle candidates")
    parser.add_argument("--model", default="builtin:resnet")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--microbatch", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    # The budget: the baseline plus a share of what the whole batch needs, measured at microbatch 8.
    probe_size = min(8, args.batch) if args.batch else 8
    calibration_batch = args.batch or 2 * probe_size
    calibration = run(argparse.Namespace(**{**vars(args), "batch": calibration_batch}), "oracle",
                      microbatch=probe_size, samples=2 * calibration_batch)
    per_sample = (calibration["peak_mb"] - calibration["baseline_mb"]) / probe_size
    if args.budget_mb is not None:
        budget = int(args.budget_mb * MB)
    else:
        room = args.room_mb if args.room_mb is not None else 0.4 * per_sample * max(args.batch, 1)
        budget = int((calibration["baseline_mb"] + room) * MB)
    if not args.batch:  # a batch the budget must split: its whole needs 1.5x the budget
        need = 1.5 * budget / MB - calibration["baseline_mb"]
        args.batch = 1 << max(3, math.ceil(math.log2(max(1.0, need / max(per_sample, 1e-6)))))
    if args.steps:
        args.samples = args.steps * args.batch

    # Sweep runs long enough for the heap to level off (it grows over the first steps).
    sweep_samples = min(args.samples, 6 * args.batch)
    sweep = {}
    candidates = [int(s) for s in args.sweep.split(",")] + ([args.batch // d for d in (8, 4, 2)]
                                                            if args.device == "cuda" else [])
    for size in sorted({s for s in candidates if 0 < s <= args.batch}):
        result = run(args, "oracle", microbatch=size, samples=sweep_samples, budget=budget)
        sweep[size] = result
        if not fits(result, budget):
            break  # larger sizes need more memory still
    fitting = {size: r for size, r in sweep.items() if fits(r, budget)}
    oracle_size = max(fitting, key=lambda size: fitting[size]["samples_per_s"]) if fitting else 2

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):
        order = VARIANTS[repeat % len(VARIANTS):] + VARIANTS[:repeat % len(VARIANTS)]
        for name in order:
            runs[name].append(run(args, name, microbatch=oracle_size, budget=budget))

    peak_key = "peak_reserved_mb" if args.device == "cuda" else "peak_rss_mb"
    report: dict[str, Any] = {}
    for name, results in runs.items():
        guarded = ("plan", "probe_s", "predicted_peak_mb", "guard_peak_mb", "events")
        report[name] = {
            "samples_per_s": round(statistics.median(r["samples_per_s"] for r in results), 3),
            "samples_per_cpu_s": round(statistics.median(r["samples_per_cpu_s"] for r in results), 3),
            "samples_per_s_after_plan": round(statistics.median(r["samples_per_s_after_plan"]
                                                                for r in results), 3),
            peak_key: round(max(r["peak_mb"] for r in results), 1),
            "peak_source": results[-1]["peak_source"],
            "ru_maxrss_mb": round(max(r["ru_maxrss_mb"] for r in results), 1),
            "peak_counted_mb": round(max(counted(r) for r in results), 1),
            "within_budget": all(fits(r, budget) for r in results),
            "microbatch": results[-1]["microbatch"],
            "runs": [round(r["samples_per_s"], 3) for r in results],
            **({k: results[-1].get(k) for k in guarded} if name in ("auto", "cautious") else {}),
        }
    for key, suffix in (("samples_per_s", ""), ("samples_per_cpu_s", "_cpu"),
                        ("samples_per_s_after_plan", "_after_plan")):
        speed = {name: report[name][key] for name in VARIANTS}
        for other in ("cautious", "oracle", "seed_recipe"):
            report[f"auto_vs_{other}{suffix}"] = round(speed["auto"] / speed[other], 3)
    report.update(
        budget_mb=round(budget / MB, 1), baseline_mb=round(calibration["baseline_mb"], 1),
        whole_batch_mb=round(calibration["baseline_mb"] + per_sample * args.batch, 1),
        sweep={size: {"samples_per_s": round(r["samples_per_s"], 1), "peak_mb": round(r["peak_mb"], 1),
                      "oom": r["oom"]} for size, r in sweep.items()},
        config={"model": args.model, "imgsz": args.imgsz, "batch": args.batch, "samples": args.samples,
                "repeats": args.repeats, "threads": args.threads or "default", "device": args.device},
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
