"""Data-parallel training on torch.distributed: 2 CPU ranks over gloo, real processes."""

from __future__ import annotations

import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from cli_helpers import oomguard
from ddp_workers import global_batches, tiny_model, train_rank
from oomguard.config import build_config
from oomguard.data.sampler import ResumableSampler
from oomguard.data.shard import RankBatches, rank_span
from oomguard.distributed.launch import group_exit
from oomguard.errors import ConfigError

TINY = ["dev_samples=160", "batch=32", "imgsz=32", "workers=0", "val_every=1"]


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv", newline="") as file:
        return list(csv.DictReader(file))


def events(run: Path, kind: str | None = None) -> list[dict[str, object]]:
    path = run / "events.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if kind is None or e["event"] == kind]


# --- the parts, exactly -------------------------------------------------------------------------


def test_rank_spans_cover_a_batch_once_in_balanced_slices() -> None:
    for total in range(2, 40):
        for world in (2, 3, 4):
            spans = [rank_span(total, rank, world) for rank in range(world)]
            assert spans[0][0] == 0 and spans[-1][1] == total
            assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
            sizes = [stop - start for start, stop in spans]
            assert max(sizes) - min(sizes) <= 1


def test_ranks_walk_one_global_order_and_resume_with_another_world_size() -> None:
    sampler = ResumableSampler(50, seed=3)
    sampler.set_epoch(2)
    whole = [index for index, _ in sampler]
    two = [RankBatches(sampler, 8, rank, 2) for rank in range(2)]
    seen = []
    for steps in zip(*(iter(b) for b in two), strict=True):
        for part in steps:
            seen.extend(index for index, _ in part)
        if len(seen) == 24:
            break
    assert sorted(seen) == sorted(whole[:24])  # 3 global batches of 8: the first 24 of the order
    sampler.set_start(24)  # a checkpoint written by 2 ranks, resumed by 3
    rest = [index for rank in range(3) for part in RankBatches(sampler, 8, rank, 3) for index, _ in part]
    # 26 left: three global batches of 8, then 2 samples that 3 ranks cannot share (left out).
    assert sorted(rest) == sorted(whole[24:48])


def test_a_tail_smaller_than_the_group_is_left_out() -> None:
    sampler = ResumableSampler(17, seed=0)
    batches = RankBatches(sampler, 8, 0, 2)
    assert batches.global_sizes() == [8, 8]  # the 17th sample cannot be split between 2 ranks
    assert len(batches) == 2


def test_the_group_exit_names_a_killed_rank_first() -> None:
    assert group_exit({0: -signal.SIGTERM, 1: -signal.SIGKILL}) == (1, 137)
    assert group_exit({0: 1, 1: 75}) == (1, 75)
    assert group_exit({1: 1, 0: 2}) == (0, 2)


def test_several_machines_need_an_explicit_port_and_a_node_rank_below_nnodes() -> None:
    with pytest.raises(ConfigError, match="master_port"):
        build_config({"nnodes": 2})
    with pytest.raises(ConfigError, match="node_rank=2 is not below nnodes=2"):
        build_config({"nnodes": 2, "node_rank": 2, "master_port": 29500})
    assert build_config({"nproc": 4, "nnodes": 2, "node_rank": 1, "master_port": 29500}).world_size == 8


# --- the Guard under DDP ------------------------------------------------------------------------


def test_an_oom_on_one_rank_shrinks_both_and_the_update_is_the_whole_batch(tmp_path: Path) -> None:
    steps, size = 5, 15  # 15 samples per step: rank 0 trains on 8, rank 1 on 7
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)  # the ranks' host
    mp.spawn(train_rank, args=(2, store.port, str(tmp_path), 1, 2, steps, size), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    assert results[0]["sizes"] == results[1]["sizes"] == [8, 8, 6, 6, 6]
    oom = [json.loads(line) for line in (tmp_path / "events-1.jsonl").read_text().splitlines()]
    assert [e["event"] for e in oom if e["event"] in ("oom", "shrink")] == ["oom", "shrink"]
    peer = [json.loads(line) for line in (tmp_path / "events-0.jsonl").read_text().splitlines()]
    shrinks = [e for e in peer if e["event"] == "shrink"]
    assert len(shrinks) == 1 and shrinks[0]["to"] == 6 and "another rank" in shrinks[0]["reason"]

    reference = tiny_model()  # one process, whole batches: what the group must have computed
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for x, y in global_batches(steps, size):
        optimizer.zero_grad()
        F.mse_loss(reference(x), y).backward()
        optimizer.step()
    for ours, theirs, expected in zip(results[0]["params"], results[1]["params"], reference.parameters(),
                                      strict=True):
        assert torch.equal(ours, theirs)  # the ranks never drifted apart
        torch.testing.assert_close(ours, expected.detach(), rtol=1e-5, atol=1e-6)


# --- oomguard train nproc=2, end to end ---------------------------------------------------------


def test_two_ranks_train_into_one_run_directory(tmp_path: Path) -> None:
    done = oomguard("train", "--no-supervise", "nproc=2", "epochs=2", *TINY, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "exp"
    assert [int(r["epoch"]) for r in rows(run)] == [1, 2]
    assert float(rows(run)[-1]["accuracy"]) > 0
    with open(run / "memory.csv", newline="") as file:
        samples = list(csv.DictReader(file))
    assert {int(r["rank"]) for r in samples} == {0, 1}
    # Each page once, as the peak; from the first step on (the probe before it is not the epoch's).
    first_epoch = [int(r["used"]) for r in samples if 1 <= int(r["step"]) < 5]
    assert float(rows(run)[0]["peak_memory_mb"]) >= round(max(first_epoch) / 1e6, 1)  # the larger rank's
    (start,) = events(run, "start")
    assert start["ranks"] == 2 and len(start["pids"]) == 2  # type: ignore[arg-type]
    assert len(events(run, "finish")) == 1
    checkpoints = events(run, "checkpoint")
    assert [c["epoch"] for c in checkpoints] == [1, 2] and not any("rank" in c for c in checkpoints)
    weights = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert weights["epoch"] == 2 and weights["step"] == 10  # 160 samples / 32 a step, 2 epochs
    assert (run / "report.html").is_file()
    assert done.stdout.count("finished in") == 1  # one voice, rank 0's

    # The same run goes on with one process: data position and global batch carry over.
    more = oomguard("train", "--no-supervise", "--resume", "nproc=1", "epochs=3", *TINY, cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert [int(r["epoch"]) for r in rows(run)] == [1, 2, 3]
    assert torch.load(run / "weights" / "last.pt", weights_only=True)["step"] == 15


def test_two_ranks_train_stages_one_after_the_other(tmp_path: Path) -> None:
    (tmp_path / "stages.yaml").write_text(
        "stages:\n  - {epochs: 1, imgsz: 32}\n  - {epochs: 1, imgsz: 48, lr: 0.001}\n")
    done = oomguard("train", "--no-supervise", "nproc=2", "stages.yaml", *TINY, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "exp"
    assert [(r["epoch"], r["stage"]) for r in rows(run)] == [("1", "1"), ("2", "2")]
    assert float(rows(run)[1]["lr"]) <= 0.001  # stage 2's own learning rate
    assert [e["stage"] for e in events(run, "stage")] == [1, 2]
    assert torch.load(run / "weights" / "last.pt", weights_only=True)["step"] == 10


def test_a_sigkilled_rank_brings_the_group_back_from_its_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "exp"
    env = {**os.environ, "OOMGUARD_CACHE": str(tmp_path / "cache")}
    supervisor = subprocess.Popen([sys.executable, "-m", "oomguard", "train", "nproc=2", "epochs=4", *TINY],
                                  cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not events(run, "checkpoint") and supervisor.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    (start,) = events(run, "start")
    os.kill(start["pids"][1], signal.SIGKILL)  # type: ignore[index]
    stdout, stderr = supervisor.communicate(timeout=300)
    assert supervisor.returncode == 0, stdout + stderr
    assert "rank 1" in stdout and "SIGKILL" in stdout
    kills = events(run, "kill")
    assert len(kills) == 1 and kills[0]["signal"] == "SIGKILL"
    starts = events(run, "start")
    assert len(starts) == 2 and starts[1]["resume"] is True and starts[1]["epoch"] >= 1
    assert [int(r["epoch"]) for r in rows(run)] == [1, 2, 3, 4]


def test_the_ranks_die_with_their_launcher_and_the_run_resumes(tmp_path: Path) -> None:
    from test_supervise_lifeline import gone_within

    run = tmp_path / "runs" / "exp"
    env = {**os.environ, "OOMGUARD_CACHE": str(tmp_path / "cache")}
    launcher = subprocess.Popen([sys.executable, "-m", "oomguard", "train", "--no-supervise", "nproc=2",
                                 "epochs=40", *TINY], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while not events(run, "checkpoint") and launcher.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    (start,) = events(run, "start")
    launcher.kill()  # SIGKILL: the launcher can do nothing about its ranks
    launcher.wait()
    assert gone_within(start["pids"], 2.0), "a rank outlived its launcher"  # type: ignore[arg-type]
    more = oomguard("train", "--no-supervise", "--resume", "nproc=2", "epochs=2", *TINY, cwd=tmp_path)
    assert more.returncode == 0, more.stderr  # the run's lock went with them
    assert len(events(run, "finish")) == 1


def memory_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as file:
        return list(csv.reader(file))


def test_samplers_of_two_ranks_share_one_memory_csv_with_one_header(tmp_path: Path) -> None:
    from oomguard.devices import get_device
    from oomguard.memory.sampler import COLUMNS, MemorySampler

    path = tmp_path / "memory.csv"
    first = MemorySampler(get_device("cpu"), path, interval=0.01, rank=0).start()
    second = MemorySampler(get_device("cpu"), path, interval=0.01, rank=1).start()  # the file exists now
    deadline = time.monotonic() + 30
    try:
        while {line[COLUMNS.index("rank")] for line in memory_rows(path)[1:]} != {"0", "1"}:
            assert time.monotonic() < deadline, "one rank's rows never reached memory.csv"
            time.sleep(0.01)
    finally:
        first.stop()
        second.stop()
    lines = memory_rows(path)
    assert lines[0][0] == "time" and sum(line[0] == "time" for line in lines) == 1


def test_a_memory_csv_left_empty_by_a_dead_run_gets_its_header(tmp_path: Path) -> None:
    from oomguard.devices import get_device
    from oomguard.memory.sampler import MemorySampler

    path = tmp_path / "memory.csv"
    path.touch()
    MemorySampler(get_device("cpu"), path, interval=10.0).start().stop()
    assert memory_rows(path) == [memory_rows(path)[0]] and memory_rows(path)[0][0] == "time"
