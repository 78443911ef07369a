"""A SIGKILL at any instant of a save leaves a complete, verifiable checkpoint (real processes)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from oomguard.checkpoint import CheckpointStore

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX processes")]

# Saves steps 1 and 2, then, for kill point k = 1, 2, ...: forks a child that saves step 3 and
# SIGKILLs itself at its k-th file operation (fsync, link, rename, unlink, and the 1st and 20th write
# into each new file); then inspects what is on disk and saves step 4 as a resumed run would.
# Ends at the first k the save outlives.
EVERY_INSTANT = """
import json, os, shutil, signal, sys
import torch
from oomguard.checkpoint import CheckpointStore
from oomguard.checkpoint import checksummed as files

weights = sys.argv[1]

def quiet(message):
    pass

def state(step):
    return {"model": {"w": torch.full((3000,), float(step))}, "epoch": 0, "step": step}

def arm(kill_at):
    calls = [0]
    writes = {}

    def count():
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    for name in ("replace", "fsync", "link", "unlink"):
        def hooked(*args, _real=getattr(os, name), **kwargs):
            count()
            return _real(*args, **kwargs)
        setattr(os, name, hooked)
    real_write = files.HashingWriter.write

    def write(self, data):
        writes[id(self)] = writes.get(id(self), -1) + 1
        if writes[id(self)] in (0, 20):
            count()
        return real_write(self, data)
    files.HashingWriter.write = write

results = []
kill_at = 0
while True:
    kill_at += 1
    shutil.rmtree(weights, ignore_errors=True)
    store = CheckpointStore(weights, keep=2, console=quiet)
    store.save(state(1), 1, best=True)
    store.save(state(2), 2)
    pid = os.fork()
    if pid == 0:
        arm(kill_at)
        CheckpointStore(weights, keep=2, console=quiet).save(state(3), 3, best=True)
        os._exit(0)
    killed = os.WIFSIGNALED(os.waitpid(pid, 0)[1])
    record = {"kill_at": kill_at, "killed": killed}
    try:
        store = CheckpointStore(weights, keep=2, console=quiet)
        latest, _path = store.load_latest()
        record["latest"] = latest["step"]
        record["latest_intact"] = bool(torch.equal(latest["model"]["w"], state(latest["step"])["model"]["w"]))
        record["last"] = store.load(store.last)["step"]
        record["best"] = store.load(store.best)["step"]
        record["resaved"] = store.save(state(4), 4).ok
        record["after"] = sorted(os.listdir(weights))
    except Exception as error:
        record["error"] = repr(error)
    results.append(record)
    if not killed:
        break
print(json.dumps(results))
"""

# Saves step after step (resuming from the newest good checkpoint), printing each finished step.
SAVE_FOREVER = """
import sys
import torch
from oomguard.checkpoint import CheckpointStore

store = CheckpointStore(sys.argv[1], keep=2, console=lambda message: None)
found = store.load_latest()
step = found[0]["step"] + 1 if found else 1
while True:
    store.save({"model": {"w": torch.full((200_000,), float(step))}, "step": step}, step, best=step % 5 == 0)
    print(step, flush=True)
    step += 1
"""


def test_kill_at_every_file_operation_of_a_save_leaves_a_verifiable_checkpoint(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", EVERY_INSTANT, str(tmp_path / "weights")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) > 15 and all(r["killed"] for r in results[:-1]) and not results[-1]["killed"]
    published = False
    for record in results:
        assert "error" not in record, record
        assert record["latest"] in (2, 3) and record["latest_intact"], record
        assert record["last"] in (2, 3) and record["best"] in (1, 3) and record["resaved"], record
        published = published or record["latest"] == 3
        assert record["latest"] == (3 if published else 2), record  # never goes back once published
        saves = [name for name in record["after"] if name.startswith("ckpt-")]
        assert len(saves) == 4 and "ckpt-000000004.pt" in saves, record  # 2 checkpoints + sidecars
        assert not [name for name in record["after"] if ".tmp-" in name], record
    assert results[-1]["latest"] == 3 and results[-1]["last"] == 3 and results[-1]["best"] == 3


def test_random_sigkills_of_a_saving_process_always_leave_the_last_finished_save(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    store = CheckpointStore(weights, console=lambda message: None)
    chance = random.Random(20240611)
    newest = 0
    for _kill in range(3):
        proc = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(weights)], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout is not None
        finished = [int(proc.stdout.readline())]  # it is saving now
        assert finished[0] == newest + 1  # resumed right after the previous kill's newest checkpoint
        time.sleep(chance.uniform(0.0, 0.3))  # a random instant to kill at, not a synchronisation
        proc.kill()
        finished += [int(line) for line in proc.communicate()[0].split()]
        state, _path = store.load_latest()
        newest = state["step"]
        assert newest >= max(finished)  # every save that returned survived the kill
        assert torch.equal(state["model"]["w"], torch.full((200_000,), float(newest)))
        assert max(finished) <= store.load(store.last)["step"] <= newest
