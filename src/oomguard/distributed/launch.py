"""``nproc=N`` (and ``nnodes``...): start the ranks through torch.distributed's own launcher.

This process becomes torch.distributed.elastic's agent for its machine (what
``torchrun`` runs): it starts ``nproc`` ranks, each ``python -m oomguard.cli.rank
ARGS`` with ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...
set, watches them, and stops them all when one fails. The group is one job:
its exit status is the one that explains the failure best (a SIGKILLed rank
is 137, memory pressure 75), so the supervisor above restarts the whole group
from the last checkpoint exactly as it restarts a single process. The ranks
(each in a session of its own, as torch starts them) bind themselves to this
process: when it dies, however it dies, so do they.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from oomguard import environment
from oomguard.codes import EXIT_NO_FIT, EXIT_PRESSURE
from oomguard.config import Config

#: Seconds the ranks get to checkpoint after the agent asks them to stop, before it kills them.
SHUTDOWN_SECONDS = 60
_PRIORITY = (-signal.SIGKILL, EXIT_PRESSURE, EXIT_NO_FIT)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the rendezvous of a one-machine group)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def shell_code(exitcode: int) -> int:
    """A rank's exit as a process status: a signal N is 128 + N, as a shell reports it."""
    return 128 - exitcode if exitcode < 0 else exitcode


def group_exit(failures: Mapping[int, int]) -> tuple[int, int]:
    """``(rank, status)`` that explains a failed group: a kill first, then pressure, no fit, the first."""
    for wanted in _PRIORITY:
        for rank, code in sorted(failures.items()):
            if code == wanted:
                return rank, shell_code(code)
    rank = min(failures)
    return rank, shell_code(failures[rank])


def launch_group(config: Config, args: Sequence[str], say: Callable[[str], None] = print) -> int:
    """Run ``config.nproc`` ranks of ``oomguard train ARGS`` on this machine; the group's exit status."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    port = config.master_port or free_port(config.master_addr)
    launch = LaunchConfig(
        min_nodes=config.nnodes, max_nodes=config.nnodes, nproc_per_node=config.nproc,
        run_id=f"oomguard-{config.name}", rdzv_backend="static",
        rdzv_endpoint=f"{config.master_addr}:{port}", rdzv_configs={"rank": config.node_rank},
        max_restarts=0, start_method="spawn", shutdown_timeout=SHUTDOWN_SECONDS,
    )
    os.environ[environment.GROUP] = str(config.run_dir)
    os.environ[environment.LAUNCHER] = str(os.getpid())  # the ranks die with this process
    # The ranks share the machine's cores (torchrun's default is 1 thread; this keeps all cores busy).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // config.nproc)))
    argv: list[Any] = ["-m", "oomguard.cli.rank", *args]
    say(f"starting {config.world_size} ranks ({config.nnodes} machine(s) x {config.nproc}) through "
        f"torch.distributed, rendezvous at {config.master_addr}:{port}")
    try:
        elastic_launch(launch, sys.executable)(*argv)
    except ChildFailedError as err:
        rank, status = group_exit({rank: failure.exitcode for rank, failure in err.failures.items()})
        failure = err.failures[rank]
        how = (f"was killed by {signal.Signals(-failure.exitcode).name}" if failure.exitcode < 0
               else f"exited with status {failure.exitcode}")
        say(f"rank {rank} (pid {failure.pid}) {how}; the group stopped")
        return status
    except SignalException as err:
        return 128 + int(err.sigval)
    return 0
