"""RunLock: one training process per run directory, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from oomguard.checkpoint import RunLock, lock
from oomguard.errors import RunDirError

CHILD = """
import os, sys
from oomguard.checkpoint.lock import RunLock
from oomguard.errors import RunDirError

mode, run = sys.argv[1], sys.argv[2]
if mode == "try":
    try:
        RunLock(run).acquire()
        print("acquired")
    except RunDirError as error:
        print(f"refused: {error}")
else:  # hold, or hold-fork: keep the lock (and a forked child) until stdin closes or a kill
    RunLock(run).acquire()
    child = os.fork() if mode == "hold-fork" else 0
    if mode == "hold-fork" and child == 0:
        os.write(1, b"child ready\\n")  # one write: the at-fork hook has run by the time fork() returns here
        sys.stdin.read()
        os._exit(0)
    os.write(1, f"held {os.getpid()} {child}\\n".encode())  # one write: never split by the child's line
    sys.stdin.read()
"""

posix_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX processes")


def run_child(mode: str, run: Path) -> str:
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(run)], capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout.strip()


def start_holder(mode: str, run: Path) -> tuple[subprocess.Popen[str], int, int]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode, str(run)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = [proc.stdout.readline().split() for _ in range(2 if mode == "hold-fork" else 1)]
    # The lock is held once the "held" line arrives (and a forked child is ready after its own line).
    _held, pid, child = next(line for line in lines if line[0] == "held")
    return proc, int(pid), int(child)


def test_second_process_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        assert (tmp_path / ".oomguard.lock").read_text() == f"{os.getpid()}\n"
        assert run_child("try", tmp_path) == (
            f"refused: run directory {tmp_path} is in use by process {os.getpid()} (lock file "
            f".oomguard.lock); wait for it to finish or stop it, or choose another name= for a new run"
        )
    assert not (tmp_path / ".oomguard.lock").exists()
    assert run_child("try", tmp_path) == "acquired"


def test_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    proc, pid, _ = start_holder("hold", tmp_path)
    try:
        with pytest.raises(RunDirError, match=f"in use by process {pid} "):
            RunLock(tmp_path).acquire()
    finally:
        proc.kill()
        proc.wait()
    assert (tmp_path / ".oomguard.lock").read_text() == f"{pid}\n"  # stale file left behind
    with RunLock(tmp_path) as taken:
        assert taken.held and (tmp_path / ".oomguard.lock").read_text() == f"{os.getpid()}\n"


@posix_only
def test_forked_children_of_a_killed_holder_do_not_keep_the_lock(tmp_path: Path) -> None:
    proc, _pid, child = start_holder("hold-fork", tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        os.kill(child, 0)  # the forked child (a DataLoader worker, say) is still alive...
        with RunLock(tmp_path):  # ...and the restarted run gets the lock anyway
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        assert proc.stdin is not None
        proc.stdin.close()


def test_a_second_lock_in_the_same_process_is_refused(tmp_path: Path) -> None:
    first = RunLock(tmp_path).acquire()
    with pytest.raises(RunDirError, match=rf"in use by this process \({os.getpid()}\) already"):
        RunLock(tmp_path).acquire()
    first.release()
    with RunLock(tmp_path):
        pass


def test_without_fcntl_a_lock_file_of_a_dead_pid_is_taken_over(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock, "fcntl", None)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead = int(finished.stdout)
    (tmp_path / ".oomguard.lock").write_text(f"{dead}\n")
    with RunLock(tmp_path):
        assert (tmp_path / ".oomguard.lock").read_text() == f"{os.getpid()}\n"
    alive = os.getppid()
    (tmp_path / ".oomguard.lock").write_text(f"{alive}\n")
    with pytest.raises(RunDirError, match=f"in use by process {alive} "):
        RunLock(tmp_path).acquire()
