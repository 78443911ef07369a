"""``oomguard run`` on real commands: real memory caps, real kills, real restarts."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import pytest

from oomguard.events import read_events
from oomguard.memory.sampler import COLUMNS
from oomguard.supervise import CommandNotFound, run_command
from oomguard.supervise.cap import CgroupCap

MB = 1000**2
CAP = 200 * MB

# Grows to 400 MB in 10 MB steps and holds it (a cap must kill it); with --resume it needs only 30 MB.
GROW = """
import sys, time
resume = "--resume" in sys.argv
blocks = [bytearray(10_000_000) for _ in range(3 if resume else 1)]
while not resume and len(blocks) < 40:
    blocks.append(bytearray(10_000_000))
print("holding", len(blocks) * 10, "MB", flush=True)
if not resume:
    time.sleep(10)  # the cap kills it here; if it does not, exit 3 and fail the test
    sys.exit(3)
"""

BOOM = """
print("loading the data", flush=True)
raise ValueError("boom 42")
"""

SELF_KILL = """
import os, signal, sys
if "--resume" not in sys.argv:
    os.kill(os.getpid(), signal.SIGKILL)
print("resumed with", sys.argv[1:], flush=True)
"""

PRESSURE = """
import sys
from pathlib import Path
marker = Path(sys.argv[1])
if not marker.exists():
    marker.write_text("stepped aside")
    sys.exit(75)
"""


class Lines:
    """A console that keeps what the supervisor says."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def print(self, *objects: Any) -> None:
        self.lines.append(" ".join(str(o) for o in objects))


def _script(tmp_path: Path, name: str, text: str) -> list[str]:
    path = tmp_path / name
    path.write_text(text)
    return [sys.executable, str(path)]


def _events(run_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in read_events(run_dir / "events.jsonl") if kind is None or e["event"] == kind]


def _capped_run(tmp_path: Path, use_cgroup: bool) -> Path:
    command = _script(tmp_path, "grow.py", GROW)
    run_dir = tmp_path / "run"
    console = Lines()
    status = run_command(command, run_dir, memory_limit=CAP, max_restarts=3, resume_args="--resume",
                         console=console, use_cgroup=use_cgroup)
    assert status == 0
    [kill] = _events(run_dir, "kill")
    killer = "cgroup" if use_cgroup else "poll"
    assert (kill["cause"], kill["signal"], kill["killer"]) == ("memory_kill", "SIGKILL", killer)
    assert kill["cap"] == CAP
    [restart] = _events(run_dir, "restart")
    assert (restart["cause"], restart["attempt"]) == ("memory_kill", 2)
    assert restart["argv"] == [*command, "--resume"]
    assert [e["event"] for e in _events(run_dir)] == ["start", "kill", "restart", "start", "finish"]
    assert any("over the memory cap of 200.0 MB" in line and "restarting" in line for line in console.lines)
    with open(run_dir / "memory.csv") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == COLUMNS
    assert max(int(row[1]) + int(row[2]) for row in rows[1:]) > 50 * MB  # the command's own memory, sampled
    return run_dir


def test_cap_by_polling_kills_and_restarts_with_resume_args(tmp_path: Path) -> None:
    _capped_run(tmp_path, use_cgroup=False)


@pytest.mark.skipif(CgroupCap.available() is None,
                    reason="the cgroup v1 memory controller (/sys/fs/cgroup/memory) is not writable here")
def test_cap_by_cgroup_lets_the_kernel_kill_and_cleans_up(tmp_path: Path) -> None:
    parent = CgroupCap.available()
    assert parent is not None
    before = {p.name for p in parent.glob("oomguard-*")}
    run_dir = _capped_run(tmp_path, use_cgroup=True)
    [kill] = _events(run_dir, "kill")
    assert kill["peak"] < CAP + 30 * MB  # the kernel stopped it at the cap (RSS also counts shared libraries)
    assert {p.name for p in parent.glob("oomguard-*")} == before


def test_a_bug_is_retried_once_then_reported(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    command = _script(tmp_path, "boom.py", BOOM)
    console = Lines()
    status = run_command(command, tmp_path / "run", max_restarts=5, resume_args="--resume", console=console)
    assert status == 1
    events = _events(tmp_path / "run")
    assert [e["event"] for e in events] == ["start", "kill", "restart", "start", "kill", "stop"]
    assert [e["cause"] for e in events if e["event"] == "kill"] == ["bug", "bug"]
    assert events[-1]["error"] == "ValueError: boom 42"
    assert "loading the data" in events[-1]["tail"]
    summary = console.lines[-1]
    assert summary.startswith("oomguard: stopped after 2 attempts: failed again")
    assert "ValueError: boom 42" in summary
    assert capfd.readouterr().out.count("loading the data") == 2  # the command's output passed through


def test_unexplained_kill_restarts_with_the_same_args_and_the_dir_is_reused(tmp_path: Path) -> None:
    command = _script(tmp_path, "self_kill.py", SELF_KILL)
    run_dir = tmp_path / "run"
    for _ in range(2):
        assert run_command(command, run_dir, max_restarts=2, resume_args="--resume", console=Lines()) == 0
    kills = _events(run_dir, "kill")
    assert [(k["cause"], k["signal"]) for k in kills] == [("unexplained_kill", "SIGKILL")] * 2
    assert [r["argv"] for r in _events(run_dir, "restart")] == [[*command, "--resume"]] * 2
    assert len(_events(run_dir, "finish")) == 2  # the second run appended to the first one's history


def test_gives_up_with_the_commands_status_after_max_restarts(tmp_path: Path) -> None:
    command = _script(tmp_path, "self_kill.py", SELF_KILL)
    console = Lines()
    status = run_command(command, tmp_path / "run", max_restarts=1, resume_args="--other", console=console)
    assert status == 137
    assert [e["event"] for e in _events(tmp_path / "run")][-1] == "stop"
    assert "no restarts left (max_restarts=1)" in console.lines[-1]


def test_the_same_memory_kill_with_the_same_command_three_times_stops(tmp_path: Path) -> None:
    # A command restarted as it was cannot change what it needs: the third identical memory kill ends it.
    command = _script(tmp_path, "grow.py", GROW)
    console = Lines()
    status = run_command(command, tmp_path / "run", memory_limit=CAP, max_restarts=10, console=console,
                         use_cgroup=False)
    assert status == 137
    assert [e["cause"] for e in _events(tmp_path / "run", "kill")] == ["memory_kill"] * 3
    assert "at the same point 3 times with the same plan" in console.lines[-1]


def test_pressure_exit_restarts_without_a_kill(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    command = [*_script(tmp_path, "pressure.py", PRESSURE), str(marker)]
    assert run_command(command, tmp_path / "run", max_restarts=2, console=Lines(), cwd=tmp_path) == 0
    assert [e["event"] for e in _events(tmp_path / "run")] == ["start", "restart", "start", "finish"]
    assert _events(tmp_path / "run", "restart")[0]["cause"] == "pressure"


def test_a_missing_command_is_one_line_and_127(tmp_path: Path) -> None:
    with pytest.raises(CommandNotFound, match=r"^command not found: 'no-such-program-xyz'; check") as error:
        run_command(["no-such-program-xyz", "--flag"], tmp_path / "run", console=Lines())
    assert error.value.exit_code == 127


# Two forked children share the command's 150 MB block: 450+ MB of RSS, ~160 MB of pages. It ends once the
# supervisor's timeline has sampled the children holding it.
SHARING = """
import csv, os, sys, time
block = bytearray(b"\\x01") * (150 * 1000**2)
timeline = sys.argv[1]
children = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    children.append(pid)

def seen():
    try:
        with open(timeline) as handle:
            return any(int(row["children_rss"]) > 300 * 1000**2 for row in csv.DictReader(handle)
                       if row.get("children_rss", "").isdigit())
    except OSError:
        return False

deadline = time.monotonic() + 60
while not seen() and time.monotonic() < deadline:
    time.sleep(0.05)
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
sys.exit(0 if seen() else 4)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pages are counted by PSS on Linux")
def test_the_cap_counts_pages_the_children_share_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [*_script(tmp_path, "sharing.py", SHARING), str(run_dir / "memory.csv")]
    cap = 300 * MB
    status = run_command(command, run_dir, memory_limit=cap, max_restarts=0, console=Lines(),
                         use_cgroup=False)
    assert status == 0  # summed RSS would have been over the cap: the poll would have killed it
    assert not _events(run_dir, "kill")
    with open(run_dir / "memory.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["children_rss"]) > 300 * MB]
    assert rows and all(int(row["process_rss"]) + int(row["children_rss"]) > cap for row in rows)
    assert all(int(row["tree_memory"]) < 250 * MB for row in rows)
