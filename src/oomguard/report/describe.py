"""Short words for one event's details, shared by the chart's tooltips and the report's tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

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


def _change(event: Mapping[str, Any]) -> str:
    overrides = event.get("overrides")
    if isinstance(overrides, dict) and overrides:
        return " ".join(f"{k}={value_text(str(k), v)}" for k, v in overrides.items())
    if isinstance(overrides, list | tuple) and overrides:
        return " ".join(str(o) for o in overrides)
    if isinstance(overrides, str) and overrides:
        return overrides
    plan = event.get("plan")
    if isinstance(plan, dict) and plan:
        return value_text("plan", plan)
    return ""


def describe(event: Mapping[str, Any]) -> str:
    """``oom``: ``train, microbatch 32, peak 3.2 GB``; ``kill``: ``memory kill, signal 9``; ..."""
    kind = event.get("event")
    get = event.get
    if kind == "plan":
        text = f"microbatch {get('microbatch')}, eval {get('eval_microbatch')}"
        return text + (f", budget {size(get('budget'))}" if get("budget") else "")
    if kind == "oom":
        peak = f", peak {size(get('peak'))}" if get("peak") else ""
        return f"{get('phase', 'train')}, microbatch {get('microbatch')}{peak}"
    if kind in ("shrink", "grow"):
        reason = f" ({get('reason')})" if get("reason") else ""
        return f"{get('phase', 'train')} microbatch {get('from')} → {get('to')}{reason}"
    if kind in ("kill", "restart"):
        parts = [cause_words(get("cause"))] if get("cause") else []
        if get("signal") is not None:
            parts.append(f"signal {get('signal')}")
        if get("exit_code") is not None:
            parts.append(f"exit code {get('exit_code')}")
        if get("attempt") is not None:
            parts.append(f"attempt {get('attempt')}")
        change = _change(event)
        if change:
            parts.append(f"then {change}")
        return ", ".join(parts)
    if kind == "checkpoint":
        if get("error") or get("corrupt"):
            return f"failed: {get('error') or 'corrupt ' + str(get('corrupt'))}"
        seconds = get("seconds")
        took = f" in {format_duration(float(seconds))}" if isinstance(seconds, int | float) else ""
        return f"epoch {get('epoch')}, step {get('step')}{took}"
    skip = {"time", "event", "config", "table", "fit", "pid"}
    return ", ".join(f"{k} {value_text(k, v)}" for k, v in event.items() if k not in skip)
