"""Errors that reach the user as one or two lines, never as a traceback."""

from __future__ import annotations


class OomguardError(Exception):
    """A failure the user can act on. ``str(err)`` is the whole message."""

    exit_code = 1


class ConfigError(OomguardError):
    """A bad configuration key or value, found before any work starts."""

    exit_code = 2


class RunDirError(OomguardError):
    """The run directory cannot be used as asked (exists, locked, unreadable)."""

    exit_code = 2


class DataError(OomguardError):
    """The dataset is missing or malformed."""

    exit_code = 2


class MemoryBudgetError(OomguardError):
    """Even the smallest plan does not fit in the memory budget."""

    exit_code = 3


class MemoryPressureError(OomguardError):
    """Other programs took the memory and it stayed low: the run checkpointed and stops for now.

    Raised by ``Guard.step`` in a loop that no supervisor runs (under ``oomguard
    run`` or ``oomguard train`` the process exits with status 75 instead, and the
    supervisor resumes it once the memory is back). Resume with ``guard.restore``.
    """

    exit_code = 75
