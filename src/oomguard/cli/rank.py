"""One rank of a data-parallel group: ``python -m oomguard.cli.rank [CONFIG.yaml] [key=value ...]``.

The group launcher (:mod:`oomguard.distributed.launch`) starts it through
torch.distributed's agent, with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``...
set, after preparing the run directory (whose lock it holds). The rank binds
itself to the launcher (it dies when the launcher does, however that dies),
joins the process group on its device and trains the run from its newest
checkpoint.
"""

from __future__ import annotations

import os
import sys

from oomguard import environment
from oomguard.cli.args import resolve_config
from oomguard.errors import ConfigError, OomguardError
from oomguard.rundir import RunDir
from oomguard.supervise.lifeline import bind_to_launcher


def rank_main(args: list[str]) -> int:
    """Train as one rank; the rank's exit status."""
    if environment.GROUP not in os.environ:
        raise ConfigError("oomguard.cli.rank is started by oomguard train nproc=N, not by hand")
    bind_to_launcher()  # a rank never outlives the launcher that started it
    from oomguard.distributed.group import Group
    from oomguard.loop.run import run_training
    from oomguard.loop.setup import rank_device

    config = resolve_config(args, resume=True)
    group = Group.join(rank_device(config, int(os.environ.get("LOCAL_RANK", "0"))))
    outcome = run_training(config, RunDir(config.run_dir), resume=True, group=group)
    # A rank leaving with its process group alive can abort in gloo's teardown; not after an error,
    # where NCCL's teardown may wait on a peer's pending collective.
    group.close()
    return outcome.exit_code


def main() -> None:
    try:
        sys.exit(rank_main(sys.argv[1:]))
    except OomguardError as err:
        print(f"oomguard: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
