"""The supervisor's keeper: when the supervisor dies, everything it was running dies with it.

The child binds itself to the supervisor (:mod:`~oomguard.supervise.lifeline`),
but what the child started (DataLoader workers, the programs a shell script
runs) outlives a SIGKILLed child. So each supervisor starts one keeper: a tiny
process (standard library only, in a session of its own so that a Ctrl-C or a
kill of the supervisor's process group leaves it be) that reads lines from a
pipe whose write end only the supervisor holds::

    group PGID      an attempt's process group: the child and all it started that stayed in it
    cgroup DIR      an attempt's memory-cap cgroup: every process in it, whatever its group
    forget KEY      the attempt ended (KEY as given): the supervisor cleaned up itself
    bye             the supervisor is done

End of file without ``bye`` means the supervisor is gone, however it died:
the keeper SIGKILLs every group and every process of every cgroup it still
holds, removes those cgroups, and exits. Its own start needs no care: it
reads nothing until the supervisor writes, and a pipe it cannot open means no
keeper (the supervisor goes on; its child is still bound by the lifeline).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

_EMPTY_WAIT = 5.0  # seconds to wait for a killed cgroup to empty before removing it


class Keeper:
    """The supervisor's end of the pipe: what to end if the supervisor dies."""

    def __init__(self, proc: subprocess.Popen[bytes], fd: int) -> None:
        self.proc = proc
        self._fd: int | None = fd

    @classmethod
    def start(cls) -> Keeper | None:
        """Start the keeper; None where it cannot be started (the supervisor goes on without)."""
        read, write = os.pipe()  # neither end is inherited by anything else this process starts
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), str(read)], pass_fds=(read,),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:
            os.close(write)
            return None
        finally:
            os.close(read)
        return cls(proc, write)

    def _send(self, line: str) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, f"{line}\n".encode())
        except OSError:  # the keeper is gone: nothing more to tell it
            os.close(self._fd)
            self._fd = None

    def watch_group(self, pgid: int) -> None:
        self._send(f"group {pgid}")

    def watch_cgroup(self, directory: Path) -> None:
        self._send(f"cgroup {directory}")

    def forget(self, key: int | Path) -> None:
        self._send(f"forget {key}")

    def close(self) -> None:
        """The supervisor ends normally: the keeper exits and ends nothing."""
        if self._fd is None:
            return
        self._send("bye")
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5.0)

    def __enter__(self) -> Keeper:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def end_cgroup(directory: str) -> None:
    """SIGKILL every process in the cgroup ``directory`` until it is empty (bounded), then remove it."""
    procs = os.path.join(directory, "cgroup.procs")
    deadline = time.monotonic() + _EMPTY_WAIT
    while time.monotonic() < deadline:
        try:
            with open(procs) as handle:
                pids = [int(pid) for pid in handle.read().split()]
        except (OSError, ValueError):
            break
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)  # the kernel empties the cgroup as the killed processes are reaped
    with contextlib.suppress(OSError):
        os.rmdir(directory)


def _keep(fd: int) -> None:
    """Hold the list the supervisor sends until ``bye`` (exit) or end of file (end everything)."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # only the supervisor's end may end the keeper
    groups: set[int] = set()
    cgroups: set[str] = set()
    with os.fdopen(fd, "rb") as pipe:
        for raw in pipe:
            verb, _, value = raw.decode("utf-8", "replace").strip().partition(" ")
            if verb == "bye":
                return
            if verb == "group" and value.isdigit():
                groups.add(int(value))
            elif verb == "cgroup" and value:
                cgroups.add(value)
            elif verb == "forget" and value.isdigit():
                groups.discard(int(value))
            elif verb == "forget":
                cgroups.discard(value)
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    for directory in cgroups:
        end_cgroup(directory)


if __name__ == "__main__":
    _keep(int(sys.argv[1]))
