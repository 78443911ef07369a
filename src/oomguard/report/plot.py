"""The report's charts: the memory timeline with every event on it, and the per-epoch curves.

Figures are built with matplotlib's object API (no pyplot, no global backend
switch), so writing a report inside a user's process leaves their plotting
alone. Series are drawn from the bucketed timeline: the line is each
bucket's maximum (the minimum for available memory) and a light band spans
min..max, so short spikes stay visible however long the run.
"""

from __future__ import annotations

import io
import itertools
import math
import re
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import IO, Any

import matplotlib as mpl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from oomguard import events as ev
from oomguard.report.describe import describe, since
from oomguard.report.read import RunData
from oomguard.report.timeline import Timeline
from oomguard.report.verdict import cause_words, size
from oomguard.units import parse_size

GB = 1e9
#: Events drawn in the lane under the memory chart, top to bottom, with their colour and marker.
MARKED: dict[str, tuple[str, str]] = {
    "plan": ("#1f77b4", "s"), "shrink": ("#ff7f0e", "v"), "grow": ("#2ca02c", "^"),
    "oom": ("#d62728", "X"), "pressure": ("#bcbd22", "o"), "leak": ("#9467bd", "D"),
    "fragmentation": ("#8c564b", "d"), "checkpoint": ("#7f7f7f", "|"), "kill": ("#000000", "X"),
    "restart": ("#8c564b", ">"), "fallback": ("#e377c2", "P"), "stage": ("#17becf", "*"),
    "saver": ("#e377c2", "h"), "stop": ("#555555", "s"), "finish": ("#2ca02c", "*"),
}
#: Events that also get a vertical line across the memory chart.
LINED = ("oom", "kill", "restart", "leak", "fallback")
_LABELLED = ("kill", "fallback", "leak")  # and a rotated label at the top of that line
_MAX_SINGLE = 150  # events of one kind drawn (and tooltipped) one by one; more become one scatter
_RANK_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def time_unit(seconds: float) -> tuple[float, str]:
    """(divisor, unit) so that the time axis reads in s, min or h."""
    if seconds < 180:
        return 1.0, "s"
    if seconds < 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def _number(value: Any) -> float | None:
    """Bytes from a number or a size string (``14GB`` in a hand-written config.yaml)."""
    if isinstance(value, str):
        try:
            return float(parse_size(value))
        except ValueError:
            return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _cap(run: RunData) -> float | None:
    for event in reversed(run.events):
        if isinstance(event, ev.Kill) and _number(event.cap):
            return _number(event.cap)
        if isinstance(event, ev.Start) and isinstance(event.config, dict):
            value = _number(event.config.get("memory_cap"))
            if value:
                return value
    value = _number((run.config or {}).get("memory_cap"))
    return value or None


def _budget_steps(run: RunData, t0: float, end: float) -> tuple[list[float], list[float]]:
    xs: list[float] = []
    ys: list[float] = []
    for event in run.events:
        value = _number(event.budget) if isinstance(event, ev.Start | ev.Plan | ev.Oom) else None
        if value and (not ys or ys[-1] != value):
            xs.append(event.time - t0 if xs else 0.0)
            ys.append(value)
    if ys:
        xs.append(end - t0)
        ys.append(ys[-1])
    return xs, ys


def _gaps(times: Sequence[float]) -> set[int]:
    """Indexes after which the sampler was silent (a kill and restart): lines break there."""
    steps = sorted(b - a for a, b in itertools.pairwise(times))
    if not steps:
        return set()
    usual = steps[len(steps) // 2]
    return {i for i, (a, b) in enumerate(itertools.pairwise(times))
            if b - a > max(10 * usual, 5.0)}


def _broken(values: Sequence[float], gaps: set[int]) -> list[float]:
    out: list[float] = []
    for i, value in enumerate(values):
        out.append(value)
        if i in gaps:
            out.append(math.nan)
    return out


def _plot_series(ax: Axes, timeline: Timeline, t0: float, scale: float, top: float) -> None:
    several = len(timeline.ranks) > 1
    for n, (rank, series) in enumerate(timeline.ranks.items()):
        gaps = _gaps(series.time)
        x = _broken([(t - t0) / scale for t in series.time], gaps)
        suffix = f" rank {rank}" if several else ""
        base = _RANK_COLOURS[n % len(_RANK_COLOURS)]
        counted = "tree_memory" in timeline.columns  # each page once; older files summed RSS
        tree = "process tree, each page once" if counted else "process RSS + children"
        styles = [("tree_rss", tree, base, "-")]
        if timeline.has("device_allocated"):
            styles.append(("device_allocated", "device allocated", base if several else "#ff7f0e", "--"))
        if timeline.has("device_reserved"):
            styles.append(("device_reserved", "device reserved", base if several else "#2ca02c", ":"))
        for key, label, colour, style in styles:
            low = _broken([v / GB for v in series.low[key]], gaps)
            high = _broken([v / GB for v in series.high[key]], gaps)
            ax.fill_between(x, low, high, color=colour, alpha=0.18, linewidth=0)
            ax.plot(x, high, color=colour, linestyle=style, linewidth=1.4, label=label + suffix)
    first = next(iter(timeline.ranks.values()))
    if timeline.has("system_available"):
        gaps = _gaps(first.time)
        low = _broken([v / GB for v in first.low["system_available"]], gaps)
        floor = timeline.summary.min_available or 0
        note = f" (min {size(floor)})" + (", off the top" if floor / GB > top else "")
        ax.plot(_broken([(t - t0) / scale for t in first.time], gaps), low, color="#7f7f7f", linewidth=1.1,
                label="system available" + note)


def _mark_events(ax: Axes, lane: Axes, run: RunData, t0: float, scale: float,
                 tooltips: dict[str, str]) -> None:
    kinds = [k for k in MARKED if any(ev.name_of(e) == k for e in run.events)]
    labelled = [e for e in run.events if ev.name_of(e) in _LABELLED]
    for row, kind in enumerate(kinds):
        colour, marker = MARKED[kind]
        chosen = [e for e in run.events if ev.name_of(e) == kind]
        xs = [(e.time - t0) / scale for e in chosen]
        if len(chosen) <= _MAX_SINGLE:
            for i, (event, x) in enumerate(zip(chosen, xs, strict=True)):
                gid = f"ev-{kind}-{i}"
                lane.plot([x], [row], marker=marker, color=colour, markersize=9, linestyle="none", gid=gid)
                tooltips[gid] = f"{kind} {since(event.time, t0)}: {describe(event)}"
        else:
            gid = f"ev-{kind}"
            lane.scatter(xs, [row] * len(xs), marker=marker, color=colour, s=50, gid=gid)
            tooltips[gid] = f"{kind}: {len(chosen)} events"
        if kind in LINED and len(chosen) <= _MAX_SINGLE:
            for x in xs:
                ax.axvline(x, color=colour, linewidth=0.9, alpha=0.55, linestyle="--")
                lane.axvline(x, color=colour, linewidth=0.9, alpha=0.3, linestyle="--")
    if len(labelled) <= 12:
        for event in labelled:
            kind = ev.name_of(event)
            if isinstance(event, ev.Kill):
                text = cause_words(event.cause or "unexplained_kill")
            elif isinstance(event, ev.Fallback):
                text = f"fallback to {event.to}" if event.to else "fallback"
            else:
                text = str(kind)
            ax.annotate(text, xy=((event.time - t0) / scale, 1), xycoords=("data", "axes fraction"),
                        xytext=(3, -4), textcoords="offset points", rotation=90, rotation_mode="anchor",
                        ha="right", va="top", fontsize=8,
                        bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 0.6},
                        color=MARKED[kind][0])
    lane.set_yticks(range(len(kinds)), kinds)
    lane.set_ylim(-0.7, len(kinds) - 0.3)
    lane.invert_yaxis()
    lane.grid(axis="x", alpha=0.3)
    lane.tick_params(axis="y", length=0)


def memory_figure(run: RunData) -> tuple[Figure, dict[str, str]]:
    """The memory timeline (GB) over time since start, budget and cap lines, events below it.

    Returns the figure and a tooltip text for each event marker's gid.
    """
    t0 = run.start or 0.0
    end = run.end or t0
    scale, unit = time_unit(end - t0)
    kinds = sum(1 for k in MARKED if any(ev.name_of(e) == k for e in run.events))
    lane_height = 0.32 * kinds + 0.6 if kinds else 0.0
    fig = Figure(figsize=(12, 5.2 + lane_height), layout="constrained")
    if kinds:
        ax, lane = fig.subplots(2, 1, sharex=True, height_ratios=[5.2, lane_height])
    else:
        ax, lane = fig.subplots(1, 1), None
    tooltips: dict[str, str] = {}
    timeline = run.timeline
    budget_x, budget_y = _budget_steps(run, t0, end)
    cap = _cap(run)
    peaks = [timeline.summary.peak_tree_rss, timeline.summary.peak_device_reserved] if timeline else []
    top = max([*peaks, *budget_y, cap or 0, 1e8]) * 1.15 / GB
    if timeline is not None:
        _plot_series(ax, timeline, t0, scale, top)
        peak, when = timeline.summary.peak_tree_rss, timeline.summary.peak_tree_rss_time
        if when is not None:
            x = (when - t0) / scale
            right = x > 0.8 * (end - t0) / scale  # keep the label inside the chart
            ax.plot([x], [peak / GB], marker="o", color="#1f77b4", markersize=6)
            ax.annotate(f"peak {size(peak)}", xy=(x, peak / GB), xytext=(-6 if right else 6, 6),
                        textcoords="offset points", fontsize=9, color="#1f77b4", zorder=6,
                        ha="right" if right else "left",
                        bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 0.8})
    else:
        ax.text(0.5, 0.5, "no memory.csv samples", transform=ax.transAxes, ha="center", color="#777777")
    if budget_y:
        label = f"budget {size(budget_y[-1])}" if len(set(budget_y)) == 1 else "budget"
        ax.step([x / scale for x in budget_x], [y / GB for y in budget_y], where="post",
                color="#d62728", linewidth=1.6, linestyle="--", label=label)
    if cap:
        ax.axhline(cap / GB, color="#8b0000", linewidth=1.4, linestyle=":", label=f"cap {size(cap)}")
    if lane is not None:
        _mark_events(ax, lane, run, t0, scale, tooltips)
    ax.set_ylim(0, top)
    span = max((end - t0) / scale, 1e-9)
    ax.set_xlim(-0.01 * span, 1.01 * span)  # markers at the very start and end stay whole
    ax.set_ylabel("memory (GB)")
    ax.grid(alpha=0.3)
    (lane or ax).set_xlabel(f"time since start ({unit})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncol=4, frameon=False, fontsize=9)
    return fig, tooltips


def _columns(results: Sequence[dict[str, float | None]], test: Any) -> list[str]:
    names = list(results[0]) if results else []
    return [n for n in names if test(n) and any(r.get(n) is not None for r in results)]


def curves_figure(results: Sequence[dict[str, float | None]]) -> Figure | None:
    """Loss, accuracy-like metrics and regression errors per epoch; None without results.csv rows."""
    panels = [
        ("loss", _columns(results, lambda n: n.endswith("loss"))),
        ("accuracy", _columns(results, lambda n: n in ("accuracy", "top5") or n.startswith(("map", "acc")))),
        ("mean absolute error", _columns(results, lambda n: n.startswith("mae"))),
    ]
    panels = [(title, names) for title, names in panels if names]
    if not panels:
        return None
    fig = Figure(figsize=(12, 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, names) in zip(axes, panels, strict=True):
        for name in names:
            points = [(r["epoch"], r[name]) for r in results if r.get(name) is not None]
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            ax.plot(xs, ys, marker="o" if len(points) <= 40 else None, markersize=4, label=name)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


def save_png(fig: Figure, path: Path | IO[bytes]) -> None:
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})


def svg_text(fig: Figure, prefix: str, tooltips: dict[str, str] | None = None) -> str:
    """The figure as an ``<svg>`` element to inline in HTML.

    Text stays text (searchable, and labels are checkable in tests); ids get
    ``prefix`` so two charts on one page never clash; each event marker gets a
    ``<title>`` the browser shows on hover.
    """
    buffer = io.StringIO()
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": prefix}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    text = re.sub(r'xlink:href="#([^"]+)"', rf'xlink:href="#{prefix}-\1"', text)
    for gid, tip in (tooltips or {}).items():
        opening = f'<g id="{prefix}-{gid}">'
        text = text.replace(opening, f"{opening}<title>{escape(tip)}</title>", 1)
    head_end = text.index(">")
    head = re.sub(r'\s(width|height)="[^"]*"', "", text[:head_end])
    return f'{head} class="chart" role="img"{text[head_end:]}'
