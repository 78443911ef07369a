"""The rules of ``oomguard doctor``: environment + machine facts -> findings that say what to do.

Pure: ``findings(os.environ, facts)`` reads nothing else, so every rule is
tested with hand-written facts. Many rules answer the advice in users'
notes (``PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0``, an allocator "policy",
many DataLoader workers on a 16 GB Mac) with what it really does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from oomguard.diagnose.facts import Facts
from oomguard.units import format_bytes

Level = Literal["error", "warn", "info"]
ORDER: dict[str, int] = {"error": 0, "warn": 1, "info": 2}
GB = 1000**3
SMALL_MACHINE = 17 * GB  # "16 GB" Macs report a little over 16e9 bytes


@dataclass(frozen=True)
class Finding:
    level: Level
    key: str  # stable name for tests and scripts
    message: str  # what is wrong and why it matters
    fix: str  # what to do


def _size(n: float | None) -> str:
    return format_bytes(n).replace(".0 ", " ")


def _ratio(env: Mapping[str, str]) -> list[Finding]:
    raw = env.get("PYTORCH_MPS_HIGH_WATERMARK_RATIO")
    if raw is None:
        return []
    name = f"PYTORCH_MPS_HIGH_WATERMARK_RATIO={raw}"
    fix = ("unset PYTORCH_MPS_HIGH_WATERMARK_RATIO (and remove it from your shell profile and scripts); "
           "oomguard sets the MPS limit from memory_limit")
    try:
        ratio = float(raw)
    except ValueError:
        return [Finding("warn", "mps_high_watermark",
                        f"{name} is not a number; PyTorch stops when MPS starts", fix)]
    if ratio == 0:
        return [Finding(
            "warn", "mps_high_watermark",
            f"{name} removes the MPS allocator's limit: instead of a catchable 'MPS backend out of memory' "
            "that oomguard recovers from, MPS keeps taking unified memory and swap until macOS kills the "
            "run ('zsh: killed') or the whole machine stalls",
            fix)]
    if ratio > 1:
        return [Finding(
            "info", "mps_high_watermark",
            f"{name} lets MPS allocate past the working set macOS recommends, into swap: slow, and "
            "closer to a kill", fix)]
    return []


def _env(env: Mapping[str, str], facts: Facts) -> list[Finding]:
    out = _ratio(env)
    policy = env.get("PYTORCH_MPS_ALLOCATOR_POLICY")
    if policy is not None:
        out.append(Finding(
            "warn", "mps_allocator_policy",
            f"PYTORCH_MPS_ALLOCATOR_POLICY={policy} does nothing: PyTorch reads no such variable (its MPS "
            "allocator reads PYTORCH_MPS_HIGH_WATERMARK_RATIO and PYTORCH_MPS_LOW_WATERMARK_RATIO), so it "
            "only gives a false sense of safety",
            "remove it; oomguard frees cached memory and shrinks the microbatch itself when a step does "
            "not fit"))
    if env.get("PYTORCH_NO_CUDA_MEMORY_CACHING", "0") not in ("", "0"):
        out.append(Finding(
            "warn", "no_cuda_caching",
            "PYTORCH_NO_CUDA_MEMORY_CACHING is set: every CUDA allocation goes to the driver (much slower) "
            "and the allocator's peak statistics that size the microbatch lose their meaning",
            "unset PYTORCH_NO_CUDA_MEMORY_CACHING"))
    if facts.platform == "darwin" and env.get("OBJC_DISABLE_INITIALIZE_FORK_SAFETY", "").upper() == "YES":
        out.append(Finding(
            "warn", "fork_safety",
            "OBJC_DISABLE_INITIALIZE_FORK_SAFETY=YES hides the crash macOS raises when a forked process "
            "touches Objective-C or Metal; forked DataLoader workers can then hang or corrupt data",
            "unset it and keep macOS's default 'spawn' start method"))
    return out


def _workers(facts: Facts) -> list[Finding]:
    config = facts.config
    if config is None or config.workers == 0:
        return []
    n = config.workers
    out = []
    if facts.platform == "darwin":
        if facts.start_method == "fork":
            out.append(Finding(
                "warn", "fork_on_macos",
                "the multiprocessing start method is 'fork' on macOS: forking after Metal/MPS started is "
                "unsafe, and DataLoader workers crash or hang",
                "do not call set_start_method('fork'); leave macOS's default 'spawn'"))
        small = facts.total_memory is not None and facts.total_memory <= SMALL_MACHINE
        out.append(Finding(
            "warn" if n > 2 or small else "info", "workers_macos",
            f"workers={n} on macOS: each DataLoader worker is a spawned Python process with its own copy "
            "of the dataset and transforms (often 0.3-1 GB each); when the OS kills the run it kills them "
            "too, and that is where the 'leaked semaphore objects' warnings come from (a symptom, not the "
            "cause)",
            "use workers=0, or at most workers=2 on a 16 GB machine; oomguard counts the workers' memory "
            "in the budget either way"))
    if n > facts.cpus:
        out.append(Finding(
            "warn", "workers_cpus",
            f"workers={n} but this machine has {facts.cpus} CPUs: the extra workers add processes and "
            "memory, not speed",
            f"use workers={max(0, facts.cpus - 1)} or fewer"))
    return out


def _memory_limit(facts: Facts) -> list[Finding]:
    config = facts.config
    if config is None:
        return []
    target = facts.chosen
    total = target.memory if target is not None and target.memory else facts.total_memory
    kind = target.kind if target is not None else "machine"
    unified = target is None or target.kind in ("cpu", "mps")
    limit = config.memory_limit
    out = []
    if isinstance(limit, int) and total is not None and limit > total:
        out.append(Finding(
            "warn", "memory_limit_too_large",
            f"memory_limit={_size(limit)} is more than this {kind} has ({_size(total)}): oomguard train "
            "refuses to start, and no budget that large could be kept anyway",
            f"use memory_limit=auto, a fraction like 0.8, or a size up to {_size(total)}"))
    elif isinstance(limit, float) and limit > 0.9 and unified:
        out.append(Finding(
            "warn", "memory_limit_no_headroom",
            f"memory_limit={limit:g} leaves under 10% of unified memory to the OS and other programs: the "
            "OS kills the run before the budget is reached",
            "use memory_limit=auto (85% of memory, less what other programs hold)"))
    elif limit == "off" and unified:
        out.append(Finding(
            "warn", "memory_limit_off",
            "memory_limit=off on host/unified memory: nothing stops a step before the OS kills the run",
            "use memory_limit=auto"))
    cap = config.memory_cap
    if cap is not None and facts.total_memory is not None and cap > facts.total_memory:
        out.append(Finding(
            "warn", "memory_cap_too_large",
            f"memory_cap={_size(cap)} is more than this machine has ({_size(facts.total_memory)}): the "
            "cap can never act", f"use a memory_cap below {_size(facts.total_memory)}, or leave it unset"))
    return out


def _machine(facts: Facts) -> list[Finding]:
    out = []
    if facts.device_error is not None:
        out.append(Finding("warn", "device_missing", facts.device_error, "use device=auto"))
    total, available = facts.total_memory, facts.available_memory
    if total and available is not None and (available < 0.15 * total or available < GB):
        out.append(Finding(
            "warn", "low_available",
            f"only {_size(available)} of {_size(total)} is available now: other programs hold the rest, "
            "and the auto budget shrinks with it",
            "close other programs (browsers, IDEs, other trainings) before training"))
    if total and facts.swap_used is not None and facts.swap_used > max(GB, 0.1 * total):
        out.append(Finding(
            "info", "swapping",
            f"{_size(facts.swap_used)} is swapped out already: training will be slower and the OS closer "
            "to killing it",
            "close programs you do not need; on macOS a restart clears swap"))
    return out


def findings(env: Mapping[str, str], facts: Facts) -> list[Finding]:
    """Every problem found, errors first. An error means nothing can train here."""
    if facts.torch_version is None:
        missing = Finding(
            "error", "torch_missing",
            f"torch does not import ({facts.torch_error or 'not installed'}): nothing can train",
            "install it in this environment: pip install torch")
        return [missing, *_env(env, facts)]
    out = _env(env, facts) + _workers(facts) + _memory_limit(facts) + _machine(facts)
    return sorted(out, key=lambda f: ORDER[f.level])
