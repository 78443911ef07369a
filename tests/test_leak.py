"""Leak detection: the trend fit on its own, then real loops measured by the process's RSS."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from oomguard import host
from oomguard.devices.cpu import release_host_memory
from oomguard.events import EventLog, read_events
from oomguard.memory.leak import MB, LeakDetector, kendall_tau, theil_sen
from oomguard.memory.tensors import Kind, census, diagnose
from oomguard.memory.watch import FragmentationWatch, LeakWatch


def test_theil_sen_ignores_an_outlier() -> None:
    xs = [float(i) for i in range(10)]
    ys = [2.0 * x for x in xs]
    ys[4] = 1000.0
    assert theil_sen(xs, ys) == 2.0
    assert kendall_tau([1, 2, 3, 4]) == 1.0 and kendall_tau([4, 3, 2, 1]) == -1.0


def sawtooth(step: int, rng: np.random.Generator, period: int = 37) -> float:
    """An allocator's sawtooth around 2 GB: cache that comes and goes (up to 300 MB), plus noise."""
    return 2000 * MB + (step % period) * (300 // period) * MB + float(rng.integers(0, 5 * MB))


@pytest.mark.parametrize("seed", range(5))
def test_a_sawtooth_without_growth_is_never_flagged(seed: int) -> None:
    rng = np.random.default_rng(seed)
    detector = LeakDetector(budget=4000 * MB)
    for step in range(1, 5001):
        used = sawtooth(step, rng)
        detector.add(step, used)
        assert detector.leak(step, used) is None


@pytest.mark.parametrize(("period", "within"), [(7, 300), (37, 600)])
def test_a_slow_climb_under_a_sawtooth_is_flagged_once_with_its_slope(period: int, within: int) -> None:
    rng = np.random.default_rng(0)
    detector = LeakDetector(budget=4000 * MB)
    found = []
    for step in range(1, 1001):
        used = sawtooth(step, rng, period) + step * 1 * MB
        detector.add(step, used)
        leak = detector.leak(step, used)
        if leak is not None:
            detector.accept(leak)
            found.append(leak)
    assert len(found) == 1
    leak = found[0]
    assert leak.step < within  # a long sawtooth needs the coarser scale: more steps
    assert leak.mb_per_step == pytest.approx(1.0, rel=0.1)
    # 4000 MB budget, ~2.3 GB used by then at 1 MB/step: the budget is crossed ~1700 steps later.
    assert leak.budget_step is not None and 1500 < leak.budget_step - leak.step < 2000


def test_diagnosis_names_a_kept_loss() -> None:
    before: Counter[Kind] = Counter({Kind((), "torch.float32", "cpu", False): 3})
    after = before + Counter({Kind((), "torch.float32", "cpu", True): 40})
    assert diagnose(before, after, 40) == (
        "+1 scalar float32 tensor on cpu with grad_fn per step: a loss or metric is kept with its graph; "
        "store `loss.item()` or `loss.detach()`")


def train(keep_graphs: bool, seed: int, steps: int, events: Path) -> tuple[int | None, list[dict]]:
    """A tiny loop measured by RSS; ``keep_graphs``: a metric is kept with its graph (~1 MB) each step."""
    release_host_memory()  # heap pages freed by earlier tests would hide the first steps' growth
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(256, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
    watch = LeakWatch(EventLog(events), budget=None)
    kept: list[object] = []
    for step in range(1, steps + 1):
        loss = torch.nn.functional.cross_entropy(model(x + 0.01 * torch.randn_like(x)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        kept.append(torch.nn.functional.cross_entropy(model(x), y) if keep_graphs else loss.item())
        if watch.observe(step, host.process_rss()) is not None:
            return step, [e for e in read_events(events) if e["event"] == "leak"]
    return None, [e for e in read_events(events) if e["event"] == "leak"]


def test_a_kept_graph_is_found_and_named(tmp_path: Path) -> None:
    step, leaks = train(True, 0, 300, tmp_path / "events.jsonl")
    assert step is not None and step <= 200
    assert len(leaks) == 1
    assert leaks[0]["mb_per_step"] > 0.5
    assert leaks[0]["diagnosis"].startswith("+1 scalar float32 tensor on cpu with grad_fn per step")
    assert "`loss.item()`" in leaks[0]["diagnosis"]


def test_a_clean_loop_is_not_flagged(tmp_path: Path) -> None:
    step, leaks = train(False, 1, 300, tmp_path / "events.jsonl")
    assert (step, leaks) == (None, [])


def test_a_census_counts_live_tensors_with_graphs() -> None:
    weight = torch.ones(3, requires_grad=True)
    kept = [(weight * i).sum() for i in range(5)]
    counts = census()
    assert counts[Kind((), "torch.float32", "cpu", True)] >= len(kept)


def test_fragmentation_tightens_the_release_cadence(tmp_path: Path) -> None:
    events = EventLog(tmp_path / "events.jsonl")
    watch = FragmentationWatch(events, budget=None)
    released = []
    for step in range(1, 701):
        allocated = 500 * MB + (step % 3) * MB  # live memory flat
        reserved = allocated + step * MB  # the cache climbs
        if watch.observe(step, allocated, reserved):
            released.append(step)
    found = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "fragmentation"]
    cadence = [e["release_every"] for e in found]
    assert cadence[:3] == [64, 32, 16]  # the fake cache never shrinks: the cadence keeps tightening
    assert released and released[0] % 64 == 0
