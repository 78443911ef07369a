"""``oomguard run`` in a real subprocess, and the attempts it starts, for end-to-end tests of its presets."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oomguard.events import read_events

#: Variables by which libraries believe they run under pytest or CI and change where they write.
_TEST_MARKERS = ("PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER", "GITHUB_ACTIONS")


def user_env(**extra: str) -> dict[str, str]:
    """This environment as a user's shell would have it (no pytest markers), plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if k not in _TEST_MARKERS}, **extra}


def start_run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``python -m oomguard run ARGS`` in ``cwd``; what it and its command print goes to ``cwd/out.txt``."""
    with open(cwd / "out.txt", "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "oomguard", "run", *args], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def events(run_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in read_events(run_dir / "events.jsonl") if kind is None or e["event"] == kind]


def attempt_pid(run_dir: Path, attempt: int) -> int | None:
    """The pid of the command's ``attempt`` (from its ``start`` event), once it has started."""
    return next((int(e["pid"]) for e in events(run_dir, "start") if e["attempt"] == attempt), None)


def wait_for(condition: Callable[[], Any], process: subprocess.Popen[bytes], what: str,
             timeout: float = 240) -> Any:
    """Poll ``condition`` until it holds (its value) while ``process`` runs; else fail: no ``what``."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert process.poll() is None, f"oomguard run ended (status {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} in {timeout:.0f} s"
        time.sleep(0.01)  # polling files another process writes
    return value


def finish(process: subprocess.Popen[bytes], cwd: Path, timeout: float = 300) -> str:
    """Wait for ``process`` to exit 0; what it printed."""
    process.wait(timeout=timeout)
    output = (cwd / "out.txt").read_text(errors="replace")
    assert process.returncode == 0, output[-3000:]
    return output
