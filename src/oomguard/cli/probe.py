"""``oomguard probe``: measure peak memory against microbatch size on the real model and data."""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console

from oomguard.cli.args import resolve_config
from oomguard.events import EventLog
from oomguard.rundir import RunDir


def probe_command(args: list[str], as_json: bool) -> int:
    """Print the probe's table and plan (or one JSON object); nothing is written to a run directory."""
    from oomguard.loop.setup import build_state

    config = resolve_config(args, resume=False)
    with tempfile.TemporaryDirectory(prefix="oomguard-probe-") as scratch:
        state = build_state(config, RunDir(Path(scratch)), EventLog(None), timeline=False)
        batch = next(iter(state.train_loader))
        state.memory.start()
        try:
            result = state.guard.probe(batch, state.task.loss, state.task.predict)
        finally:
            state.memory.stop()
    if as_json:
        print(result.to_json())
    else:
        console = Console(highlight=False)
        table = result.rich_table()
        table.caption = None
        console.print(table)
        console.print(result.summary(), markup=False)
        console.print(result.prediction(), markup=False)
    return 0
