"""End to end with real memory: microbatch 1 over the budget trains within it, with activation checkpointing.

The Guard runs in a child process (real RSS, the kernel's own high-water mark as the proof): a 48-block
float64 network with dropout and BatchNorm whose one sample needs ~250 MB of activations against 160 MB
of room. The probe finds microbatch 1 over the budget, measures checkpointing, switches it on; the steps
then stay under the budget, and the update equals the one without checkpointing.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

MB = 1000**2
ROOM = 160 * MB  # of budget above what the process holds before the Guard
DT = torch.float64


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.up = nn.Linear(width, 8 * width, dtype=DT)
        self.down = nn.Linear(8 * width, width, dtype=DT)
        self.norm = nn.BatchNorm1d(width, dtype=DT)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(torch.tanh(self.up(x)))
        return x + self.drop(self.norm(h.transpose(1, 2)).transpose(1, 2))


class Deep(nn.Module):
    """Block inputs of 256 KB a sample, ~5 MB of activations inside each block."""

    def __init__(self, width: int = 32, depth: int = 48) -> None:
        super().__init__()
        self.inp = nn.Linear(8, width, dtype=DT)
        self.blocks = nn.Sequential(*[Block(width) for _ in range(depth)])
        self.out = nn.Linear(width, 1, dtype=DT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(x)).mean(dim=1)).squeeze(1)


def setup() -> tuple[nn.Module, torch.optim.Optimizer, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    model = Deep()
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(4, 1024, 8, generator=generator, dtype=DT)
    batch = (inputs, torch.randn(4, generator=generator, dtype=DT))
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), batch


def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return ((model(batch[0]) - batch[1]) ** 2).mean()


STEPS = 2


def child(out: Path) -> None:
    from oomguard import Guard, host
    from oomguard.devices import release_host_memory

    torch.set_num_threads(1)  # one heap arena: RSS does not depend on how busy the machine is
    model, optimizer, batch = setup()
    model.train()
    release_host_memory()
    start = host.tree_memory(precise=True)
    budget = start.total + ROOM
    guard = Guard(model, optimizer, memory_limit=budget)
    guard.plan(batch, loss_fn)
    release_host_memory()
    host.reset_peak_rss()  # from here on: the training steps only
    sizes = []
    for _ in range(STEPS):
        sizes.append(guard.microbatch)
        guard.step(batch, loss_fn)
    steps_peak = host.own_peak_rss()
    torch.save(model.state_dict(), out / "savers.pt")
    report = {"budget": budget, "start": start.total, "own_start": start.own, "rss_start": start.root.rss,
              "steps_peak": steps_peak, "sizes": sizes, "events": guard.events.history}
    (out / "report.json").write_text(json.dumps(report))


def reference(sizes: list[int]) -> dict[str, torch.Tensor]:
    """The same steps at the same microbatches, without a budget and without checkpointing."""
    from oomguard import Guard

    model, optimizer, batch = setup()
    model.train()
    [size] = set(sizes)
    guard = Guard(model, optimizer, memory_limit="off", microbatch=size, savers="off")
    for _ in range(STEPS):
        guard.step(batch, loss_fn)
    return model.state_dict()


def _events(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [event for event in report["events"] if event["event"] == kind]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's high-water mark: Linux")
def test_microbatch_one_over_the_budget_trains_within_it_with_checkpointing_and_the_same_update(
        tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    [plan] = _events(report, "plan")
    plain, checkpointed = plan["trials"]
    assert (plain["savers"], plain["fits"]) == ([], False)
    assert plain["peak"] > report["budget"]  # the premise: one sample does not fit without savers
    assert (checkpointed["savers"], checkpointed["fits"]) == (["activation_checkpointing"], True)
    assert plan["savers"] == ["activation_checkpointing"]
    [saver] = _events(report, "saver")
    assert (saver["name"], saver["on"]) == ("activation_checkpointing", True)
    assert not _events(report, "oom") and not _events(report, "no_fit")
    # The kernel's record of the steps: the process's own pages (what the budget counts of it) stayed under.
    own_peak = report["own_start"] + report["steps_peak"] - report["rss_start"]
    assert own_peak <= report["budget"]

    got = torch.load(tmp_path / "savers.pt", weights_only=True)
    want = reference(report["sizes"])
    assert got.keys() == want.keys()
    for key, value in want.items():
        if not value.is_floating_point():
            assert torch.equal(got[key], value), key
            continue
        assert float((got[key] - value).abs().max()) <= 1e-10 * max(1.0, float(value.abs().max())), key


# -- oomguard train with a timm model ------------------------------------------------------------------

TIMM_ARGS = ["task=classify", "model=timm:efficientnet_b0", "imgsz=384", "batch=2", "val_batch=1",
             "workers=0", "optimizer=sgd", "momentum=0", "amp=false"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")
def test_oomguard_train_with_a_timm_model_under_its_microbatch_one_peak_finishes_with_checkpointing(
        tmp_path: Path) -> None:
    from cli_helpers import make_folder_dataset, oomguard
    from oomguard.report import load_run, write_report

    data = make_folder_dataset(tmp_path / "colours", per_class=2)
    # What one sample of this model takes without savers, in this very setting.
    probed = oomguard("probe", f"data={data}", *TIMM_ARGS, "batch=1", "savers=off", "--json", cwd=tmp_path)
    assert probed.returncode == 0, probed.stderr[-3000:]
    plain = json.loads(probed.stdout.strip().splitlines()[-1])
    start, peak = plain["start"], plain["table"][0]["peak"]
    budget = int(start + 0.75 * (peak - start)) // MB * MB  # checkpointing needs about half of the sample's

    done = oomguard("train", "--no-supervise", f"data={data}", *TIMM_ARGS, "epochs=1", "dev_samples=2",
                    f"memory_limit={budget // MB}MB", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "exp"
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    [saver] = [e for e in events if e["event"] == "saver"]
    assert (saver["name"], saver["on"]) == ("activation_checkpointing", True)
    [plan] = [e for e in events if e["event"] == "plan"]
    assert plan["savers"] == ["activation_checkpointing"]
    without, with_it = plan["trials"]
    print("budget", budget, "start", start, "plain", peak, "trials", plan["trials"])  # in a failure's output
    assert not without["fits"] and without["peak"] > budget and with_it["fits"] and with_it["peak"] <= budget
    assert events[-1]["event"] == "finish"

    write_report(run)
    html = (run / "report.html").read_text()
    assert "<dt>memory savers</dt><dd>activation_checkpointing</dd>" in html
    assert "memory savers: activation_checkpointing" in html  # the verdict
    assert "activation_checkpointing on: microbatch 1 peaked at" in html  # the plan table's saver row
    assert load_run(run).events  # the report reads the run back


if __name__ == "__main__":
    child(Path(sys.argv[1]))
