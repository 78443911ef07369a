"""``OomguardCallback`` in the real Hugging Face Trainer: a leak, a memory squeeze, a kill and a resume."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cgroup_helpers import MB, join, memory_cgroup, start_balloon
from oomguard.codes import EXIT_PRESSURE
from oomguard.events import read_events
from run_helpers import events
from trainer_scripts import HUGGING_FACE, run_script

pytestmark = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                reason="transformers is not installed: pip install 'oomguard[transformers]'")


def test_a_metric_kept_with_its_graph_is_a_leak_event(tmp_path: Path) -> None:
    done = run_script(HUGGING_FACE, ["--output_dir", "out", "--max_steps", "250", "--leak"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (leak,) = events(tmp_path / "out" / "oomguard", "leak")
    assert "float32 tensor on cpu with grad_fn per step" in str(leak["diagnosis"])  # kept with its graph
    assert "memory grows" in done.stderr and (tmp_path / "out" / "oomguard" / "report.html").is_file()


def test_a_squeeze_saves_a_checkpoint_stops_with_75_and_the_trainer_resumes_from_it(tmp_path: Path) -> None:
    with memory_cgroup(1536 * MB) as group:
        balloon = start_balloon(group, 600 * MB)
        try:
            squeezed = run_script(HUGGING_FACE, ["--output_dir", "out", "--max_steps", "40",
                                                 "--min_available", "1GB"], tmp_path,
                                  env={"OOMGUARD_SUPERVISED": "1"}, preexec=lambda: join(group))
        finally:
            balloon.kill()
            balloon.wait()
    assert squeezed.returncode == EXIT_PRESSURE, squeezed.stderr[-3000:]
    run = tmp_path / "out" / "oomguard"
    actions = [e["action"] for e in events(run, "pressure")]
    assert actions[0] == "checkpoint" and actions[-1] == "exit"
    (stop,) = events(run, "stop")
    assert stop["cause"] == "pressure" and isinstance(stop["need"], int)
    saved = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "out").glob("checkpoint-*"))
    assert saved and saved[-1] == stop["step"]  # the Trainer saved at the step it stopped

    resumed = run_script(HUGGING_FACE, ["--output_dir", "out", "--max_steps", str(saved[-1] + 10),
                                        "--resume_from_checkpoint", f"out/checkpoint-{saved[-1]}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"trained to step {saved[-1] + 10}" in resumed.stdout
    start = events(run, "start")[-1]
    assert start["resume"] is True and start["step"] == saved[-1]


def test_a_sigkilled_trainer_under_oomguard_run_resumes_into_one_run_directory(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(HUGGING_FACE)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "oomguard", "run", "--run-dir", "sup", "--", sys.executable, "train.py",
         "--output_dir", "out", "--max_steps", "40", "--save_steps", "20"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "out" / "checkpoint-20" / "trainer_state.json").is_file():
            assert supervisor.poll() is None and time.monotonic() < deadline, "no checkpoint-20"
            time.sleep(0.05)  # polling the Trainer's files
        pid = next(e["pid"] for e in read_events(tmp_path / "sup" / "events.jsonl") if e["event"] == "start")
        os.kill(int(str(pid)), signal.SIGKILL)
        out, _ = supervisor.communicate(timeout=300)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    assert supervisor.returncode == 0, out[-3000:]
    assert "out/checkpoint-20" in out, out[-3000:]  # the restart resumed from the Trainer's checkpoint
    # The callback wrote into oomguard run's directory (its events beside the supervisor's), not its own.
    assert not (tmp_path / "out" / "oomguard").exists()
    sup = tmp_path / "sup"
    assert [s["attempt"] for s in events(sup, "start")] == [1, 2] and events(sup, "finish")
    assert (sup / "report.html").is_file()
