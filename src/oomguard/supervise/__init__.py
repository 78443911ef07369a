"""Supervision: run the work in a child process, attribute each death, restart it safer.

Nothing here imports torch or the training loop: the supervisor starts fast,
stays small and knows the child only by its exit, its output and its run
directory. Entry points for the command line:

- :func:`supervise_train` for ``oomguard train`` (the child is
  :func:`child_argv`);
- :func:`run_command` for ``oomguard run -- CMD ...``.
"""

from __future__ import annotations

from oomguard.codes import EXIT_INTERRUPTED, EXIT_NO_FIT, EXIT_PRESSURE, EXIT_USER_ERROR
from oomguard.supervise.child import CommandNotFound
from oomguard.supervise.run import DEFAULT_RUN_DIR, run_command
from oomguard.supervise.train import child_argv, supervise_train

__all__ = [
    "DEFAULT_RUN_DIR",
    "EXIT_INTERRUPTED",
    "EXIT_NO_FIT",
    "EXIT_PRESSURE",
    "EXIT_USER_ERROR",
    "CommandNotFound",
    "child_argv",
    "run_command",
    "supervise_train",
]
