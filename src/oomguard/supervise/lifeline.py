"""A process started by a supervisor (or a group launcher) never outlives it.

:func:`die_with_parent` binds the calling process to the process that
started it:

- Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills it the moment
  its parent exits, whatever the parent died of. The signal fires when the
  parent's *thread* that forked it exits, so the supervisor and the launcher
  start their children from the thread that outlives them (their main loop). If the parent
  died before the call, the process was already handed to another parent:
  ``getppid()`` tells, and the process kills itself;
- elsewhere: a daemon thread that looks at ``getppid()`` every 0.1 s and
  SIGKILLs the process (and its process group when it leads one: its
  DataLoader workers) when the parent changed.

Run as a script, this module is the supervisor's exec wrapper on Linux::

    python -I -S lifeline.py PARENT_PID CGROUP_PROCS -- EXECUTABLE ARGS...

It joins the memory cap's cgroup (``CGROUP_PROCS`` may be empty), binds to
``PARENT_PID``, then ``execv``s the command in its place: same pid, same
descriptors, and the binding survives the exec, so any command, not only
oomguard's own, dies with its supervisor. Only the standard library is used:
with ``-I -S`` the wrapper starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1
WATCH_INTERVAL = 0.1  # seconds between two looks at the parent, where the kernel cannot watch it


def _set_death_signal(signum: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, signum)``; False where it is not available (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one we may not signal counts as existing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die() -> None:
    """SIGKILL this process, and first its process group when it leads one (its workers go with it)."""
    if os.getpgrp() == os.getpid():
        with contextlib.suppress(OSError):
            os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL)
    die()


def die_with_parent(parent: int, watch: bool = True, kernel: bool = True) -> str:
    """Bind this process to ``parent``, which started it; how: ``kernel``, ``watchdog`` or ``none``.

    ``none``: the process's parent is another one (a shell between the
    supervisor and it), which it is not bound to; the supervisor's keeper
    still ends its process group. A ``parent`` that is already gone kills this
    process at once. ``watch=False`` starts no thread (the exec wrapper: a
    thread would not survive the exec); ``kernel=False`` uses the watchdog
    where the kernel could do it (how other systems do it, testable on Linux).
    """
    if kernel and _set_death_signal(signal.SIGKILL):
        if os.getppid() == parent:
            return "kernel"
        _set_death_signal(0)  # our parent is someone else: follow the supervisor, not it
    if os.getppid() != parent:
        if not alive(parent):
            die()  # it died before we could bind to it: we were handed to another parent
        return "none"
    if not watch:
        return "none"
    threading.Thread(target=_watch, args=(parent,), name="oomguard-lifeline", daemon=True).start()
    return "watchdog"


def bind_to_supervisor() -> str:
    """In a process the supervisor started (``OOMGUARD_SUPERVISED``): die with it. How, as above."""
    from oomguard.environment import supervisor_pid

    parent = supervisor_pid()
    return die_with_parent(parent) if parent is not None else "none"


def bind_to_launcher() -> str:
    """In a rank the group launcher started (``OOMGUARD_LAUNCHER``): die with it. How, as above."""
    from oomguard.environment import launcher_pid

    parent = launcher_pid()
    return die_with_parent(parent) if parent is not None else "none"


def wrapper_argv(parent: int, cgroup_procs: str | None, command: list[str]) -> list[str]:
    """The command line that runs ``command`` through this module's exec wrapper."""
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), str(parent), cgroup_procs or "", "--",
            *command]


def _exec(argv: list[str]) -> None:
    """The wrapper: join the cgroup, bind to the parent, become the command."""
    parent, procs, command = int(argv[0]), argv[1], argv[argv.index("--") + 1:]
    if procs:
        try:
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))
        except OSError as exc:
            sys.stderr.write(f"oomguard: cannot join the memory cap's cgroup ({exc.strerror}); "
                             f"the cap polls memory instead\n")
    die_with_parent(parent, watch=False)
    try:
        os.execv(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"oomguard: cannot start {command[0]!r}: {exc.strerror}\n")
        os._exit(127)


if __name__ == "__main__":
    _exec(sys.argv[1:])
