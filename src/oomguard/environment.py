"""Environment variables by which oomguard's processes tell each other who they are.

The supervisor sets them for its child, the group launcher for its ranks;
nothing else reads or writes them.
"""

from __future__ import annotations

import os

#: Set by the supervisor in its child: the supervisor's pid (the child is supervised: its restarts are
#: someone else's job, and it must not outlive that process).
SUPERVISED = "OOMGUARD_SUPERVISED"
#: Set by the supervisor: the attempt number of this child, from 1.
ATTEMPT = "OOMGUARD_ATTEMPT"
#: Set by the group launcher in every rank: the run directory it prepared (and whose lock it holds).
GROUP = "OOMGUARD_GROUP"
#: Set by the group launcher in every rank: the launcher's pid (a rank must not outlive it).
LAUNCHER = "OOMGUARD_LAUNCHER"


def attempt() -> int:
    """This process's attempt number under a supervisor (1 when unsupervised)."""
    try:
        return max(1, int(os.environ.get(ATTEMPT, "1")))
    except ValueError:
        return 1


def launched_rank() -> bool:
    """True in a process that torch.distributed's launcher started as one of several ranks."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _pid(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() and int(value) > 1 else None


def supervisor_pid() -> int | None:
    """The pid of the supervisor this process runs under (directly or as a rank), or None."""
    return _pid(SUPERVISED)


def launcher_pid() -> int | None:
    """The pid of the group launcher that started this rank, or None."""
    return _pid(LAUNCHER)


#: Set by ``oomguard run`` for its command: the run directory where a Guard or a trainer callback inside
#: the command writes its events, timeline and (a Guard) checkpoints, beside the supervisor's.
RUN_DIR = "OOMGUARD_RUN_DIR"
#: Set by ``oomguard run`` after a memory kill: the largest training microbatch a Guard inside may use.
MICROBATCH = "OOMGUARD_MICROBATCH"
