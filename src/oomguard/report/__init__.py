"""The run report: ``report.html`` and ``memory.png`` from a run directory.

Reads only files (never torch), so it runs in the supervisor, after a kill,
or on another machine that the run directory was copied to. matplotlib is
imported when a report is written, not when this package is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from oomguard.atomic import replacing, write_atomic
from oomguard.report.read import RunData, load_run
from oomguard.report.verdict import verdict

__all__ = ["ReportPaths", "RunData", "load_run", "verdict", "write_final_report", "write_report"]


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    png: Path


def write_report(run_dir: str | Path, max_points: int = 1500) -> ReportPaths:
    """Write ``run_dir/report.html`` and ``run_dir/memory.png``; return their paths.

    Works for finished and unfinished runs of ``oomguard train`` and ``oomguard
    run``. Raises RunDirError (one line) when ``run_dir`` holds neither
    memory.csv nor events.jsonl.
    """
    from oomguard.report.html import render_html
    from oomguard.report.plot import curves_figure, memory_figure, save_png, svg_text

    run = load_run(run_dir, max_points=max_points)
    sentence = verdict(run.events, run.timeline.summary if run.timeline else None)
    paths = ReportPaths(html=run.root / "report.html", png=run.root / "memory.png")
    figure, tooltips = memory_figure(run)
    with replacing(paths.png, "wb") as png:
        save_png(figure, png)
    memory_svg = svg_text(figure, "mem", tooltips)
    curves = curves_figure(run.results)
    curves_svg = svg_text(curves, "cur") if curves is not None else None
    write_atomic(paths.html, render_html(run, sentence, memory_svg, curves_svg))
    return paths


def write_final_report(run_dir: str | Path, say: Callable[[str], None], announce: bool = True) -> None:
    """The report at the end of a run (``announce``: say where); a plotting failure must not fail a run."""
    try:
        paths = write_report(run_dir)
    except Exception as err:  # the run itself succeeded
        say(f"report not written ({type(err).__name__}: {err}); try: oomguard report {run_dir}")
        return
    if announce:
        say(f"report: {paths.html}")
