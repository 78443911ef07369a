"""Nothing a supervisor started outlives it: real processes, real SIGKILLs of the parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from oomguard.supervise.cap import CgroupCap

# A process bound to its parent (argv: the parent's pid, kernel or watchdog), that would live a minute.
BOUND = """
import sys, time
from oomguard.supervise.lifeline import die_with_parent
print(die_with_parent(int(sys.argv[1]), kernel=sys.argv[2] == "kernel"), flush=True)
time.sleep(60)
"""

# A parent that starts BOUND, says its pid and how it is bound, then waits to be killed.
PARENT = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid()), sys.argv[2]],
                         stdout=subprocess.PIPE, text=True)
print(child.pid, child.stdout.readline().strip(), flush=True)
sys.stdin.read()
"""

# ``oomguard run`` in a process of its own: supervises argv[2:], run directory argv[1].
DRIVER = """
import sys
from pathlib import Path
from oomguard.supervise import run_command
limit = int(sys.argv[2]) or None
sys.exit(run_command(sys.argv[3:], Path(sys.argv[1]), memory_limit=limit, max_restarts=0))
"""

# A command with a child of its own (in its process group), both pids in argv[1] once running.
FAMILY = """
import os, subprocess, sys, time
from pathlib import Path
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
Path(sys.argv[1]).write_text(f"{os.getpid()} {grandchild.pid}")
time.sleep(60)
"""


def gone(pid: int) -> bool:
    """The process no longer runs (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def gone_within(pids: list[int], seconds: float) -> bool:
    """Bounded polling until every pid is gone; False if one still runs after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not all(gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert process.poll() is None, "the supervisor ended before the command ran"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)
    return path.read_text()


@pytest.mark.parametrize("how", ["kernel", "watchdog"])
def test_a_bound_process_dies_within_a_second_of_its_parent(how: str) -> None:
    if how == "kernel" and not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    parent = subprocess.Popen([sys.executable, "-c", PARENT, BOUND, how], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid_text, bound = parent.stdout.readline().split()
    assert bound == how
    parent.kill()
    parent.wait()
    assert gone_within([int(pid_text)], 1.0)


def test_a_process_whose_parent_died_before_it_could_bind_kills_itself() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid now names no process: the parent "died" before the child bound to it
    orphan = subprocess.run([sys.executable, "-c", BOUND, str(dead.pid), "kernel"], capture_output=True,
                            text=True, timeout=30)
    assert orphan.returncode == -signal.SIGKILL
    assert orphan.stdout == ""


def _supervised_family(tmp_path: Path, limit: int = 0) -> tuple[subprocess.Popen[str], list[int]]:
    (tmp_path / "family.py").write_text(FAMILY)
    pids_file = tmp_path / "pids"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path / "run"), str(limit),
                               sys.executable, str(tmp_path / "family.py"), str(pids_file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pids = [int(pid) for pid in _wait_for(pids_file, driver).split()]
    return driver, pids


def test_the_commands_whole_process_group_dies_with_its_supervisor(tmp_path: Path) -> None:
    driver, pids = _supervised_family(tmp_path)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert gone_within(pids, 2.0), "the command or its child outlived its supervisor"


@pytest.mark.skipif(CgroupCap.available() is None, reason="no cgroup can be made here for the memory cap")
def test_the_cap_cgroup_is_emptied_and_removed_when_the_supervisor_dies(tmp_path: Path) -> None:
    parent = CgroupCap.available()
    assert parent is not None
    driver, pids = _supervised_family(tmp_path, limit=2 * 1000**3)
    ours = list(parent.glob(f"oomguard-{driver.pid}-*"))
    assert len(ours) == 1  # the attempt's cgroup, with the command and its child in it
    assert set(pids) <= {int(p) for p in (ours[0] / "cgroup.procs").read_text().split()}
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert gone_within(pids, 2.0)
    deadline = time.monotonic() + 2.0
    while ours[0].exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not ours[0].exists()


def test_the_keeper_ends_nothing_when_the_supervisor_ends_normally() -> None:
    from oomguard.supervise.keeper import Keeper

    keeper = Keeper.start()
    assert keeper is not None
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    keeper.watch_group(victim.pid)
    keeper.close()  # "bye", then end of file
    assert keeper.proc.returncode == 0
    assert not gone(victim.pid)
    victim.kill()
    victim.wait()
