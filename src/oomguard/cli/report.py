"""The report at the end of a run, written by whoever ran it (the training process, a group's launcher)."""

from __future__ import annotations

from collections.abc import Callable

from oomguard.report import write_report
from oomguard.rundir import RunDir


def write_final_report(run: RunDir, say: Callable[[str], None]) -> None:
    """``report.html`` for a finished run; a plotting failure must not fail a finished training."""
    try:
        paths = write_report(run.root)
    except Exception as err:  # the run itself succeeded
        say(f"report not written ({type(err).__name__}: {err}); try: oomguard report {run.root}")
        return
    say(f"report: {paths.html}")
