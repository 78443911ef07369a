"""A process tree's memory counted as the OS counts it, each page once, on real processes and real pages.

Forked processes share their parent's pages copy-on-write: summed RSS counts
those pages once per process, ``host.tree_memory`` once. The expectations
come from psutil's own PSS/USS readings taken beside ours, and from pages the
tests touch themselves.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from cgroup_helpers import join, memory_cgroup
from oomguard import host
from oomguard.host import tree

MB = 1024**2
DATASET = 300 * MB

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PSS and cgroups are Linux's")


def _uss(pids: list[int]) -> int:
    return sum(psutil.Process(pid).memory_full_info().uss for pid in pids)


def _pss(pid: int) -> int:
    root = psutil.Process(pid)
    return sum(p.memory_full_info().pss for p in [root, *root.children(recursive=True)])


def _touched(size: int) -> torch.Tensor:
    block = torch.ones(size // 4)  # written: every page resident
    return block


@pytest.mark.slow
def test_forked_loader_workers_add_their_own_pages_not_the_ones_they_share() -> None:
    dataset = _touched(DATASET)
    before = host.tree_memory(precise=True)
    loader = DataLoader(TensorDataset(dataset.view(-1, 1024)), batch_size=16, num_workers=2,
                        persistent_workers=True, multiprocessing_context="fork")
    batches = iter(loader)
    next(batches)
    after = host.tree_memory(fresh=True)  # a new set of processes: measured precisely at once
    workers = [p.pid for p in after.processes[1:] if p.pid not in {q.pid for q in before.processes}]
    assert len(workers) == 2 and after.precise
    beside_pss, beside_uss = _pss(os.getpid()), _uss(workers)

    rss_growth = after.root.rss + after.children_rss - before.root.rss - before.children_rss
    growth = after.total - before.total
    assert rss_growth > 2 * DATASET  # each worker maps the whole dataset: RSS counts it twice more
    assert abs(growth - beside_uss) < 0.1 * DATASET  # counted: the workers' own pages only
    # The workers go on prefetching between the two readings: their heaps move by a few MB.
    assert after.children_private == pytest.approx(beside_uss, rel=0.2, abs=0.03 * DATASET)
    assert after.total == pytest.approx(beside_pss, rel=0.1)
    del batches, loader


def _write_half(buffer: memoryview, ready: multiprocessing.synchronize.Event,
                done: multiprocessing.synchronize.Event) -> None:
    half = len(buffer) // 2
    chunk = b"\x02" * MB  # written a MB at a time: no temporary as large as what is written
    for start in range(0, half, MB):
        buffer[start:start + MB] = chunk  # copy-on-write: these pages become the child's own
    ready.set()
    done.wait()


@pytest.fixture
def shared_block() -> Iterator[bytearray]:
    block = bytearray(b"\x01") * (200 * MB)
    yield block
    del block


@pytest.mark.slow
def test_pages_a_child_writes_count_once_more_and_the_pages_it_shares_do_not(shared_block: bytearray) -> None:
    context = multiprocessing.get_context("fork")
    ready, done = context.Event(), context.Event()
    before = host.tree_memory(precise=True)
    child = context.Process(target=_write_half, args=(memoryview(shared_block), ready, done))
    child.start()
    try:
        assert ready.wait(60)
        after = host.tree_memory(fresh=True)
        [mine] = [p for p in after.processes if p.pid == child.pid]
        assert mine.rss > 200 * MB  # it maps the whole block
        assert mine.private == pytest.approx(100 * MB, abs=25 * MB)  # and wrote half of it
        assert after.total - before.total == pytest.approx(100 * MB, abs=25 * MB)
    finally:
        done.set()
        child.join(60)


def test_cheap_readings_count_new_pages_in_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tree, "PRECISE_EVERY", 1e9)  # no periodic precise reading in between
    before = host.tree_memory(precise=True)
    block = _touched(100 * MB)
    after = host.tree_memory()
    assert not after.precise
    assert after.total - before.total == pytest.approx(100 * MB, abs=8 * MB)
    del block


def test_a_child_that_ended_leaves_the_tree_and_a_root_that_ended_is_an_error() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert sleeper.pid in [p.pid for p in host.tree_memory(fresh=True).processes]
        alone = host.tree_memory(sleeper.pid, precise=True)
        assert [p.pid for p in alone.processes] == [sleeper.pid] and alone.total > 0
    finally:
        sleeper.kill()
    deadline = time.monotonic() + 30
    while psutil.Process(sleeper.pid).status() != psutil.STATUS_ZOMBIE:  # a zombie until reaped
        assert time.monotonic() < deadline
    assert sleeper.pid not in [p.pid for p in host.tree_memory(precise=True).processes]
    assert sleeper.pid not in [p.pid for p in host.tree_memory(fresh=True).processes]  # not taken in again
    sleeper.wait()
    assert sleeper.pid not in [p.pid for p in host.tree_memory(fresh=True).processes]
    with pytest.raises(ProcessLookupError):
        host.tree_memory(sleeper.pid)


HOLDER = """
import os, sys
block = bytearray(b"\\x01") * (150 * 1024**2)   # anonymous: charged, and what the OOM killer weighs
with open(sys.argv[1], "wb") as cache:            # page cache, charged too, but dropped before any kill
    for _ in range(100):
        cache.write(os.urandom(1024**2))
    cache.flush()
    os.fsync(cache.fileno())
print("ready", flush=True)
sys.stdin.read()
"""


def _on_tmpfs(path: Path) -> bool:
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    best = max((m for m in mounts if str(path.resolve()).startswith(m[1])), key=lambda m: len(m[1]))
    return best[2] in ("tmpfs", "ramfs")


@pytest.mark.slow
def test_a_tree_alone_in_a_limited_cgroup_counts_its_charge_less_droppable_cache(tmp_path: Path) -> None:
    with memory_cgroup(1024 * MB) as group:
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "cache.bin")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  preexec_fn=lambda: join(group))
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
            reading = host.tree_memory(holder.pid, precise=True)
            charged = int((group / "memory.usage_in_bytes").read_text())
            assert reading.counted_as == "cgroup"
            assert 150 * MB < reading.total < 150 * MB + 60 * MB  # the block and the interpreter
            assert reading.total == pytest.approx(_pss(holder.pid), rel=0.25)
            if not _on_tmpfs(tmp_path):  # a file on tmpfs is shared memory: it cannot be dropped
                assert charged - reading.total > 80 * MB  # the file's cache: charged, not counted
        finally:
            holder.kill()
            holder.wait()
