"""Ctrl-C at the supervisor: the child gets one SIGINT, checkpoints, exits; the supervisor exits 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from oomguard.events import read_events

DRIVER = """
import sys
from pathlib import Path
from oomguard.supervise import run_command
sys.exit(run_command([sys.executable, sys.argv[1], sys.argv[2]], Path(sys.argv[3]), max_restarts=3))
"""

CHILD = """
import os, signal, sys, time
from pathlib import Path
folder = Path(sys.argv[1])

def checkpoint_and_stop(signum, frame):
    (folder / "checkpointed").write_text(signal.Signals(signum).name)
    sys.exit(0)

signal.signal(signal.SIGINT, checkpoint_and_stop)
(folder / "ready").write_text(str(os.getpid()))
time.sleep(30)  # "training" until the signal comes
sys.exit(5)
"""


def _wait_for(path: Path, timeout: float = 15.0) -> str:
    """Bounded polling for a file another process writes."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)
    return path.read_text()


def test_ctrl_c_stops_the_child_cleanly_and_exits_130(tmp_path: Path) -> None:
    (tmp_path / "driver.py").write_text(DRIVER)
    (tmp_path / "child.py").write_text(CHILD)
    run_dir = tmp_path / "run"
    supervisor = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "child.py"),
                                   str(tmp_path), str(run_dir)], stderr=subprocess.PIPE, text=True)
    try:
        child_pid = int(_wait_for(tmp_path / "ready"))
        os.kill(supervisor.pid, signal.SIGINT)
        _, stderr = supervisor.communicate(timeout=15)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    assert supervisor.returncode == 130
    assert (tmp_path / "checkpointed").read_text() == "SIGINT"  # the child's own handler ran
    assert not psutil.pid_exists(child_pid)
    assert "oomguard: interrupted (SIGINT); the run can be resumed" in stderr
    events = list(read_events(run_dir / "events.jsonl"))
    assert [e["event"] for e in events] == ["start", "stop"]
    assert (events[-1]["cause"], events[-1]["exit_code"]) == ("interrupted", 130)
