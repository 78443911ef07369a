"""``memory.csv`` read in one streaming pass into a bounded, spike-preserving timeline.

A 70-hour run sampled every 50 ms has five million rows; the report must not
hold them. Rows are folded into time buckets that keep the minimum and the
maximum of every series, so a 200 ms spike that got the process killed is still
on the chart. When there are more than ``2 * max_points`` buckets the bucket
width doubles and neighbours merge, so memory stays bounded whatever the
run's length. Peaks and minima in the summary are exact (taken over every row).
A torn last line (a writer killed mid-row) and repeated headers are skipped.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

#: What the report plots, and the memory.csv columns each one is made of. ``tree_rss`` is the process
#: tree's host memory: the ``tree_memory`` column (each page counted once) where the file has it, else
#: ``process_rss + children_rss`` (files written before it existed).
SERIES = ("tree_rss", "device_allocated", "device_reserved", "system_available")
_START_WIDTH = 0.01  # seconds; doubled as the run gets longer


@dataclass(frozen=True)
class RankTimeline:
    """One rank's downsampled series: per bucket, its time and each series' min and max."""

    rank: int
    time: list[float]
    low: dict[str, list[float]]
    high: dict[str, list[float]]


@dataclass(frozen=True)
class MemorySummary:
    """Exact figures over every row of memory.csv (bytes, unix times)."""

    rows: int = 0
    start: float | None = None
    end: float | None = None
    peak_tree_rss: int = 0
    peak_tree_rss_time: float | None = None
    peak_device_allocated: int = 0
    peak_device_reserved: int = 0
    #: The highest ``used`` (the device's one definition of memory used); 0 in files without the column.
    peak_used: int = 0
    min_available: int | None = None

    @property
    def seconds(self) -> float:
        return (self.end - self.start) if self.start is not None and self.end is not None else 0.0


@dataclass(frozen=True)
class Timeline:
    ranks: dict[int, RankTimeline]
    summary: MemorySummary
    columns: tuple[str, ...] = field(default_factory=tuple)

    def has(self, series: str) -> bool:
        """Whether ``series`` was recorded and is not all zero (CPU runs have no device memory)."""
        column = "process_rss" if series == "tree_rss" else series
        if column not in self.columns:
            return False
        return any(value > 0 for t in self.ranks.values() for value in t.high[series])


class _Folder:
    """Accumulates rows into min/max buckets, doubling the bucket width to stay bounded."""

    def __init__(self, max_points: int) -> None:
        self.max_points = max_points
        self.width = _START_WIDTH
        self.origin: float | None = None
        # rank -> bucket index -> [t_min, t_max, lo per series..., hi per series...]
        self.buckets: dict[int, dict[int, list[float]]] = {}

    def add(self, rank: int, t: float, values: list[float]) -> None:
        if self.origin is None:
            self.origin = t
        index = math.floor((t - self.origin) / self.width)
        buckets = self.buckets.setdefault(rank, {})
        bucket = buckets.get(index)
        if bucket is None:
            buckets[index] = [t, t, *values, *values]
            if len(buckets) > 2 * self.max_points:
                self._coarsen()
            return
        n = len(values)
        if t < bucket[0]:
            bucket[0] = t
        elif t > bucket[1]:
            bucket[1] = t
        for i, value in enumerate(values):
            if value < bucket[2 + i]:
                bucket[2 + i] = value
            if value > bucket[2 + n + i]:
                bucket[2 + n + i] = value

    def _coarsen(self) -> None:
        self.width *= 2
        for rank, buckets in self.buckets.items():
            merged: dict[int, list[float]] = {}
            for index, bucket in buckets.items():
                target = merged.get(index // 2)
                if target is None:
                    merged[index // 2] = bucket
                    continue
                n = (len(bucket) - 2) // 2
                target[0] = min(target[0], bucket[0])
                target[1] = max(target[1], bucket[1])
                for i in range(n):
                    target[2 + i] = min(target[2 + i], bucket[2 + i])
                    target[2 + n + i] = max(target[2 + n + i], bucket[2 + n + i])
            self.buckets[rank] = merged

    def result(self) -> dict[int, RankTimeline]:
        out: dict[int, RankTimeline] = {}
        n = len(SERIES)
        for rank, buckets in sorted(self.buckets.items()):
            ordered = [buckets[i] for i in sorted(buckets)]
            out[rank] = RankTimeline(
                rank=rank,
                time=[(b[0] + b[1]) / 2 for b in ordered],
                low={name: [b[2 + i] for b in ordered] for i, name in enumerate(SERIES)},
                high={name: [b[2 + n + i] for b in ordered] for i, name in enumerate(SERIES)},
            )
        return out


def parse_number(text: str) -> float | None:
    """A finite number from a CSV cell, or None for a blank, bad, NaN or infinite one."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_timeline(path: Path, max_points: int = 1500) -> Timeline | None:
    """The downsampled timeline of ``memory.csv``, or None when it has no readable row.

    ``max_points`` bounds the buckets kept per rank (between ``max_points`` and
    twice that once the run is long enough).
    """
    if not path.is_file():
        return None
    folder = _Folder(max_points)
    rows = 0
    peak_rss = peak_alloc = peak_reserved = peak_used = 0
    peak_rss_time: float | None = None
    min_available: float | None = None
    start = end = None
    with open(path, newline="", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or "time" not in header:
            return None
        index = {name: i for i, name in enumerate(header)}
        width = len(header)
        columns = tuple(header)
        get = index.get
        t_i, rank_i = index["time"], get("rank")
        rss_i, child_i = get("process_rss"), get("children_rss")
        if "tree_memory" in index:  # counted once per page: the RSS sum counts workers' shared pages again
            rss_i, child_i = index["tree_memory"], None
        alloc_i, res_i, avail_i = get("device_allocated"), get("device_reserved"), get("system_available")
        used_i = get("used")
        for row in reader:
            if len(row) != width:
                continue  # torn line from a killed writer
            try:
                t = float(row[t_i])
                rss = (float(row[rss_i]) if rss_i is not None else 0.0) + (
                    float(row[child_i]) if child_i is not None and row[child_i] else 0.0)
                alloc = float(row[alloc_i]) if alloc_i is not None and row[alloc_i] else 0.0
                reserved = float(row[res_i]) if res_i is not None and row[res_i] else 0.0
                used = float(row[used_i]) if used_i is not None and row[used_i] else 0.0
                avail = parse_number(row[avail_i]) if avail_i is not None and row[avail_i] else None
                rank = int(row[rank_i]) if rank_i is not None and row[rank_i] else 0
            except ValueError:
                continue  # a repeated header or a torn number
            if not math.isfinite(t):
                continue
            rows += 1
            start = t if start is None or t < start else start
            end = t if end is None or t > end else end
            if rss > peak_rss:
                peak_rss, peak_rss_time = int(rss), t
            peak_alloc = max(peak_alloc, int(alloc))
            peak_reserved = max(peak_reserved, int(reserved))
            peak_used = max(peak_used, int(used))
            if avail is not None and (min_available is None or avail < min_available):
                min_available = avail
            folder.add(rank, t, [rss, alloc, reserved, avail if avail is not None else math.nan])
    if rows == 0:
        return None
    summary = MemorySummary(
        rows=rows, start=start, end=end, peak_tree_rss=peak_rss, peak_tree_rss_time=peak_rss_time,
        peak_device_allocated=peak_alloc, peak_device_reserved=peak_reserved, peak_used=peak_used,
        min_available=int(min_available) if min_available is not None else None,
    )
    return Timeline(ranks=folder.result(), summary=summary, columns=columns)
