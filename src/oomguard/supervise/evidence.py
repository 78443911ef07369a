"""What a child's own memory timeline says about its last seconds: memory the supervisor cannot see.

The supervisor samples its child's process tree (RSS), which on a Mac leaves
out Metal's memory: MPS tensors live in the GPU driver's memory, and macOS
kills on the sum. The child's sampler wrote ``memory.csv`` rows with ``used``,
its device's one definition of memory used (host + Metal driver memory on
MPS), and rows written before a SIGKILL survive it. So the supervisor reads
the newest rows of the attempt back: their highest ``used`` is evidence for a
memory kill, on devices whose memory is the host's (``cpu``, ``mps``). A
discrete GPU's ``used`` is GPU memory, which says nothing about an OS kill.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

#: Bytes read from the end of memory.csv (a row is ~80 bytes: several seconds of samples of a few ranks).
TAIL_BYTES = 16384
#: Devices whose memory the OS counts (unified with the host), as the child's ``start`` event names them.
HOST_MEMORY_DEVICES = ("cpu", "mps")


def tail_rows(path: Path, size: int = TAIL_BYTES) -> tuple[list[str], list[list[str]]]:
    """The header and the whole rows among the last ``size`` bytes of a CSV (a torn last row dropped)."""
    try:
        with open(path, "rb") as handle:
            header = handle.readline().decode("utf-8", errors="replace").strip().split(",")
            body = handle.tell()
            start = max(body, handle.seek(0, io.SEEK_END) - size)
            handle.seek(start)
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return [], []
    if start > body and lines:
        lines = lines[1:]  # the first line read is cut
    rows = [row for row in csv.reader(lines) if len(row) == len(header) and row != header]
    return header, rows


def counts_host_memory(device: str | None) -> bool:
    """Whether a child training on ``device`` (``mps``, ``cuda:0``...) counts host memory in ``used``."""
    return device is not None and device.split(":")[0] in HOST_MEMORY_DEVICES


def recent_used(path: Path, since: float | None = None, window: float = 2.0) -> int | None:
    """The highest ``used`` of the rows written in the last ``window`` seconds of the timeline (and not
    before ``since``, the attempt's start); None where there are none."""
    header, rows = tail_rows(path)
    if "used" not in header or "time" not in header:
        return None
    at_time, at_used = header.index("time"), header.index("used")
    readings: list[tuple[float, int]] = []
    for row in rows:
        try:
            readings.append((float(row[at_time]), int(float(row[at_used]))))
        except ValueError:
            continue
    if since is not None:
        readings = [(t, used) for t, used in readings if t >= since]
    if not readings:
        return None
    newest = max(t for t, _ in readings)
    return max(used for t, used in readings if t >= newest - window)
