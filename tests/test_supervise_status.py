"""``oomguard status``: the state of a run from its directory, for runs in every state."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oomguard import events as ev
from oomguard.cli.status import status_lines
from oomguard.errors import RunDirError
from oomguard.events import EventLog
from oomguard.supervise.status import read_status

HEADER = "time,process_rss,children_rss,system_available,device_allocated,device_reserved,used,step,rank\n"
MB = 1000**2


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _run(tmp_path: Path, pid: int, supervisor: int | None, now: float) -> EventLog:
    """A run directory whose attempt 2 started 100 s before ``now`` (this process was running by then)."""
    (tmp_path / "config.yaml").write_text("epochs: 4\nbatch: 64\n")
    log = EventLog(tmp_path / "events.jsonl")
    log.emit(ev.Start(pid=pid, attempt=2, resume=True, device="cpu", budget=2000 * MB, config={}, epoch=1,
                      step=30, supervisor=supervisor, steps_per_epoch=25), at=now - 100)
    log.emit(ev.Plan(microbatch=16, eval_microbatch=64, ceiling=32, budget=2000 * MB, fit={}, table=[],
                     eval_fit=None, eval_table=[], optimizer_peak=0, snapshot_bytes=0, start=16, seconds=1.0),
             at=now - 95)
    return log


def test_a_running_run_shows_its_progress_pace_and_time_left(tmp_path: Path) -> None:
    now = time.time() + 100
    _run(tmp_path, os.getpid(), None, now)
    rows = "".join(f"{now - 60 + i},{900 * MB},0,{8000 * MB},0,0,{(900 + i) * MB},{40 + i},0\n"
                   for i in range(31))
    (tmp_path / "memory.csv").write_text(HEADER + rows)
    (tmp_path / "results.csv").write_text("epoch,train_loss,peak_memory_mb,seconds\n1,2.0,1200.0,50\n")
    status = read_status(tmp_path, now=now)
    assert (status.state, status.attempt, status.pid) == ("running", 2, os.getpid())
    assert (status.step, status.total_steps, status.epoch, status.epochs) == (70, 100, 3, 4)
    assert status.pace == pytest.approx(1.0)  # 30 steps in the last 30 s
    assert status.seconds_left == pytest.approx(30.0)  # 30 steps left
    assert (status.microbatch, status.eval_microbatch, status.batch) == (16, 64, 64)
    assert status.peak == 1200 * MB  # epoch 1's, above the current attempt's samples
    assert (status.budget, status.used) == (2000 * MB, 930 * MB)
    lines = status_lines(status)
    assert lines[0] == f"{tmp_path}: running (attempt 2, pid {os.getpid()})"
    assert lines[1] == "  epoch 3/4, step 70/100, 1 steps/s, about 30.0s left at this pace"
    assert lines[2] == "  plan: microbatch 16 (batch 64), eval microbatch 64"
    assert lines[3] == "  memory: peak 1.2 GB of its 2.0 GB budget (60%); now 930.0 MB used, 8.0 GB available"
    assert lines[4] == "  last events:" and "plan" in lines[-1]


def test_a_run_whose_child_died_shows_the_supervisors_restart_and_its_wait(tmp_path: Path,
                                                                            dead_pid: int) -> None:
    now = time.time() + 100
    log = _run(tmp_path, dead_pid, os.getpid(), now)
    log.emit(ev.Kill(cause="unexplained_kill", signal="SIGKILL", exit_code=None, attempt=2, step=None,
                     reason="killed", error=None, peak=0, available=None, limit=None, seconds=3.0,
                     lost_seconds=0.0, startup=True), at=now - 2)
    log.emit(ev.Restart(cause="unexplained_kill", attempt=3, reason="killed", wait=8.0), at=now - 2)
    status = read_status(tmp_path, now=now)
    assert (status.state, status.detail) == ("restarting", "attempt 3 starts in 6s")
    kill_line = status_lines(status)[-2]
    assert kill_line.endswith("unexplained kill, signal SIGKILL, attempt 2, in start-up, lost 0.0s")
    assert read_status(tmp_path, now=now + 10).detail == "attempt 3 is starting"


def test_a_run_that_stepped_aside_waits_for_memory_while_its_supervisor_runs(tmp_path: Path,
                                                                             dead_pid: int) -> None:
    now = time.time() + 100
    log = _run(tmp_path, dead_pid, os.getpid(), now)
    log.emit(ev.Stop(cause="pressure", reason="memory pressure", exit_code=75, need=3000 * MB), at=now - 1)
    status = read_status(tmp_path, now=now)
    assert status.state == "waiting for memory"
    assert status.detail == "other programs hold the memory it needs (it needs 3.0 GB available)"


def test_a_run_nothing_runs_any_more_is_stopped_and_says_why(tmp_path: Path, dead_pid: int) -> None:
    now = time.time() + 100
    log = _run(tmp_path, dead_pid, dead_pid, now)
    assert read_status(tmp_path, now=now).state == "stopped"  # killed with its supervisor: no stop event
    assert "resume it" in read_status(tmp_path, now=now).detail
    log.emit(ev.Stop(cause="bug", reason="failed again with an error", exit_code=1), at=now - 1)
    assert (read_status(tmp_path, now=now).state, read_status(tmp_path, now=now).detail) == \
        ("stopped", "failed again with an error")


def test_a_finished_run_says_so_and_how_long_it_took(tmp_path: Path, dead_pid: int) -> None:
    now = time.time() + 100
    log = _run(tmp_path, dead_pid, None, now)
    log.emit(ev.Finish(seconds=30.0, epochs=4), at=now + 30)  # the last attempt took 30 s, the run 130 s
    status = read_status(tmp_path, now=now)
    assert (status.state, status.epoch, status.seconds) == ("finished", 4, 130.0)
    assert status_lines(status)[1].endswith("took 2m10s")


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match=r"^not a run directory: .* does not exist; give the folder"):
        read_status(tmp_path / "nope")
