"""The CUDA paths on a real GPU, in one run of under 7 minutes; prints one JSON object.

Each check runs in a fresh process (a hard limit or a crash in one never leaks into the next), with
its own time limit, until the whole run's time is spent (``--seconds``, default 400):

  oversized_batch    a hard limit and a batch ~2.5x over it: OOM, shrink, redo; the update equals the
                     whole batch's against a float64 reference; then microbatch=auto plans it, no OOM
  optimizer_oom      fp16 autocast + GradScaler + clip_grad_norm; the first AdamW step runs out of memory
                     half-way through its foreach update: undone, redone tensor by tensor, no second
                     unscale_, the same weights as a run without the limit
  eval_oom           evaluation alone does not fit: the eval microbatch shrinks, training's does not,
                     outputs equal a reference evaluation
  shared_card        another process holds half the card: memory_limit=auto plans for the rest; when it
                     takes a quarter more, one OOM lowers the working limit and training goes on
  supervisor_oom     `oomguard run` around a script that dies of a real CUDA OOM outside any Guard:
                     attributed "oom", restarted, finishes
  kill_resume        `oomguard train device=cuda amp=true deterministic=true` SIGKILLed mid-epoch after
                     a checkpoint and resumed: final weights bit-identical to an uninterrupted run
  sampler_cost       one memory sample (/proc + allocator stats) in microseconds, and Guard.step with
                     the sampler thread against without it
  budget_three_ways  benchmarks/budget.py under a 16 GB budget on the card: seed recipe, auto, oracle

Usage: python benchmarks/gpu_check.py [--out FILE] [--only NAME,...] [--seconds 400]
       python benchmarks/gpu_check.py --dry-run      # lists the checks as JSON and exits 0, anywhere
       python benchmarks/gpu_check.py --device cpu --only oversized_batch   # a plumbing smoke test
Exit status 0 when every check that ran passed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GB = 1000**3
MB = 1000**2
LR = 1.0  # large enough that the update stands well above float32's rounding of the weights

# name -> (what it shows, its own time limit in seconds)
CHECKS: dict[str, tuple[str, int]] = {
    "oversized_batch": ("hard limit, a batch 2.5x over it: OOM, shrink, the whole batch's update (float64 "
                        "reference); auto plans without OOM", 60),
    "optimizer_oom": ("fp16 + GradScaler + clipping, OOM half-way through the first AdamW step: undone, "
                      "redone tensor by tensor, weights equal a run without the limit", 60),
    "eval_oom": ("an evaluation-only OOM shrinks the eval microbatch only; outputs equal a reference", 45),
    "shared_card": ("another process holds half the card: auto plans for the rest; it takes a quarter "
                    "more: one OOM lowers the working limit", 75),
    "supervisor_oom": ("oomguard run: a real CUDA OOM outside the Guard is attributed oom and restarted", 45),
    "kill_resume": ("oomguard train device=cuda amp=true deterministic=true SIGKILLed mid-epoch, resumed "
                    "bit-identically", 150),
    "sampler_cost": ("one memory sample in microseconds; Guard.step with and without the sampler", 45),
    "budget_three_ways": ("benchmarks/budget.py under a 16 GB budget on the card: seed recipe, auto, "
                          "oracle", 240),
}


def child_env() -> dict[str, str]:
    """This checkout's oomguard first on the path, a private dataset cache, no network for ultralytics."""
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "YOLO_OFFLINE": "1"}


# -- helpers of the check processes ------------------------------------------------------------------
class Card:
    """The device of a check: CUDA's numbers, or the host's on ``--device cpu`` (plumbing only)."""

    def __init__(self, kind: str) -> None:
        import torch

        # Full float32 everywhere: TF32 convolutions and matmuls would hide a wrong update in ~1e-3 noise.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        self.torch = torch
        self.cuda = kind == "cuda"
        self.device = torch.device(kind)

    def total(self) -> int:
        if self.cuda:
            return int(self.torch.cuda.get_device_properties(0).total_memory)
        import psutil

        return int(psutil.virtual_memory().total)

    def reserved(self) -> int:
        return int(self.torch.cuda.memory_reserved()) if self.cuda else 0

    def peak_reserved(self) -> int:
        return int(self.torch.cuda.max_memory_reserved()) if self.cuda else 0

    def reset(self) -> None:
        """No limit, no cache, fresh peaks: what a reference computation runs under."""
        if self.cuda:
            self.torch.cuda.set_per_process_memory_fraction(1.0)
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()


def conv_net() -> Any:
    """No BatchNorm: a microbatched update is then the whole batch's, up to rounding."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1),
                         nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def images(count: int, size: int, seed: int = 0) -> tuple[Any, Any]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(count, 3, size, size, generator=generator),
            torch.randint(0, 10, (count,), generator=generator))


def cross_entropy(net: Any, batch: tuple[Any, Any]) -> Any:
    import torch

    return torch.nn.functional.cross_entropy(net(batch[0]), batch[1])


def kinds(guard: Any, kind: str) -> list[dict[str, Any]]:
    return [event for event in guard.events.history if event["event"] == kind]


def relative_error(got: Any, want: Any) -> float:
    got, want = got.double(), want.double()
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


def whole_batch_delta(model: Any, batch: tuple[Any, Any], lr: float, dtype: Any, chunk: int,
                      device: Any) -> list[Any]:
    """What one SGD step on the whole batch's mean loss changes, computed in ``dtype`` in chunks (the
    weights after minus before, in ``dtype``: float32 rounding included, as in the Guard's step)."""
    import torch

    net = copy.deepcopy(model).to(device=device, dtype=dtype)
    before = [p.detach().clone() for p in net.parameters()]
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    total = len(batch[0])
    for start in range(0, total, chunk):
        x = batch[0][start:start + chunk].to(device=device, dtype=dtype)
        y = batch[1][start:start + chunk].to(device)
        (cross_entropy(net, (x, y)) * (len(x) / total)).backward()
    optimizer.step()
    return [(p.detach() - b).cpu() for p, b in zip(net.parameters(), before, strict=True)]


# -- the checks ----------------------------------------------------------------------------------------
def check_oversized_batch(card: Card, scale: float) -> dict[str, Any]:
    import torch

    from oomguard import Guard

    limit: int | str = int(4 * GB) if card.cuda else "auto"
    count, size = max(8, int(512 * scale)), 128 if scale >= 1 else 16
    batch = images(count, size)
    torch.manual_seed(0)
    model = conv_net().to(card.device)
    initial = copy.deepcopy(model)
    start = [p.detach().cpu().clone() for p in model.parameters()]
    reference64 = whole_batch_delta(model, batch, LR, torch.float64, 32, card.device)
    card.reset()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    guard = Guard(model, optimizer, memory_limit=limit, microbatch=count, device=card.device.type)
    guard.step(batch, cross_entropy)
    card.sync()
    delta = [p.detach().cpu() - s for p, s in zip(model.parameters(), start, strict=True)]
    error = max(relative_error(d, r.float()) for d, r in zip(delta, reference64, strict=True))
    given = {"oom": len(kinds(guard, "oom")),
             "shrinks": [(e["from"], e["to"]) for e in kinds(guard, "shrink")],
             "microbatch": guard.microbatch, "peak_reserved_gb": card.peak_reserved() / GB,
             "max_relative_error_vs_float64": error}
    guard.close()
    del guard, optimizer
    card.reset()
    whole32 = whole_batch_delta(initial, batch, LR, torch.float32, count, card.device)
    float32_error = max(relative_error(a, b.float()) for a, b in zip(whole32, reference64, strict=True))
    # microbatch=auto: the probe plans it, and the steps that follow never run out of memory.
    card.reset()
    torch.manual_seed(0)
    model = conv_net().to(card.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = Guard(model, optimizer, memory_limit=limit, device=card.device.type)
    for _ in range(3):
        guard.step(batch, cross_entropy)
    card.sync()
    auto = {"plan": guard.last_plan.microbatch if guard.last_plan else None, "microbatch": guard.microbatch,
            "oom": len(kinds(guard, "oom")), "peak_reserved_gb": card.peak_reserved() / GB}
    # The microbatched update is the whole batch's: as close to float64 as float32's own whole-batch step.
    close = error <= max(1e-4, 3 * float32_error)
    within = not isinstance(limit, int) or card.peak_reserved() <= limit
    ok = given["oom"] >= 1 and close and auto["oom"] == 0 and within
    return {"ok": ok, "limit": limit, "batch": count, "given_whole_batch": given,
            "float32_whole_batch_error_vs_float64": float32_error, "auto": auto}


def _linear_stack(width: int, depth: int) -> Any:
    from torch import nn

    return nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])


def check_optimizer_oom(card: Card, scale: float) -> dict[str, Any]:
    import torch

    from oomguard import Guard

    width, depth = (2048, 20) if scale >= 1 else (64, 4)
    x = torch.randn(64, width, generator=torch.Generator().manual_seed(1))
    y = torch.randn(64, width, generator=torch.Generator().manual_seed(2))

    def mse(net: Any, batch: tuple[Any, Any]) -> Any:
        return torch.nn.functional.mse_loss(net(batch[0]).float(), batch[1])

    def train(limit: int | str) -> tuple[Any, Any]:
        card.reset()
        torch.manual_seed(0)
        model = _linear_stack(width, depth).to(card.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
        scaler = torch.amp.GradScaler(card.device.type, init_scale=2.0**8)
        amp = torch.float16 if card.cuda else torch.bfloat16
        guard = Guard(model, optimizer, memory_limit=limit, microbatch=64, device=card.device.type,
                      scaler=scaler, amp_dtype=amp, clip_grad_norm=1.0)
        for _ in range(3):
            guard.step((x, y), mse)
        card.sync()
        return model, guard

    reference, finished = train("off")
    weights = sum(p.numel() * p.element_size() for p in reference.parameters())
    # The reference's optimizer state and gradients go first: the limit counts from what is held now
    # (the reference's weights), not from what the first run left in the cache.
    del finished
    for param in reference.parameters():
        param.grad = None
    card.reset()
    # Weights, gradients and AdamW's two moments fit; the foreach update's temporaries (one more copy
    # of the weights) do not; one weight tensor's worth (the per-tensor update's) does.
    limit = card.reserved() + int(4.5 * weights) if card.cuda else "auto"
    model, guard = train(limit)
    ooms = [e["error"] for e in kinds(guard, "oom")]
    errors = [relative_error(a.detach().cpu(), b.detach().cpu())
              for a, b in zip(model.parameters(), reference.parameters(), strict=True)]
    in_step = sum(error.startswith("optimizer step") for error in ooms)
    return {"ok": in_step >= 1 and max(errors) < 1e-5, "weights_mb": weights / MB,
            "limit_mb": limit / MB if isinstance(limit, int) else limit, "ooms": [e[:160] for e in ooms],
            "optimizer_step_ooms": in_step, "max_relative_error_vs_unlimited": max(errors)}


def check_eval_oom(card: Card, scale: float) -> dict[str, Any]:
    import torch

    from oomguard import Guard

    count, size = max(8, int(2048 * scale)), 128 if scale >= 1 else 16
    batch = images(count, size, seed=3)
    torch.manual_seed(0)
    model = conv_net().to(card.device).eval()

    def logits(net: Any, part: tuple[Any, Any]) -> Any:
        return net(part[0])

    with torch.no_grad():
        want = torch.cat([model(batch[0][i:i + 64].to(card.device)).cpu() for i in range(0, count, 64)])
    card.reset()
    limit: int | str = int(4 * GB) if card.cuda else "auto"
    guard = Guard(model, torch.optim.SGD(model.parameters(), lr=0.1), memory_limit=limit, microbatch=32,
                  eval_microbatch=count, device=card.device.type)
    got = guard.evaluate(batch, logits)
    card.sync()
    oom = kinds(guard, "oom")
    error = float((got - want).abs().max())
    only_eval = bool(oom) and all(e["phase"] == "eval" for e in oom) and guard.microbatch == 32
    return {"ok": only_eval and error < 1e-3, "eval_ooms": len(oom), "eval_microbatch": guard.eval_microbatch,
            "train_microbatch": guard.microbatch,
            "max_abs_error": error, "peak_reserved_gb": card.peak_reserved() / GB}


HOLDER = """
import sys, torch
held = [torch.empty(int(sys.argv[1]), dtype=torch.uint8, device="cuda")]
print("held", flush=True)
for line in sys.stdin:
    try:
        held.append(torch.empty(int(line), dtype=torch.uint8, device="cuda"))
        print("more", flush=True)
    except torch.OutOfMemoryError:
        print("refused", flush=True)
"""


@contextlib.contextmanager
def other_process(nbytes: int) -> Iterator[subprocess.Popen[str]]:
    """A process that holds ``nbytes`` of the card (and more on request: a line with a size)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(nbytes)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held", "holder failed"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def check_shared_card(card: Card, scale: float) -> dict[str, Any]:
    import torch

    from oomguard import Guard

    if not card.cuda:
        return {"ok": True, "skipped": "needs a GPU another process can share"}
    total = card.total()
    count = int(0.6 * total / (20 * MB))  # a whole batch of ~60% of the card
    batch = images(count, 128, seed=4)
    with other_process(total // 2) as holder:
        torch.manual_seed(0)
        model = conv_net().to(card.device)
        guard = Guard(model, torch.optim.SGD(model.parameters(), lr=0.01), memory_limit="auto", device="cuda")
        planned = guard.budget.limit or 0
        for _ in range(3):
            guard.step(batch, cross_entropy)
        before = {"budget_gb": planned / GB, "microbatch": guard.microbatch, "oom": len(kinds(guard, "oom"))}
        guard.device.empty_cache()  # as after validation: the other process can take what we freed
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write(f"{total // 4}\n")
        holder.stdin.flush()
        took = holder.stdout.readline().strip()
        for _ in range(4):
            guard.step(batch, cross_entropy)
        card.sync()
        after = {"other_took_more": took, "oom": len(kinds(guard, "oom")) - before["oom"],
                 "budget_gb": (guard.budget.limit or 0) / GB, "budget": guard.budget.source,
                 "microbatch": guard.microbatch}
    ok = (planned <= 0.55 * total and before["oom"] == 0 and took == "more" and after["oom"] == 1
          and "lowered" in guard.budget.source)
    return {"ok": ok, "card_gb": total / GB, "batch": count, "before": before, "after": after}


def oomguard_command(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**child_env(), "OOMGUARD_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "oomguard", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def events_of(run: Path) -> list[dict[str, Any]]:
    path = run / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().startswith("{")]


OOM_SCRIPT = """
import os, torch
if os.environ.get("OOMGUARD_ATTEMPT", "1") == "1":
    torch.empty(2 * torch.cuda.get_device_properties(0).total_memory, dtype=torch.uint8, device="cuda")
"""


def check_supervisor_oom(card: Card, scale: float) -> dict[str, Any]:
    if not card.cuda:
        return {"ok": True, "skipped": "needs a GPU to run out of"}
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        done = oomguard_command("run", "--run-dir", "sup", "--max-restarts", "2", "--", sys.executable, "-c",
                                OOM_SCRIPT, cwd=cwd, timeout=40)
        events = events_of(cwd / "sup")
    kills = [e for e in events if e["event"] == "kill"]
    restarts = [e for e in events if e["event"] == "restart"]
    ok = done.returncode == 0 and [k["cause"] for k in kills] == ["oom"] and len(restarts) == 1
    return {"ok": ok, "exit": done.returncode,
            "kills": [(k["cause"], (k.get("error") or "")[:120]) for k in kills],
            "restarts": len(restarts), "stderr": done.stderr[-300:] if not ok else ""}


RUN = ["amp=true", "deterministic=true", "seed=3", "epochs=3", "batch=16", "imgsz=32",
       "checkpoint_every=0.3s", "warmup_epochs=0.5"]


def _mid_epoch_checkpoints(run: Path, steps_per_epoch: int) -> int:
    return sum(1 for e in events_of(run) if e["event"] == "checkpoint" and not e.get("error")
               and e.get("step", 0) % steps_per_epoch)


def check_kill_resume(card: Card, scale: float) -> dict[str, Any]:
    import torch

    samples = 384 if card.cuda else 64
    args = [*RUN, f"device={card.device.type}", f"dev_samples={samples}"]
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        reference = oomguard_command("train", "--no-supervise", *args, "name=ref", cwd=cwd, timeout=60)
        if reference.returncode != 0:
            return {"ok": False, "error": "reference run failed: " + reference.stderr[-500:]}
        env = {**child_env(), "OOMGUARD_CACHE": str(cwd / "cache")}
        command = [sys.executable, "-m", "oomguard", "train", "--no-supervise", *args, "name=killed"]
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        run = cwd / "runs" / "killed"
        deadline = time.monotonic() + 60
        while (_mid_epoch_checkpoints(run, samples // 16) < 1 and process.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.01)  # polling the run's event log for its first checkpoint inside an epoch
        killed = process.poll() is None
        if killed:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
        resumed = oomguard_command("train", "--no-supervise", *args, "name=killed", "--resume", cwd=cwd,
                                   timeout=60)
        if resumed.returncode != 0:
            return {"ok": False, "killed": killed, "error": "resume failed: " + resumed.stderr[-500:]}
        want = torch.load(cwd / "runs" / "ref" / "weights" / "last.pt", weights_only=True)["model"]
        got = torch.load(run / "weights" / "last.pt", weights_only=True)["model"]
        starts = [e for e in events_of(run) if e["event"] == "start"]
    different = [key for key in want if not torch.equal(want[key], got[key])]
    resumed_at = starts[-1].get("step") if starts else None
    return {"ok": killed and not different and len(starts) == 2, "killed": killed,
            "resumed_at_step": resumed_at,
            "tensors": len(want), "different": different[:5]}


def check_sampler_cost(card: Card, scale: float) -> dict[str, Any]:
    import statistics

    import torch
    from torch import nn

    from oomguard import Guard
    from oomguard.devices import get_device
    from oomguard.memory.sampler import MemorySampler

    samples, steps = (2000, 300) if card.cuda else (50, 6)
    sampler = MemorySampler(get_device(card.device.type))
    sampler.sample()
    began = time.perf_counter()
    for _ in range(samples):
        sampler.sample()
    sample_us = (time.perf_counter() - began) / samples * 1e6

    def net() -> Any:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 10)).to(card.device)

    batch = (torch.randn(256, 512), torch.randint(0, 10, (256,)))
    with tempfile.TemporaryDirectory() as folder:
        with_model, without_model = net(), net()
        guards = {
            "with": Guard(with_model, torch.optim.SGD(with_model.parameters(), lr=0.01), memory_limit="auto",
                          microbatch=256, run_dir=Path(folder) / "run", device=card.device.type),
            "without": Guard(without_model, torch.optim.SGD(without_model.parameters(), lr=0.01),
                             memory_limit="auto", microbatch=256, device=card.device.type),
        }
        times: dict[str, list[float]] = {"with": [], "without": []}
        for step in range(steps):
            for name in ("with", "without") if step % 2 else ("without", "with"):
                card.sync()
                began = time.perf_counter()
                guards[name].step(batch, cross_entropy)
                card.sync()
                times[name].append(time.perf_counter() - began)
        guards["with"].close()
    medians = {name: statistics.median(values[steps // 10:]) * 1e3 for name, values in times.items()}
    return {"ok": True, "sample_us": round(sample_us, 1),
            "sampler_share_of_a_core": round(sample_us / (0.05 * 1e6), 5),
            "step_ms_with_sampler": round(medians["with"], 3),
            "step_ms_without": round(medians["without"], 3),
            "overhead": round(medians["with"] / medians["without"] - 1, 4)}


def check_budget_three_ways(card: Card, scale: float) -> dict[str, Any]:
    command = [sys.executable, str(ROOT / "benchmarks" / "budget.py"), "--repeats", "1"]
    if card.cuda:
        # A batch of 4096 needs ~25 GB here, so the budget splits it; 12 steps (~4 s a variant on an
        # H200) beside the probe's ~2 s, whose cost samples_per_s_after_plan leaves out; the seed recipe's
        # rate needs one step. 8 processes of ~11 s start-up each (CUDA's, torch's), ~45 s of training.
        command += ["--device", "cuda", "--budget-mb", "16000", "--imgsz", "128", "--batch", "4096",
                    "--steps", "12", "--seed-samples", "4096", "--sweep", "1024"]
    else:
        command += ["--batch", "16", "--samples", "64", "--sweep", "2,4"]
    try:
        done = run_group(command, timeout=230)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "budget.py timed out after 230s"}
    if done.returncode != 0:
        return {"ok": False, "error": done.stderr[-800:]}
    report = json.loads(done.stdout.strip().splitlines()[-1])
    ok = all(report[name]["within_budget"] for name in ("seed_recipe", "auto", "oracle"))
    return {"ok": ok, **report}


RUNNERS: dict[str, Callable[[Card, float], dict[str, Any]]] = {
    "oversized_batch": check_oversized_batch,
    "optimizer_oom": check_optimizer_oom,
    "eval_oom": check_eval_oom,
    "shared_card": check_shared_card,
    "supervisor_oom": check_supervisor_oom,
    "kill_resume": check_kill_resume,
    "sampler_cost": check_sampler_cost,
    "budget_three_ways": check_budget_three_ways,
}
assert RUNNERS.keys() == CHECKS.keys()


# -- the parent: one process per check, within the time given --------------------------------------
def run_check(name: str, device: str, limit: float) -> dict[str, Any]:
    began = time.monotonic()
    try:
        done = run_group([sys.executable, __file__, "--check", name, "--device", device], timeout=limit)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {limit:.0f}s",
                "seconds": round(time.monotonic() - began, 1)}
    seconds = round(time.monotonic() - began, 1)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        error = done.stderr.strip()[-1500:] or f"exit {done.returncode}"
        return {"ok": False, "error": error, "seconds": seconds}
    return {**json.loads(lines[-1]), "seconds": seconds}


def run_group(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``command`` in a process group of its own; on timeout the whole group is killed, the processes it
    started too (a budget.py variant left running would slow every check after it)."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                          start_new_session=True) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def machine(device: str) -> dict[str, Any]:
    probe = ("import json, torch; c = torch.cuda.is_available(); "
             "print(json.dumps({'torch': torch.__version__, "
             "'cuda': torch.version.cuda, 'gpu': torch.cuda.get_device_name(0) if c else None, 'gpu_gb': "
             "torch.cuda.get_device_properties(0).total_memory / 1e9 if c else None}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=child_env(),
                          timeout=60, check=False)
    if done.returncode != 0:
        return {"error": done.stderr[-300:], "device": device}
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    return {**facts, "device": device}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="list the checks as JSON and exit 0")
    parser.add_argument("--out", type=Path, help="also write the JSON object to this file")
    parser.add_argument("--only", help="comma-separated checks to run (default: all)")
    parser.add_argument("--seconds", type=float, default=400, help="time for the whole run")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: run the checks' code at toy sizes, to test this script itself")
    parser.add_argument("--check", choices=sorted(CHECKS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dry_run:
        print(json.dumps({"dry_run": True, "checks": [{"name": name, "shows": shows, "limit_s": limit}
                                                      for name, (shows, limit) in CHECKS.items()]}))
        return 0
    if args.check:
        card = Card(args.device)
        print(json.dumps(RUNNERS[args.check](card, 1.0 if card.cuda else 0.001)))
        return 0
    names = [n.strip() for n in args.only.split(",")] if args.only else list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        parser.error(f"unknown check {unknown[0]!r}; --dry-run lists them")
    began = time.monotonic()
    report: dict[str, Any] = {"machine": machine(args.device), "checks": {}}
    for name in names:
        left = args.seconds - (time.monotonic() - began)
        limit = min(CHECKS[name][1], left)
        if limit < 15:
            report["checks"][name] = {"ok": None, "skipped": "out of time"}
            continue
        report["checks"][name] = run_check(name, args.device, limit)
    ran = [c for c in report["checks"].values() if c.get("ok") is not None]
    report.update(passed=sum(bool(c["ok"]) for c in ran), failed=sum(not c["ok"] for c in ran),
                  skipped=len(report["checks"]) - len(ran), seconds=round(time.monotonic() - began, 1))
    text = json.dumps(report)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0 if report["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
