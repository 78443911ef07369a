"""Short words for one event's details, shared by the chart's tooltips and the report's tables."""

from __future__ import annotations

import datetime as dt
from typing import Any

from oomguard import events as ev
from oomguard.report.verdict import cause_words, size
from oomguard.units import format_duration

_SIZE_KEYS = ("peak", "budget", "predicted", "bytes", "ceiling", "cap", "memory_cap", "growth", "available",
              "rss", "limit", "min_available", "bytes_per_hour")


def clock(unix: float) -> str:
    """``2026-11-01 12:03:04 UTC``: the report is read on other machines, so times are in UTC."""
    return dt.datetime.fromtimestamp(unix, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def since(unix: float, start: float | None) -> str:
    """``+1h02m`` after the run's start."""
    return "" if start is None else "+" + format_duration(max(0.0, unix - start))


def value_text(key: str, value: Any) -> str:
    """A detail value in words: sizes in GB/MB, durations, lists and dicts compact."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int | float) and key in _SIZE_KEYS:
        return size(value)
    if isinstance(value, int | float) and key in ("seconds",):
        return format_duration(float(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={value_text(str(k), v)}" for k, v in value.items())
    if isinstance(value, list):
        return f"{len(value)} entries"
    return str(value)


def _change(event: ev.Restart | ev.Kill) -> str:
    overrides = event.overrides if isinstance(event, ev.Restart) else None
    if isinstance(overrides, dict) and overrides:
        return " ".join(f"{k}={value_text(str(k), v)}" for k, v in overrides.items())
    if isinstance(overrides, list | tuple) and overrides:
        return " ".join(str(o) for o in overrides)
    if isinstance(overrides, str) and overrides:  # a hand-written or older log
        return overrides
    plan = event.plan if isinstance(event, ev.Restart) else None
    if isinstance(plan, dict) and plan:
        return value_text("plan", plan)
    return ""


def describe(event: ev.Event) -> str:
    """``oom``: ``train, microbatch 32, peak 3.2 GB``; ``kill``: ``memory kill, signal 9``; ..."""
    if isinstance(event, ev.Plan):
        text = f"microbatch {event.microbatch}, eval {event.eval_microbatch}"
        text += f", budget {size(event.budget)}" if event.budget else ""
        text += f", predicted peak {size(event.predicted_peak)}" if event.predicted_peak else ""
        return text + (f", savers {', '.join(event.savers)}" if event.savers else "")
    if isinstance(event, ev.PeakCheck):
        margin = f", margin {event.margin:.0%}" if isinstance(event.margin, int | float) else ""
        peaks = f"predicted {size(event.predicted)}, measured {size(event.measured)}"
        return f"epoch {event.epoch}: {peaks}{margin}"
    if isinstance(event, ev.Saver):
        peak = f" (microbatch 1 peaked at {size(event.peak)})" if isinstance(event.peak, int | float) else ""
        return f"{event.name} {'on' if event.on else 'off'}: {event.reason}{peak}"
    if isinstance(event, ev.Oom):
        peak = f", peak {size(event.peak)}" if event.peak else ""
        return f"{event.phase or 'train'}, microbatch {event.microbatch}{peak}"
    if isinstance(event, ev.Shrink | ev.Grow):
        reason = f" ({event.reason})" if event.reason else ""
        return f"{event.phase or 'train'} microbatch {event.from_} → {event.to}{reason}"
    if isinstance(event, ev.Kill | ev.Restart):
        parts = [cause_words(event.cause)] if event.cause else []
        if isinstance(event, ev.Kill) and event.signal is not None:
            parts.append(f"signal {event.signal}")
        if isinstance(event, ev.Kill) and event.exit_code is not None:
            parts.append(f"exit code {event.exit_code}")
        if event.attempt is not None:
            parts.append(f"attempt {event.attempt}")
        if isinstance(event, ev.Kill) and event.startup:
            parts.append("in start-up")
        elif isinstance(event, ev.Kill) and event.step is not None:
            parts.append(f"at step {event.step}")
        if isinstance(event, ev.Kill) and isinstance(event.lost_seconds, int | float):
            parts.append(f"lost {format_duration(float(event.lost_seconds))}")
        if isinstance(event, ev.Restart) and isinstance(event.wait, int | float):
            parts.append(f"after {format_duration(float(event.wait))}")
        change = _change(event)
        if change:
            parts.append(f"then {change}")
        return ", ".join(parts)
    if isinstance(event, ev.Checkpoint):
        if event.error or event.corrupt:
            return f"failed: {event.error or 'corrupt ' + str(event.corrupt)}"
        seconds = event.seconds
        took = f" in {format_duration(float(seconds))}" if isinstance(seconds, int | float) else ""
        return f"epoch {event.epoch}, step {event.step}{took}"
    skip = {"config", "table", "fit", "pid", "supervisor"}
    return ", ".join(f"{k} {value_text(k, v)}" for k, v in event.details().items() if k not in skip)
