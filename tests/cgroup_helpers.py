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



SQUEEZE = """
import sys
size = int(sys.stdin.readline())  # started early, it waits for the word
block = bytearray(size)
block[::4096] = b"\\x01" * len(range(0, size, 4096))
sys.stdin.read()
"""


class Squeeze:
    """A process waiting in ``group`` to take all the memory left there and more: a memory kill on demand.

    Started ahead (a Python start takes long on a busy machine), it allocates
    when :meth:`now` says so.
    """

    def __init__(self, group: Path) -> None:
        self.group = group
        self.process = subprocess.Popen([sys.executable, "-c", SQUEEZE], stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, text=True, preexec_fn=lambda: join(group))

    def now(self, victim: int, beyond: int = 200 * MB) -> None:
        """Take the memory left in the group, counting its page cache as free, and ``beyond`` bytes more.

        The kernel's OOM killer has to kill in the group at once, and
        ``victim`` is made the process it picks (``oom_score_adj`` 1000;
        lowering our own needs a privilege containers lack).
        """
        Path(f"/proc/{victim}/oom_score_adj").write_text("1000")
        stat = dict(line.split() for line in (self.group / "memory.stat").read_text().splitlines())
        limit = int((self.group / "memory.limit_in_bytes").read_text())
        assert self.process.stdin is not None
        self.process.stdin.write(f"{max(limit - int(stat['total_rss']), 0) + beyond}\n")
        self.process.stdin.flush()
