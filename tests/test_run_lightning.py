"""A LightningCLI script under ``oomguard run``: SIGKILLed, it is fitted again from its own last checkpoint.

The script is a plain ``LightningCLI`` (its ``fit`` takes ``--ckpt_path``) with
Lightning's default checkpointing under ``--trainer.default_root_dir``, trained
by the real Lightning; the kill is a real SIGKILL.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import sys
import zipfile
from functools import partial
from pathlib import Path

import pytest

from run_helpers import attempt_pid, events, finish, start_run, user_env, wait_for
from trainer_scripts import LIGHTNING_CLI

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lightning") is None or importlib.util.find_spec("jsonargparse") is None,
    reason="lightning with its CLI (jsonargparse) is not installed: pip install 'oomguard[lightning]'")


EPOCHS = 5


def _whole_checkpoint(root: Path, sup: Path) -> int | None:
    """The pid of attempt 1 once it has saved a whole ``.ckpt`` (Lightning writes it in place)."""
    if any(zipfile.is_zipfile(path) for path in root.rglob("*.ckpt")):
        return attempt_pid(sup, 1)
    return None


def test_a_lightning_cli_fit_killed_mid_run_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "train_pl.py").write_text(LIGHTNING_CLI)
    command = [sys.executable, "train_pl.py", "fit", "--trainer.max_epochs", str(EPOCHS),
               "--trainer.default_root_dir", "root", "--trainer.accelerator", "cpu",
               "--trainer.enable_progress_bar", "false", "--data.batch_size", "8"]
    root, sup = tmp_path / "root", tmp_path / "sup"
    process = start_run(["--run-dir", "sup", "--", *command], tmp_path, user_env())
    pid = wait_for(partial(_whole_checkpoint, root, sup), process, "a checkpoint")
    os.kill(pid, signal.SIGKILL)

    output = finish(process, tmp_path).replace("\n", "")
    [restart] = events(sup, "restart")
    checkpoint = Path(restart["resume_from"])
    assert checkpoint.parent.parent.parent == root / "lightning_logs"  # version_N/checkpoints/*.ckpt
    assert restart["argv"] == [*command, "--ckpt_path", str(checkpoint)]
    match = re.fullmatch(r"epoch=(\d+)-step=\d+\.ckpt", checkpoint.name)
    assert match is not None
    saved = int(match.group(1))
    trained = [tuple(int(v) for v in line.split()) for line in (root / "epochs.txt").read_text().splitlines()]
    second = [epoch for attempt, epoch in trained if attempt == 2]
    assert second == list(range(saved + 1, EPOCHS))  # continued after the checkpoint's epoch
    assert [epoch for attempt, epoch in trained if attempt == 1][: saved + 1] == list(range(saved + 1))
    resumed = re.escape(f"lightning preset resumes from {checkpoint}")
    assert re.search(rf"restarting( in [0-9.]+s)?: {resumed}", output)
    assert "Restoring states from the checkpoint path" in output
