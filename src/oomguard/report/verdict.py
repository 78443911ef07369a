"""The run in one sentence: did it finish, what did it survive, how close to the budget it ran, whether
its memory parted from the plan's prediction.

Pure functions of the event list and the memory summary, so the wording is
tested without files: ``finished in 3h02m; 2 memory kills survived; peak
11.2 GB of a 12 GB budget; no leak``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from oomguard import events as ev
from oomguard.report.prediction import parted
from oomguard.report.timeline import MemorySummary
from oomguard.units import format_bytes, format_duration

#: How a kill or restart cause reads in a sentence (singular, plural).
CAUSES: dict[str, tuple[str, str]] = {
    "memory_kill": ("memory kill", "memory kills"),
    "unexplained_kill": ("unexplained kill", "unexplained kills"),
    "oom": ("out-of-memory crash", "out-of-memory crashes"),
    "bug": ("crash", "crashes"),
    "cap": ("memory-cap kill", "memory-cap kills"),
}
_LIFECYCLE = (ev.Start, ev.Restart, ev.Kill, ev.Finish, ev.Stop)
#: Stop causes that are a request or a pause, not a failure (the child's own; the supervisor's interrupt).
_STOPPED = ("signal", "pressure", "checkpoints_failing", "rehearsal", "peer", "interrupted")


def typed(events: Sequence[ev.Event | Mapping[str, Any]]) -> list[ev.Event]:
    """Events as their typed classes (lines read as dicts are parsed)."""
    return [e if isinstance(e, ev.Event) else ev.parse_event(e) for e in events]


def size(n: float | None) -> str:
    """``12e9 -> '12 GB'``, ``11.24e9 -> '11.2 GB'``."""
    return format_bytes(n).replace(".0 ", " ")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def cause_words(cause: Any, count: int = 1) -> str:
    singular, plural = CAUSES.get(str(cause), (f"{cause} kill", f"{cause} kills"))
    return singular if count == 1 else plural


def budget_of(events: Sequence[ev.Event]) -> int | None:
    """The latest budget on record (start, plan and oom events carry it)."""
    for event in reversed(events):
        if isinstance(event, ev.Start | ev.Plan | ev.Oom):
            value = _number(event.budget)
            if value is not None and value > 0:
                return int(value)
    return None


def measured_peak(events: Sequence[ev.Event], memory: MemorySummary | None) -> int | None:
    """The peak the budget is compared against: the timeline's ``used`` (memory used as the device counts
    it); in a file from before that column, the device allocator on CUDA and the process tree elsewhere."""
    if memory is None or memory.rows == 0:
        return None
    if memory.peak_used:
        return memory.peak_used
    device = next((str(e.device or "") for e in reversed(events) if isinstance(e, ev.Start)), "")
    if device.startswith("cuda"):
        return memory.peak_device_allocated or memory.peak_device_reserved or memory.peak_tree_rss
    return memory.peak_tree_rss


def _survived(events: Sequence[ev.Event], index: int) -> bool:
    return any(isinstance(e, ev.Start | ev.Restart | ev.Finish | ev.Epoch) for e in events[index + 1:])


def _span(events: Sequence[ev.Event], memory: MemorySummary | None, until: float | None = None) -> float:
    times = [e.time for e in events if e.time]
    if memory is not None and memory.start is not None and memory.end is not None:
        times += [memory.start, memory.end]
    if not times:
        return 0.0
    return (until if until is not None else max(times)) - min(times)


def status(events: Sequence[ev.Event], memory: MemorySummary | None = None) -> str:
    """``finished in 1h02m``, ``stopped (signal)``, ``failed with exit code 3`` or ``unfinished: ...``."""
    lifecycle = [(i, e) for i, e in enumerate(events) if isinstance(e, _LIFECYCLE)]
    last_index, last = lifecycle[-1] if lifecycle else (-1, None)
    if isinstance(last, ev.Finish):
        return f"finished in {format_duration(_span(events, memory, until=last.time))}"
    if isinstance(last, ev.Stop):
        if last.cause is not None and last.cause not in _STOPPED and isinstance(last.exit_code, int):
            return f"failed with exit code {last.exit_code}"
        return f"stopped ({last.reason})" if last.reason else "stopped"
    if isinstance(last, ev.Kill) and not _survived(events, last_index):
        words = cause_words(last.cause)
        article = "an" if words[0] in "aeiou" else "a"
        return f"unfinished: ended by {article} {words} that was not restarted"
    where = []
    epochs = [epoch for e in events if isinstance(epoch := getattr(e, "epoch", None), int)]
    if epochs:
        where.append(f"at epoch {epochs[-1]}")
    span = _span(events, memory)
    if span > 0:
        where.append(f"{format_duration(span)} in")
    tail = f" (last record {', '.join(where)})" if where else ""
    return f"unfinished: no finish event, still running or stopped without a trace{tail}"


def _kills(events: Sequence[ev.Event]) -> list[str]:
    total: Counter[str] = Counter()
    survived: Counter[str] = Counter()
    for i, event in enumerate(events):
        if isinstance(event, ev.Kill):
            cause = str(event.cause or "unexplained_kill")
            total[cause] += 1
            survived[cause] += _survived(events, i)
    parts = []
    for cause, n in total.items():
        words = f"{n} {cause_words(cause, n)}"
        if survived[cause] == n:
            parts.append(f"{words} survived")
        elif survived[cause]:
            parts.append(f"{words} ({survived[cause]} survived)")
        else:
            parts.append(words)
    return parts


def _microbatch_trend(events: Sequence[ev.Event]) -> str:
    sizes = []
    for event in events:
        if isinstance(event, ev.Plan) and isinstance(event.microbatch, int):
            sizes.append(event.microbatch)
        elif (isinstance(event, ev.Shrink | ev.Grow) and (event.phase or "train") == "train"
              and isinstance(event.to, int)):
            sizes.append(event.to)
    return f", microbatch {sizes[0]} → {sizes[-1]}" if len(sizes) > 1 and sizes[0] != sizes[-1] else ""


def _leak(events: Sequence[ev.Event]) -> str:
    leaks = ev.of_kind(list(events), ev.Leak)
    if not leaks:
        return "no leak"
    last = leaks[-1]
    per_hour = _number(last.bytes_per_hour)
    growth = _number(last.growth)
    if per_hour is not None:
        detail = f" (+{size(per_hour)}/h)"
    elif growth is not None:
        detail = f" (+{size(growth)})"
    else:
        detail = ""
    return f"leak suspected{detail}"


def verdict(given: Sequence[ev.Event | Mapping[str, Any]], memory: MemorySummary | None) -> str:
    """One sentence for a person opening the report: outcome; what it survived; memory; leak."""
    if not given and memory is None:
        return "no events and no memory samples recorded"
    events = typed(given)
    parts = [status(events, memory)]
    parts += _kills(events)
    counts = Counter(ev.name_of(e) for e in events)
    if counts["oom"]:
        n = counts["oom"]
        parts.append(f"{n} out-of-memory error{'s' if n != 1 else ''} caught{_microbatch_trend(events)}")
    savers = ev.savers_in_force(events)
    if savers:
        parts.append(f"memory savers: {', '.join(savers)}")
    for event in ev.of_kind(events, ev.Fallback):
        parts.append(f"fell back to {event.to}" if event.to else "fell back to a safer device")
    if counts["pressure"]:
        n = counts["pressure"]
        parts.append(f"{n} memory-pressure warning{'s' if n != 1 else ''}")
    peak, budget = measured_peak(events, memory), budget_of(events)
    if peak is not None:
        if budget is None:
            parts.append(f"peak {size(peak)}, no budget")
        elif peak > budget:
            parts.append(f"peak {size(peak)}, over the {size(budget)} budget")
        else:
            parts.append(f"peak {size(peak)} of a {size(budget)} budget")
    apart = parted(events)
    if apart is not None:
        parts.append(apart)
    parts.append(_leak(events))
    return "; ".join(parts)
