"""The backends against the CUDA and MPS doubles: names, memory used, limits, mixed precision, OOM texts."""

from __future__ import annotations

import os

import pytest
import torch

from device_doubles import GIB, MIB, CudaCard, MPSChip, format_size
from oomguard import host
from oomguard.devices import get_device, is_oom, rank_device
from oomguard.devices.base import OverBudget
from oomguard.devices.mps import MIN_DRIVER_LIMIT
from oomguard.engine.recovery import requested_bytes
from oomguard.errors import ConfigError
from oomguard.memory.budget import AUTO_SHARE, auto_limit
from oomguard.oom_text import memory_abort, mentions_oom

GB = 1000**3


def test_a_model_on_mps_names_its_device_mps_0_and_that_is_the_mps_device(
        monkeypatch: pytest.MonkeyPatch) -> None:
    MPSChip().install(monkeypatch)
    where = torch.device("mps", 0)  # what a parameter of a model moved to MPS says
    assert str(where) == "mps:0"
    assert get_device(str(where)).kind == "mps"
    assert get_device("MPS").kind == "mps"
    with pytest.raises(ConfigError, match="unknown device 'mps:1'"):
        get_device("mps:1")


def test_cuda_n_and_a_rank_on_more_ranks_than_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    CudaCard(count=2).install(monkeypatch)
    assert get_device("cuda:1").index == 1
    assert [rank_device("cuda", rank).index for rank in range(5)] == [0, 1, 0, 1, 0]
    assert rank_device("cuda:1", None).index == 1
    with pytest.raises(ConfigError, match="only 2 GPU"):
        get_device("cuda:2")


def test_memory_used_is_host_plus_metal_driver_memory_on_mps_and_reserved_on_cuda(
        monkeypatch: pytest.MonkeyPatch) -> None:
    chip = MPSChip(other=300 * MIB).install(monkeypatch)
    chip.pool.alloc(100 * MIB)
    mps = chip.device()
    # "other allocations" (MPSGraph's) are memory nobody planned: they count.
    assert mps.reserved() == 100 * MIB + 300 * MIB
    assert mps.used(host=1 * GIB, allocated=mps.allocated(), reserved=mps.reserved()) == 1 * GIB + 400 * MIB
    card = CudaCard(granule=2 * MIB).install(monkeypatch)
    card.pool.alloc(3 * MIB)  # rounded up to a 4 MiB segment: reserved runs above allocated
    cuda = card.device()
    assert (cuda.allocated(), cuda.reserved()) == (3 * MIB, 4 * MIB)
    assert cuda.used(host=5 * GIB, allocated=cuda.allocated(), reserved=cuda.reserved()) == 4 * MIB


def test_mps_limit_is_the_budget_less_the_host_and_never_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    chip = MPSChip(recommended=10 * GIB).install(monkeypatch)
    mps = chip.device()
    mps.set_hard_limit(8 * GIB, host_bytes=3 * GIB)
    assert chip.fractions[-1] == pytest.approx(0.5)  # 5 GiB of driver memory out of Metal's 10
    assert chip.max_allowed() == pytest.approx(5 * GIB)
    mps.set_hard_limit(2 * GIB, host_bytes=3 * GIB)  # the host alone is over the budget
    assert chip.fractions[-1] > 0  # 0 would tell MPS "no limit at all"
    assert chip.max_allowed() == pytest.approx(MIN_DRIVER_LIMIT)
    mps.set_hard_limit(64 * GIB)
    assert chip.fractions[-1] == 2.0  # the most MPS accepts


def test_mps_auto_budget_counts_the_model_already_on_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    chip = MPSChip(recommended=21 * GB).install(monkeypatch)
    monkeypatch.setattr(host, "total_memory", lambda: 32 * GB)
    monkeypatch.setattr(host, "available_memory", lambda: 12 * GB)
    root = host.ProcessMemory(os.getpid(), 2 * GB, 2 * GB, 2 * GB)  # the process tree's host memory: 2 GB
    tree = host.TreeMemory(2 * GB, (root,), "pss", True)
    monkeypatch.setattr(host, "tree_memory", lambda *args, **kwargs: tree)
    monkeypatch.setattr(host, "cgroup_limit_and_usage", lambda: (None, None))
    chip.pool.alloc(6 * GB)  # the model and its optimizer state, moved to MPS before the Guard exists
    mps = chip.device()
    # What the process holds (2 GB host + 6 GB Metal) plus what is available, less 10% for the OS.
    assert auto_limit(mps) == pytest.approx(2 * GB + chip.driver() + 12 * GB - 3.2 * GB, abs=1)
    assert auto_limit(mps) <= AUTO_SHARE * 32 * GB


def test_cuda_auto_budget_on_a_card_another_process_half_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    card = CudaCard(total=80 * GIB, other=40 * GIB).install(monkeypatch)
    card.pool.alloc(1 * GIB)
    cuda = card.device()
    assert cuda.available_memory() == 39 * GIB  # mem_get_info: what nobody holds
    assert auto_limit(cuda) == 40 * GIB  # free plus our own reserved, under 85% of the card
    alone = CudaCard(total=80 * GIB).install(monkeypatch)
    assert auto_limit(alone.device()) == int(AUTO_SHARE * 80 * GIB)


def test_mixed_precision_on_mps_before_macos_14_is_float16_with_a_scaler_and_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    MPSChip().install(monkeypatch)
    mps = get_device("mps")
    monkeypatch.setattr("platform.mac_ver", lambda: ("13.6.1", ("", "", ""), "arm64"))
    old = mps.mixed_precision()
    assert (old.dtype, old.scaler) == (torch.float16, True)
    assert old.note is not None and "macOS 14" in old.note and "macOS 13.6" in old.note
    monkeypatch.setattr("platform.mac_ver", lambda: ("14.4", ("", "", ""), "arm64"))
    assert mps.mixed_precision() == type(old)(torch.bfloat16)
    card = CudaCard().install(monkeypatch)
    assert card.device().mixed_precision().scaler


@pytest.mark.parametrize("text", [
    "MPS backend out of memory (MPS allocated: 33.48 GB, other allocations: 2.45 GB, max allowed: 36.27 GB). "
    "Tried to allocate 600.15 MB on private pool. Use PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable upper "
    "limit for memory allocations (may cause system failure).",
    "MPS backend out of memory (MPS allocated: 9.48 GiB, other allocations: 480.00 KiB, max allowed: "
    "9.47 GiB). "
    "Tried to allocate 256 bytes on shared pool. Use PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable upper "
    "limit for memory allocations (may cause system failure).",
    "Invalid buffer size: 19.45 GB",
    "Error: command buffer exited with error status.\n\tThe Metal Performance Shaders operations encoded on "
    "it may not have completed.\n\tError: \n\tInsufficient Memory "
    "(00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory)",
])
def test_mps_failures_a_smaller_microbatch_fixes_are_out_of_memory(text: str) -> None:
    assert is_oom(RuntimeError(text))
    assert mentions_oom(f"RuntimeError: {text}")


def test_the_requested_size_is_read_in_both_unit_spellings() -> None:
    assert requested_bytes("Tried to allocate 600.15 MB on private pool") == int(600.15 * MIB)
    assert requested_bytes("Tried to allocate 256 bytes on shared pool") == 256
    assert requested_bytes("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has") == 2 * GIB
    assert format_size(9.48 * GIB) == "9.48 GiB" and format_size(33.48 * GIB, "GB") == "33.48 GB"


def test_a_collective_failure_mentioning_memory_is_not_an_oom_to_retry() -> None:
    nccl = torch.distributed.DistBackendError(
        "NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled cuda error (run with NCCL_DEBUG=INFO for "
        "details), "
        "NCCL version 2.21.5\nncclUnhandledCudaError: Call to CUDA function failed.\nLast error:\n"
        "Cuda failure 'out of memory'")
    assert not is_oom(nccl)
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert is_oom(OverBudget(2, 1)) and is_oom(MemoryError())


def test_an_mps_assertion_that_aborts_the_process_is_found_in_its_output() -> None:
    lines = ["epoch 1/30", "/AppleInternal/Library/BuildRoots/c651a45f/Library/Caches/com.apple.xbs/Sources/"
             "MetalPerformanceShaders/MPSCore/Types/MPSNDArray.mm:724: failed assertion `[MPSNDArray "
             "initWithDevice:descriptor:] Error: total bytes of NDArray > 2**32'"]
    assert memory_abort(lines) is not None and "2**32" in memory_abort(lines)  # type: ignore[operator]
    assert memory_abort(["ValueError: boom"]) is None


@pytest.mark.parametrize("statistics", [True, False], ids=["torch keeps MPS peaks", "sampled"])
def test_mps_peaks_come_from_the_allocators_statistics_where_torch_keeps_them(
        monkeypatch: pytest.MonkeyPatch, statistics: bool) -> None:
    from oomguard.memory.meter import MemoryMeter

    chip = MPSChip().install(monkeypatch, peak_statistics=statistics)
    meter = MemoryMeter(chip.device())  # no sampler: nothing watches between two readings
    meter.mark()
    chip.pool.hold(1 * GIB)()  # a step's activations, freed,
    chip.pool.empty_cache()  # and Metal's cache emptied before anyone looked
    seen = meter.peak() - meter.current()
    if statistics:
        assert seen >= 1 * GIB
    else:
        assert seen < 1 * GIB  # a spike between two samples: what the fallback cannot see
