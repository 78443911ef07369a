"""``oomguard doctor``: what this machine has, and which settings will hurt a training run.

Exit status 0 whenever training is possible, even with findings (they are
advice); non-zero only when nothing can train here (torch does not import).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from oomguard.config import Config
from oomguard.diagnose.facts import Backend, Facts, gather
from oomguard.diagnose.findings import Finding, findings
from oomguard.units import format_bytes

__all__ = ["Backend", "Facts", "Finding", "findings", "gather", "report_lines", "run_doctor"]
_STYLE = {"error": "bold red", "warn": "yellow", "info": "cyan"}


def _size(n: int | None) -> str:
    return "unknown" if n is None else format_bytes(n).replace(".0 ", " ")


def report_lines(facts: Facts) -> list[str]:
    """The facts part of the doctor's output, as plain lines."""
    lines = [f"python {facts.python} on {facts.platform} {facts.machine}, {facts.cpus} CPUs"]
    lines.append(f"torch {facts.torch_version}" if facts.torch_version else "torch: not importable")
    if facts.backends:
        found = ", ".join(f"{b.kind} ({_size(b.memory)})" for b in facts.backends)
        missing = [k for k in ("cuda", "mps") if k not in {b.kind for b in facts.backends}]
        lines.append(f"backends: {found}" + (f"; not found: {', '.join(missing)}" if missing else ""))
    if facts.chosen is not None:
        asked = facts.config.device if facts.config is not None else "auto"
        lines.append(f"device={asked} trains on {facts.chosen.detail or facts.chosen.kind}")
    lines.append(f"memory: {_size(facts.total_memory)} total, {_size(facts.available_memory)} available")
    if facts.swap_total:
        lines.append(f"swap: {_size(facts.swap_used)} used of {_size(facts.swap_total)}")
    else:
        lines.append("swap: none (the kernel kills at once when memory runs out)")
    if facts.config is not None:
        lines.append(f"DataLoader workers: {facts.config.workers} ({facts.start_method} start method)")
    return lines


def run_doctor(config: Config | None, console: Console, env: Mapping[str, str] | None = None) -> int:
    """Print the machine's facts and the findings; return the exit status (0 unless nothing can train)."""
    facts = gather(config)
    found = findings(os.environ if env is None else env, facts)
    console.print("[bold]oomguard doctor[/bold]")
    for line in report_lines(facts):
        console.print(f"  {escape(line)}")
    if not found:
        console.print("[green]no problems found[/green]")
        return 0
    console.print(f"[bold]{len(found)} finding{'s' if len(found) != 1 else ''}[/bold]")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column()
    for finding in found:
        style = _STYLE[finding.level]
        grid.add_row(f"  [{style}]{finding.level}[/{style}]",
                     f"{escape(finding.message)}\n[bold]->[/bold] {escape(finding.fix)}")
    console.print(grid)
    return 1 if any(f.level == "error" for f in found) else 0
