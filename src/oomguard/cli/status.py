"""``oomguard status RUN_DIR``: one screen about a run in progress or finished (what ``tail -f`` was for).

    runs/exp: running (attempt 3, pid 41215)
      epoch 3/12, step 71/288, 2.4 steps/s, about 1m30s left at this pace
      plan: microbatch 16 (batch 64), eval microbatch 64; restarts changed microbatch=16
      memory: peak 1.2 GB of its 2.0 GB budget (60%); now 980 MB used, 11.5 GB available
      last events:
        14:03:04  kill       unexplained kill, signal SIGKILL, attempt 2, at step 70, lost 4.1s
        ...
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from oomguard import events as ev
from oomguard.report.describe import describe
from oomguard.supervise.status import RunStatus, read_status
from oomguard.units import format_bytes, format_duration


def _heading(status: RunStatus) -> str:
    who = [f"attempt {status.attempt}"] if status.attempt is not None else []
    if status.state == "running" and status.pid is not None:
        who.append(f"pid {status.pid}")
    state = f"{status.state} ({', '.join(who)})" if who else status.state
    return f"{status.root}: {state}" + (f": {status.detail}" if status.detail else "")


def _progress(status: RunStatus) -> str | None:
    parts = []
    if status.epoch is not None:
        parts.append(f"epoch {status.epoch}" + (f"/{status.epochs}" if status.epochs else ""))
    if status.step is not None:
        parts.append(f"step {status.step}" + (f"/{status.total_steps}" if status.total_steps else ""))
    if status.pace:
        parts.append(f"{status.pace:.2g} steps/s")
    if status.seconds_left is not None:
        parts.append(f"about {format_duration(status.seconds_left)} left at this pace")
    if status.seconds is not None:
        parts.append(f"took {format_duration(status.seconds)}")
    return ", ".join(parts) if parts else None


def _plan(status: RunStatus) -> str | None:
    if status.command is not None:
        return "command: " + " ".join(status.command)
    if status.microbatch is None:
        return None
    text = f"plan: microbatch {status.microbatch}" + (f" (batch {status.batch})" if status.batch else "")
    if status.eval_microbatch is not None:
        text += f", eval microbatch {status.eval_microbatch}"
    if status.changes:
        text += "; restarts changed " + " ".join(f"{k}={v}" for k, v in status.changes.items())
    return text


def _memory(status: RunStatus) -> str | None:
    parts = []
    if status.peak is not None:
        peak = f"peak {format_bytes(status.peak)}"
        if status.budget:
            peak += f" of its {format_bytes(status.budget)} budget ({status.peak / status.budget:.0%})"
        parts.append(peak)
    if status.state == "running" and status.used is not None:
        parts.append(f"now {format_bytes(status.used)} used, {format_bytes(status.available)} available")
    return "memory: " + "; ".join(parts) if parts else None


def _event_line(event: ev.Event) -> str:
    at = dt.datetime.fromtimestamp(event.time).strftime("%H:%M:%S")
    return f"    {at}  {ev.name_of(event):<10} {describe(event)}"


def status_lines(status: RunStatus) -> list[str]:
    """The screen, line by line."""
    lines = [_heading(status)]
    lines += [f"  {line}" for line in (_progress(status), _plan(status), _memory(status)) if line]
    if status.events:
        lines.append("  last events:")
        lines += [_event_line(event) for event in status.events]
    return lines


def status_command(run_dir: str, say: Callable[[str], None] = print) -> int:
    """Print the status of ``run_dir``; 0 (a RunDirError for a folder that is not a run's)."""
    for line in status_lines(read_status(Path(run_dir))):
        say(line)
    return 0
