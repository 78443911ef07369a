"""The Guard as the whole protection of a hand-written loop: leaks, pressure, checkpoints and exact resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from oomguard import Guard, MemoryPressureError, ResumableLoader
from oomguard.checkpoint import load_checkpoint
from oomguard.codes import EXIT_PRESSURE
from oomguard.devices.cpu import release_host_memory
from oomguard.events import read_events

MB = 1024**2


def leaky_loop(run_dir: Path, keep_graphs: bool, steps: int = 400) -> list[dict[str, object]]:
    """A plain Guard loop; ``keep_graphs``: a metric kept with its graph each step (~0.25 MB)."""
    release_host_memory()  # heap pages freed by earlier tests would hide the first steps' growth
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
    kept: list[object] = []

    def loss_fn(net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        loss = torch.nn.functional.cross_entropy(net(batch[0]), batch[1])
        # The classic leak: a running metric stored with its graph (the backward frees only the loss's).
        metric = torch.nn.functional.cross_entropy(net(batch[0]), batch[1])
        kept.append(metric if keep_graphs else metric.item())
        return loss

    guard = Guard(model, optimizer, run_dir=run_dir, microbatch=64, checkpoint_every=None)
    try:
        for _ in range(steps):
            guard.step((x, y), loss_fn)
            if any(e["event"] == "leak" for e in read_events(run_dir / "events.jsonl")):
                break
    finally:
        guard.close()
    return [e for e in read_events(run_dir / "events.jsonl") if e["event"] == "leak"]


def test_a_loss_kept_with_its_graph_is_a_leak_event_with_its_diagnosis(tmp_path: Path) -> None:
    (leak,) = leaky_loop(tmp_path / "run", keep_graphs=True)
    assert isinstance(leak["step"], int) and leak["step"] <= 400
    assert 0.15 < leak["mb_per_step"] < 0.6  # type: ignore[operator]
    assert str(leak["diagnosis"]).startswith("+1 scalar float32 tensor on cpu with grad_fn per step")


def test_the_same_loop_without_the_leak_has_no_leak_event(tmp_path: Path) -> None:
    assert leaky_loop(tmp_path / "run", keep_graphs=False) == []


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Dropout(0.2), torch.nn.ReLU(),
                               torch.nn.Linear(32, 3))


def mse(model: torch.nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])


def data(n: int = 96) -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(n, 8, generator=generator),
                         torch.randint(0, 3, (n,), generator=generator))


def test_restore_continues_at_the_next_sample_with_the_same_draws(tmp_path: Path) -> None:
    """Stopped after 5 steps and restored into fresh objects: the same weights as 12 steps in one go."""
    def run(stop_after: int | None, run_dir: Path) -> dict[str, torch.Tensor]:
        model = net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
        loader = ResumableLoader(data(), batch_size=16, seed=3)
        guard = Guard(model, optimizer, run_dir=run_dir, microbatch=5, scheduler=scheduler, device="cpu")
        state = {"epoch": 0, "loader": loader, "seen": 0}
        guard.restore(state)
        steps = 0
        for epoch in range(state["epoch"], 2):
            state["epoch"] = epoch
            for batch in loader:
                guard.step(batch, mse)
                scheduler.step()
                state["seen"] += len(batch[0])
                steps += 1
                if stop_after is not None and steps == stop_after:
                    guard.save()
                    guard.close()
                    return {}
        guard.save()
        guard.close()
        assert state["seen"] == 192
        return {k: v.clone() for k, v in model.state_dict().items()}

    whole = run(None, tmp_path / "whole")
    run(5, tmp_path / "parts")
    resumed = run(None, tmp_path / "parts")  # 7 more steps: the rest of epoch 0 and all of epoch 1
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    again = run(None, tmp_path / "parts")  # from the checkpoint after the last epoch: nothing left to train
    assert all(torch.equal(whole[k], again[k]) for k in whole)
    last = load_checkpoint(tmp_path / "parts" / "weights" / "last.pt", require_checksum=True)
    assert last["step"] == 12 and last["extra"]["loop_state"]["values"] == {"epoch": 2, "seen": 192}  # done


def test_a_plain_dataloader_restarts_its_epoch_and_says_so_once(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    model = net()
    guard = Guard(model, torch.optim.SGD(model.parameters(), lr=0.1), run_dir=tmp_path, microbatch=8)
    loader = DataLoader(data(), batch_size=16)
    state = {"epoch": 0, "loader": loader}
    assert guard.restore(state) is False
    for batch in loader:
        guard.step(batch, mse)
    guard.save()
    guard.close()
    again = Guard(model, torch.optim.SGD(model.parameters(), lr=0.1), run_dir=tmp_path, microbatch=8)
    assert again.restore(state) is True
    again.close()
    err = capsys.readouterr().err
    assert err.count("state['loader'] is a DataLoader without state_dict(): a resume starts its epoch") == 2


def test_pressure_that_persists_checkpoints_then_raises_without_a_supervisor(tmp_path: Path) -> None:
    model = net()
    guard = Guard(model, torch.optim.SGD(model.parameters(), lr=0.1), run_dir=tmp_path, microbatch=4,
                  min_available="100000GB")  # more than any machine has: pressure from the first step on
    batch = next(iter(DataLoader(data(), batch_size=16)))
    with pytest.raises(MemoryPressureError) as err:
        for _ in range(20):
            guard.step(batch, mse)
    guard.close()
    assert "even at microbatch 1; checkpointed at step" in str(err.value)
    kinds = [e["event"] for e in read_events(tmp_path / "events.jsonl")
             if e["event"] in ("pressure", "checkpoint", "shrink")]
    assert kinds[:3] == ["pressure", "checkpoint", "shrink"] and kinds[-2:] == ["pressure", "checkpoint"]
    assert (tmp_path / "weights" / "last.pt").is_file()


OWN_LOOP = """
import json, sys, torch
from torch.utils.data import TensorDataset
from oomguard import Guard, ResumableLoader

run_dir, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.manual_seed(0)
torch.use_deterministic_algorithms(True)
model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Dropout(0.2), torch.nn.ReLU(),
                            torch.nn.Linear(64, 4))
optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
generator = torch.Generator().manual_seed(1)
dataset = TensorDataset(torch.randn(2048, 16, generator=generator),
                        torch.randint(0, 4, (2048,), generator=generator))
loader = ResumableLoader(dataset, batch_size=32, seed=5)
guard = Guard(model, optimizer, run_dir=run_dir, microbatch=8, checkpoint_every="0.2s", device="cpu")
state = {"epoch": 0, "loader": loader}
guard.restore(state)

def loss_fn(net, batch):
    return torch.nn.functional.cross_entropy(net(batch[0]), batch[1])

for epoch in range(state["epoch"], epochs):
    state["epoch"] = epoch
    for batch in loader:
        guard.step(batch, loss_fn)
guard.save()
guard.close()
torch.save(model.state_dict(), out)
"""


@pytest.mark.slow
def test_a_guard_loop_under_oomguard_run_killed_at_random_moments_is_bit_identical(tmp_path: Path) -> None:
    """The Guard writes into oomguard run's directory; each restart resumes through guard.restore."""
    script = tmp_path / "train.py"
    script.write_text(OWN_LOOP)
    whole = subprocess.run([sys.executable, str(script), str(tmp_path / "whole"), str(tmp_path / "whole.pt"),
                            "6"], capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr

    sup = tmp_path / "sup"
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "oomguard", "run", "--max-restarts", "10", "--run-dir", str(sup),
         "--", sys.executable, str(script), str(tmp_path / "ignored"), str(tmp_path / "killed.pt"), "6"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rng = random.Random(7)
    killed = 0
    try:
        while killed < 4 and supervisor.poll() is None:
            log = list(read_events(sup / "events.jsonl"))
            starts = [e for e in log if e["event"] == "start"]
            saved = [e for e in log
                     if e["event"] == "checkpoint" and starts and e["time"] > starts[-1]["time"]]
            if len(starts) == killed + 1 and saved:  # this attempt resumed and checkpointed
                time.sleep(rng.uniform(0.0, 0.6))  # a random moment of this attempt, not a synchronisation
                try:
                    os.kill(int(starts[-1]["pid"]), signal.SIGKILL)
                except ProcessLookupError:
                    break
                killed += 1
            time.sleep(0.02)  # polling the run's files
        out, err = supervisor.communicate(timeout=300)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    assert supervisor.returncode == 0, out + err
    assert killed >= 3
    kills = [e for e in read_events(sup / "events.jsonl") if e["event"] == "kill"]
    assert len(kills) == killed and {k["cause"] for k in kills} == {"unexplained_kill"}
    assert err.count("resuming ") == killed and not (tmp_path / "ignored").exists()  # the Guard used sup
    a, b = torch.load(tmp_path / "whole.pt"), torch.load(tmp_path / "killed.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)



def test_a_supervised_guard_loop_exits_75_on_pressure(tmp_path: Path) -> None:
    code = ("import torch\nfrom oomguard import Guard\n"
            "m = torch.nn.Linear(4, 2)\n"
            f"g = Guard(m, torch.optim.SGD(m.parameters(), lr=0.1), run_dir={str(tmp_path)!r}, microbatch=1,"
            " min_available='100000GB')\n"
            "for _ in range(50):\n    g.step(torch.randn(8, 4), lambda net, b: net(b).pow(2).mean())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OOMGUARD_SUPERVISED": "1"})
    assert done.returncode == EXIT_PRESSURE, done.stderr
    stop = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "stop"]
    assert [s["cause"] for s in stop] == ["pressure"] and json.dumps(stop[0]["need"]).isdigit()
