"""One supervised process: start it, pass its output through live, keep its last lines, stop it.

The child runs in a session of its own, so a Ctrl-C at the terminal reaches
only the supervisor, which forwards exactly one SIGINT: the child gets the
chance to checkpoint without a second signal cutting it short. Its output is
read from pipes by two threads that copy every chunk to our own stdout and
stderr as it arrives and remember the last lines for the diagnosis of a death.
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

TAIL_LINES = 50
STDERR_LINES = 200  # enough for a long traceback whose first line we look for
_CHUNK = 65536

# Joins the child to a cgroup before it runs anything, so that all of its memory is charged there:
# ``sh -c SCRIPT PROCS_FILE CMD ...`` sets $0 to PROCS_FILE and "$@" to the command.
_JOIN_CGROUP = 'echo $$ > "$0" && exec "$@"'


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


def _copy(source: IO[bytes], sink: IO[str], tails: Sequence[LineTail], stream: int) -> None:
    """Copy ``source`` to ``sink`` chunk by chunk until EOF; never stop early, or the child would block."""
    fd = source.fileno()
    while True:
        try:
            data = os.read(fd, _CHUNK)
        except OSError:
            break
        if not data:
            break
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


class Child:
    """A running supervised command."""

    def __init__(self, proc: subprocess.Popen[bytes], readers: list[threading.Thread]) -> None:
        self.proc = proc
        self.tail = LineTail(TAIL_LINES)
        self.stderr_tail = LineTail(STDERR_LINES)
        self._readers = readers

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
    ) -> Child:
        """Start ``argv``; with ``cgroup_procs`` it joins that cgroup before running anything."""
        executable = _resolve(argv)
        command = [executable, *argv[1:]]
        if cgroup_procs is not None:
            command = ["/bin/sh", "-c", _JOIN_CGROUP, str(cgroup_procs), *command]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        try:
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                env=full_env, start_new_session=True,
            )
        except OSError as exc:
            raise CommandNotFound(f"cannot start {argv[0]!r}: {exc.strerror}; check the command") from exc
        child = cls(proc, [])
        assert proc.stdout is not None and proc.stderr is not None
        streams = (
            (proc.stdout, stdout or sys.stdout, (child.tail,)),
            (proc.stderr, stderr or sys.stderr, (child.tail, child.stderr_tail)),
        )
        for number, (source, sink, tails) in enumerate(streams, start=1):
            reader = threading.Thread(target=_copy, args=(source, sink, tails, number), daemon=True,
                                      name="oomguard-child-output")
            reader.start()
            child._readers.append(reader)
        return child

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
        """Wait for the output threads to drain the pipes (bounded: an orphan may hold them open)."""
        for reader in self._readers:
            reader.join(timeout)
