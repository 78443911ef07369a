"""Real memory limits for tests: a cgroup v1 memory cgroup, and a balloon process that fills it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from oomguard import host

MB = 1024**2

BALLOON = """
import sys
size = int(sys.argv[1])
block = bytearray(size)
block[::4096] = b"\\x01" * len(range(0, size, 4096))  # touch every page: resident, charged to the cgroup
print("ready", flush=True)
sys.stdin.read()  # hold it until the test closes stdin
"""


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[Path]:
    """A cgroup v1 memory cgroup of ``limit`` bytes under this process's own; its processes killed after.

    Skips the test where the controller is absent or not writable.
    """
    parent, _ = host.own_cgroup_dirs()
    if parent is None or not os.access(parent, os.W_OK):
        pytest.skip("the cgroup v1 memory controller is not writable here")
    group = parent / f"oomguard-test-{os.getpid()}"
    try:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit))
    except OSError as err:
        pytest.skip(f"cannot create a cgroup v1 memory cgroup: {err}")
    try:
        yield group
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        for _ in range(1000):  # rmdir fails while a killed process is still being reaped
            try:
                group.rmdir()
                break
            except OSError:
                continue


def join(group: Path) -> None:
    """Move the calling process into ``group`` (a ``preexec_fn``: the child joins before it starts)."""
    (group / "cgroup.procs").write_text(str(os.getpid()))


def start_balloon(group: Path, size: int) -> subprocess.Popen[str]:
    """A process holding ``size`` resident bytes inside ``group`` until it is killed."""
    balloon = subprocess.Popen([sys.executable, "-c", BALLOON, str(size)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, preexec_fn=lambda: join(group))
    assert balloon.stdout is not None and balloon.stdout.readline().strip() == "ready"
    return balloon



def squeeze(group: Path, beyond: int, victim: int) -> subprocess.Popen[str]:
    """A process in ``group`` taking all the memory left there and ``beyond`` bytes more, held until killed.

    The kernel's OOM killer then has to kill in ``group``, and ``victim`` is
    made the process it picks (``oom_score_adj`` 1000; lowering the balloon's
    own needs a privilege containers lack): a real memory kill at a chosen moment.
    """
    Path(f"/proc/{victim}/oom_score_adj").write_text("1000")
    usage = int((group / "memory.usage_in_bytes").read_text())
    limit = int((group / "memory.limit_in_bytes").read_text())
    size = max(limit - usage, 0) + beyond
    return subprocess.Popen([sys.executable, "-c", BALLOON, str(size)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, preexec_fn=lambda: join(group))
