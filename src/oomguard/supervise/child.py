"""One supervised process: start it, pass its output through live, keep its last lines, stop it.

The child runs in a session of its own, so a Ctrl-C at the terminal reaches
only the supervisor, which forwards exactly one SIGINT: the child gets the
chance to checkpoint without a second signal cutting it short. Its output is
read by two threads that copy every chunk to our own stdout and stderr as it
arrives and remember the last lines for the diagnosis of a death.

With ``terminal=True`` (the supervisor's own stdout is a terminal) the
child's stdout is a pseudo-terminal of the same size, so it draws what it
draws on a terminal (the training's live progress bar); otherwise a pipe,
and it prints plain lines. Its stderr is always a pipe of its own: the
traceback of a death is read from there.

On Linux the child starts through :mod:`~oomguard.supervise.lifeline`'s exec
wrapper, which joins the memory cap's cgroup and binds the child to the
supervisor before the command runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import psutil

from oomguard.codes import EXIT_NOT_FOUND
from oomguard.errors import OomguardError
from oomguard.supervise.lifeline import wrapper_argv

TAIL_LINES = 50
STDERR_LINES = 200  # enough for a long traceback whose first line we look for
_CHUNK = 65536
_LINUX = sys.platform.startswith("linux")
_SHOW_CURSOR = b"\x1b[?25h"  # a live display killed mid-frame leaves the cursor hidden


class CommandNotFound(OomguardError):
    """The command given to supervise cannot be started."""

    exit_code = EXIT_NOT_FOUND


class LineTail:
    """The last ``maxlen`` lines of streams fed in arbitrary chunks (``\\r`` ends a line too).

    Each stream keeps its own unfinished line, so stdout and stderr fed into
    one tail never splice their halves together.
    """

    def __init__(self, maxlen: int) -> None:
        self._lines: deque[str] = deque(maxlen=maxlen)
        self._partial: dict[int, str] = {}
        self._lock = threading.Lock()

    def feed(self, text: str, stream: int = 0) -> None:
        with self._lock:
            parts = (self._partial.get(stream, "") + text).replace("\r", "\n").split("\n")
            self._partial[stream] = parts.pop()
            self._lines.extend(part for part in parts if part.strip())

    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines) + [part for part in self._partial.values() if part.strip()]


def _resolve(argv: Sequence[str]) -> str:
    """The executable ``argv[0]`` names, or a one-line error saying it cannot be run."""
    if not argv:
        raise CommandNotFound("no command to supervise; put it after --: oomguard run -- python train.py")
    found = shutil.which(argv[0])
    if found is None:
        raise CommandNotFound(
            f"command not found: {argv[0]!r}; check the spelling and PATH, or give the full path"
        )
    return found


def _copy(source: IO[bytes], sink: IO[str], tails: Sequence[LineTail], stream: int,
          ending: list[bytes]) -> None:
    """Copy ``source`` to ``sink`` chunk by chunk until EOF; never stop early, or the child would block.

    ``ending`` keeps the last bytes copied (was the last line finished?). A
    pseudo-terminal whose child is gone reads as an error (EIO) on Linux: that is its EOF.
    """
    fd = source.fileno()
    while True:
        try:
            data = os.read(fd, _CHUNK)
        except OSError:
            break
        if not data:
            break
        ending[:] = [data[-16:]]
        text = data.decode("utf-8", errors="replace")
        for tail in tails:
            tail.feed(text, stream)
        try:
            sink.flush()
            raw = getattr(sink, "buffer", None)
            if raw is not None:
                raw.write(data)
                raw.flush()
            else:
                sink.write(text)
                sink.flush()
        except (OSError, ValueError):  # our own stdout closed or gone: keep draining the pipe
            continue
    source.close()


def terminal_size(stream: IO[str]) -> tuple[int, int] | None:
    """``(rows, columns)`` of the terminal ``stream`` writes to, or None."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return (size.lines, size.columns) if size.columns > 0 and size.lines > 0 else None


def _set_size(fd: int, size: tuple[int, int] | None) -> None:
    if size is None:
        return
    import fcntl
    import struct
    import termios

    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))


class Child:
    """A running supervised command."""

    def __init__(self, proc: subprocess.Popen[bytes], terminal: int | None = None) -> None:
        self.proc = proc
        self.tail = LineTail(TAIL_LINES)
        self.stderr_tail = LineTail(STDERR_LINES)
        self._readers: list[threading.Thread] = []
        self._terminal = terminal  # the pseudo-terminal's master end, while the child writes to it
        self._ending: list[bytes] = [b"\n"]
        self._stdout: IO[str] = sys.stdout

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        cgroup_procs: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
        terminal: bool = False,
    ) -> Child:
        """Start ``argv``; with ``cgroup_procs`` it joins that cgroup before running anything.

        ``terminal``: its stdout is a pseudo-terminal the size of ``stdout``'s
        terminal (where there are pseudo-terminals), else a pipe.
        """
        executable = _resolve(argv)
        command = [executable, *argv[1:]]
        if _LINUX:  # the exec wrapper: join the cap's cgroup, die with this process, then run the command
            command = wrapper_argv(os.getpid(), str(cgroup_procs) if cgroup_procs else None, command)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        sink = stdout or sys.stdout
        master = slave = None
        if terminal and hasattr(os, "openpty"):
            master, slave = os.openpty()
            _set_size(slave, terminal_size(sink))
        try:
            proc = subprocess.Popen(
                command, stdout=slave if slave is not None else subprocess.PIPE, stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL, env=full_env, start_new_session=True,
            )
        except OSError as exc:
            if master is not None and slave is not None:
                os.close(master)
                os.close(slave)
            raise CommandNotFound(f"cannot start {argv[0]!r}: {exc.strerror}; check the command") from exc
        if slave is not None:
            os.close(slave)  # the child holds it now; its EOF comes when the child's tree lets go
        child = cls(proc, master)
        child._stdout = sink
        out = os.fdopen(master, "rb", buffering=0) if master is not None else proc.stdout
        assert out is not None and proc.stderr is not None
        streams: tuple[tuple[IO[bytes], IO[str], tuple[LineTail, ...], list[bytes]], ...] = (
            (out, sink, (child.tail,), child._ending),
            (proc.stderr, stderr or sys.stderr, (child.tail, child.stderr_tail), []),
        )
        for number, (source, target, tails, ending) in enumerate(streams, start=1):
            reader = threading.Thread(target=_copy, args=(source, target, tails, number, ending),
                                      daemon=True, name="oomguard-child-output")
            reader.start()
            child._readers.append(reader)
        return child

    def resize(self, size: tuple[int, int] | None) -> None:
        """Give the child's pseudo-terminal a new size (the supervisor's terminal was resized)."""
        if self._terminal is not None and self.proc.poll() is None:
            _set_size(self._terminal, size)

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        """The return code, or None if the child still runs after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def send(self, signum: int) -> None:
        """Send ``signum`` to the child itself (not its workers: it decides what they do)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signum)

    def kill_tree(self) -> None:
        """SIGKILL the child and every process under it, as the OS does when memory runs out."""
        if self.proc.poll() is not None:
            return
        try:
            victims = [psutil.Process(self.proc.pid)]
            victims += victims[0].children(recursive=True)
        except psutil.Error:
            victims = []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # its session: everything that stayed in the group
        for victim in victims:
            with contextlib.suppress(psutil.Error):
                victim.kill()

    def kill_group(self) -> None:
        """SIGKILL what is left of the child's process group after it exited (orphaned workers)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def finish_output(self, timeout: float = 5.0) -> None:
        """Wait for the output threads to drain the pipes (bounded: an orphan may hold them open).

        On a terminal, a child that died in the middle of a live display
        leaves the line unfinished and the cursor hidden: both are put right.
        """
        for reader in self._readers:
            reader.join(timeout)
        if self._terminal is None:
            return
        self._terminal = None
        unfinished = not self._ending[0].endswith(b"\n")
        with contextlib.suppress(OSError, ValueError):
            self._stdout.write((_SHOW_CURSOR + (b"\r\n" if unfinished else b"")).decode())
            self._stdout.flush()
