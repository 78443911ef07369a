"""oomguard doctor: the rules driven with described machines, and one real run on this machine."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest
from rich.console import Console

from oomguard.config import load_config
from oomguard.diagnose import Backend, Facts, findings, run_doctor

GB = 1000**3
MAC_16GB = Facts(
    platform="darwin", machine="arm64", python="3.11.7", cpus=8, total_memory=17_179_869_184,
    available_memory=9 * GB, swap_total=2 * GB, swap_used=0, torch_version="2.13.0",
    backends=(Backend("cpu", 17_179_869_184), Backend("mps", 11_453_246_122)),
    chosen=Backend("mps", 11_453_246_122, "mps"), start_method="spawn", config=load_config(),
)


def keys(env: dict[str, str], facts: Facts) -> list[str]:
    return [f.key for f in findings(env, facts)]


def test_a_healthy_machine_has_no_findings() -> None:
    assert findings({}, MAC_16GB) == []


def test_high_watermark_ratio_zero_is_explained() -> None:
    [finding] = findings({"PYTORCH_MPS_HIGH_WATERMARK_RATIO": "0.0"}, MAC_16GB)
    assert finding.level == "warn" and finding.key == "mps_high_watermark"
    assert finding.message.startswith(
        "PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 removes the MPS allocator's limit: instead of a catchable "
        "'MPS backend out of memory' that oomguard recovers from, MPS keeps taking unified memory and swap"
    )
    assert finding.fix.startswith("unset PYTORCH_MPS_HIGH_WATERMARK_RATIO")
    assert keys({"PYTORCH_MPS_HIGH_WATERMARK_RATIO": "0"}, MAC_16GB) == ["mps_high_watermark"]
    assert keys({"PYTORCH_MPS_HIGH_WATERMARK_RATIO": "0.8"}, MAC_16GB) == []
    [over] = findings({"PYTORCH_MPS_HIGH_WATERMARK_RATIO": "1.5"}, MAC_16GB)
    assert over.level == "info" and "into swap" in over.message


def test_allocator_policy_does_nothing() -> None:
    [finding] = findings({"PYTORCH_MPS_ALLOCATOR_POLICY": "garbage_collection"}, MAC_16GB)
    assert finding.key == "mps_allocator_policy"
    assert "PyTorch reads no such variable" in finding.message
    assert finding.fix.startswith("remove it")


def test_memory_limit_larger_than_the_machine() -> None:
    facts = replace(MAC_16GB, config=load_config(None, ["memory_limit=64GB"]))
    [finding] = findings({}, facts)
    assert finding.key == "memory_limit_too_large"
    assert finding.message == (
        "memory_limit=64 GB is more than this mps has (11.5 GB): oomguard train refuses to start, "
        "and no budget that large could be kept anyway"
    )
    assert finding.fix == "use memory_limit=auto, a fraction like 0.8, or a size up to 11.5 GB"
    assert keys({}, replace(MAC_16GB, config=load_config(None, ["memory_limit=8GB"]))) == []


def test_memory_limit_without_headroom_or_off_on_unified_memory() -> None:
    assert keys({}, replace(MAC_16GB, config=load_config(None, ["memory_limit=0.97"]))) == [
        "memory_limit_no_headroom"]
    assert keys({}, replace(MAC_16GB, config=load_config(None, ["memory_limit=off"]))) == ["memory_limit_off"]
    cuda = replace(MAC_16GB, platform="linux", chosen=Backend("cuda", 24 * GB, "cuda:0"),
                   config=load_config(None, ["memory_limit=0.97"]))
    assert keys({}, cuda) == []  # a GPU's own memory needs no OS headroom


def test_dataloader_workers_on_a_16gb_mac() -> None:
    [finding] = findings({}, replace(MAC_16GB, config=load_config(None, ["workers=4"])))
    assert finding.level == "warn" and finding.key == "workers_macos"
    assert "leaked semaphore objects" in finding.message
    assert finding.fix.startswith("use workers=0, or at most workers=2 on a 16 GB machine")
    big_mac = replace(MAC_16GB, total_memory=64 * GB, available_memory=40 * GB,
                      config=load_config(None, ["workers=2"]))
    assert [f.level for f in findings({}, big_mac)] == ["info"]
    forked = replace(MAC_16GB, start_method="fork", config=load_config(None, ["workers=2"]))
    assert keys({"OBJC_DISABLE_INITIALIZE_FORK_SAFETY": "YES"}, forked) == [
        "fork_safety", "fork_on_macos", "workers_macos"]
    linux = replace(MAC_16GB, platform="linux", cpus=2, config=load_config(None, ["workers=8"]))
    [too_many] = findings({}, linux)
    assert too_many.key == "workers_cpus" and too_many.fix == "use workers=1 or fewer"


def test_busy_machine() -> None:
    busy = replace(MAC_16GB, available_memory=int(0.8 * GB), swap_used=5 * GB)
    assert [(f.level, f.key) for f in findings({}, busy)] == [("warn", "low_available"), ("info", "swapping")]


def test_no_torch_is_the_only_error() -> None:
    facts = replace(MAC_16GB, torch_version=None, torch_error="ModuleNotFoundError: No module named 'torch'")
    found = findings({"PYTORCH_MPS_HIGH_WATERMARK_RATIO": "0.0"}, facts)
    assert [(f.level, f.key) for f in found] == [("error", "torch_missing"), ("warn", "mps_high_watermark")]
    assert found[0].fix == "install it in this environment: pip install torch"


def test_run_doctor_on_this_machine() -> None:
    console = Console(record=True, width=200)
    code = run_doctor(load_config(None, ["memory_limit=1000TB"]), console,
                      env={"PYTORCH_MPS_HIGH_WATERMARK_RATIO": "0.0"})
    out = console.export_text()
    assert code == 0  # findings are advice; training is still possible
    import torch

    assert f"torch {torch.__version__}" in out
    assert "memory: " in out and " total, " in out and " available" in out
    assert "PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 removes the MPS allocator's limit" in out
    assert "memory_limit=1000000 GB is more than this" in out
    assert "-> use memory_limit=auto" in out


def test_run_doctor_without_torch_exits_non_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails, as on a broken install
    console = Console(record=True, width=200)
    assert run_doctor(None, console, env={}) == 1
    out = console.export_text()
    assert "torch: not importable" in out
    assert "error torch does not import (ModuleNotFoundError: import of torch halted" in out
    assert "-> install it in this environment: pip install torch" in out


def test_run_doctor_on_a_mac_and_on_a_shared_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from device_doubles import GIB, CudaCard, MPSChip

    MPSChip(recommended=10 * GIB).install(monkeypatch)
    console = Console(record=True, width=200)
    assert run_doctor(load_config(None, ["device=mps"]), console, env={}) == 0
    out = console.export_text()
    assert "device=mps trains on mps (unified memory; Metal recommends at most 10.7 GB" in out
    CudaCard(total=24 * GIB, other=10 * GIB).install(monkeypatch)
    console = Console(record=True, width=200)
    assert run_doctor(load_config(None, ["device=cuda", "memory_limit=30GB"]), console, env={}) == 0
    out = console.export_text()
    assert "device=cuda trains on cuda:0 (Double GPU, 15.0 GB free of 25.8 GB)" in out
    assert "memory_limit=30 GB is more than this cuda has (25.8 GB)" in out
