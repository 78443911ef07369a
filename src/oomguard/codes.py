"""Exit statuses shared by the supervisor and the processes it runs.

Kept in a module of its own, with no imports, so that the training child can
use them without loading the supervisor.
"""

from __future__ import annotations

import signal

#: The child asks to be restarted later: memory pressure from other programs, nothing wrong with the
#: run. The supervisor waits (bounded) until available memory recovers, then resumes with the same
#: plan. 75 is EX_TEMPFAIL, "temporary failure, try again".
EXIT_PRESSURE = 75

#: oomguard's own user errors (bad config, run directory, data): never retried.
EXIT_USER_ERROR = 2

#: oomguard's MemoryBudgetError: even the smallest plan does not fit the budget.
EXIT_NO_FIT = 3

#: The supervisor was interrupted (Ctrl-C): the child was stopped first.
EXIT_INTERRUPTED = 128 + signal.SIGINT

#: Exit status of a command that could not be started, as in a shell.
EXIT_NOT_FOUND = 127


def shell_status(returncode: int) -> int:
    """A Popen return code as a shell reports it: ``-9`` (killed by SIGKILL) becomes 137."""
    return 128 - returncode if returncode < 0 else returncode
