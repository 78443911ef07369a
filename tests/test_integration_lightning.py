"""``OomguardCallback`` in the real Lightning Trainer: a leak, a memory squeeze, a kill and a resume."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import zipfile
from pathlib import Path

import pytest

from cgroup_helpers import MB, join, memory_cgroup, start_balloon
from oomguard.codes import EXIT_PRESSURE
from run_helpers import attempt_pid, events, finish, start_run, user_env, wait_for
from trainer_scripts import LIGHTNING, LIGHTNING_CLI, run_script

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lightning") is None,
                                reason="lightning is not installed: pip install 'oomguard[lightning]'")


def test_a_metric_kept_with_its_graph_is_a_leak_event(tmp_path: Path) -> None:
    done = run_script(LIGHTNING, ["--root", "lit", "--max_steps", "300", "--leak"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (leak,) = events(tmp_path / "lit" / "oomguard", "leak")
    assert str(leak["diagnosis"]).startswith("+1 scalar float32 tensor on cpu with grad_fn per step")
    assert (tmp_path / "lit" / "oomguard" / "report.html").is_file()


def test_a_squeeze_saves_last_ckpt_stops_with_75_and_the_fit_resumes_from_it(tmp_path: Path) -> None:
    with memory_cgroup(1536 * MB) as group:
        balloon = start_balloon(group, 600 * MB)
        try:
            squeezed = run_script(LIGHTNING, ["--root", "lit", "--max_steps", "40", "--min_available", "1GB"],
                                  tmp_path, env={"OOMGUARD_SUPERVISED": "1"}, preexec=lambda: join(group))
        finally:
            balloon.kill()
            balloon.wait()
    assert squeezed.returncode == EXIT_PRESSURE, squeezed.stderr[-3000:]
    run = tmp_path / "lit" / "oomguard"
    actions = [e["action"] for e in events(run, "pressure")]
    assert actions[0] == "checkpoint" and actions[-1] == "exit"
    (stop,) = events(run, "stop")
    assert stop["cause"] == "pressure"
    last = tmp_path / "lit" / "checkpoints" / "last.ckpt"
    assert last.is_file()

    resumed = run_script(LIGHTNING, ["--root", "lit", "--max_steps", "60", "--ckpt_path", str(last)],
                         tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "trained to step 60" in resumed.stdout
    start = events(run, "start")[-1]
    assert start["resume"] is True and start["step"] == stop["step"]


def test_a_sigkilled_cli_fit_with_the_callback_under_oomguard_run_resumes_into_one_run_dir(tmp_path: Path,
                                                                                          ) -> None:
    (tmp_path / "train_pl.py").write_text(LIGHTNING_CLI)
    callback = "--trainer.callbacks+=oomguard.integrations.lightning.OomguardCallback"
    command = [sys.executable, "train_pl.py", "fit", "--trainer.max_epochs", "3",
               "--trainer.default_root_dir", "root", "--trainer.accelerator", "cpu",
               "--trainer.enable_progress_bar", "false", "--data.batch_size", "8", callback]
    process = start_run(["--run-dir", "sup", "--", *command], tmp_path, user_env())
    pid = wait_for(lambda: attempt_pid(tmp_path / "sup", 1) if any(
        zipfile.is_zipfile(path) for path in (tmp_path / "root").rglob("*.ckpt")) else None,
        process, "a checkpoint")
    os.kill(pid, signal.SIGKILL)
    finish(process, tmp_path)
    sup = tmp_path / "sup"  # the callback writes into oomguard run's directory, not root/oomguard
    assert not (tmp_path / "root" / "oomguard").exists()
    [restart] = events(sup, "restart")
    assert str(restart["resume_from"]).endswith(".ckpt")
    assert [s["attempt"] for s in events(sup, "start")] == [1, 2] and events(sup, "finish")
    assert (sup / "report.html").is_file()
