"""This process's cgroup: its memory limit and usage (v1 or v2) and the kernel's OOM-kill count there."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_CGROUP_V1 = Path("/sys/fs/cgroup/memory")
_CGROUP_V2 = Path("/sys/fs/cgroup")
_NO_LIMIT = 1 << 60


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value < _NO_LIMIT else None


@cache
def own_cgroup_dirs() -> tuple[Path | None, Path | None]:
    """This process's cgroup v1 memory directory and cgroup v2 directory, where they exist."""
    v1 = v2 = None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        _hierarchy, controllers, relative = line.split(":", 2)
        relative = relative.lstrip("/")
        if "memory" in controllers.split(","):
            candidate = _CGROUP_V1 / relative
            v1 = candidate if (candidate / "memory.limit_in_bytes").exists() else None
        elif controllers == "":
            candidate = _CGROUP_V2 / relative
            v2 = candidate if (candidate / "memory.max").exists() else None
    return v1, v2


def cgroup_limit_and_usage() -> tuple[int | None, int | None]:
    """The memory limit and usage of this process's cgroup (None where there is no limit)."""
    v1, v2 = own_cgroup_dirs()
    if v2 is not None:
        limit = _read_int(v2 / "memory.max")
        if limit is not None:
            return limit, _read_int(v2 / "memory.current")
    if v1 is not None:
        limit = _read_int(v1 / "memory.limit_in_bytes")
        if limit is not None:
            return limit, _read_int(v1 / "memory.usage_in_bytes")
    return None, None


def oom_kills(file: Path) -> int:
    """The ``oom_kill`` count in a cgroup's ``memory.oom_control`` (v1) or ``memory.events`` (v2)."""
    try:
        for line in file.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def own_oom_kills() -> int:
    """Processes of our own cgroup (the child's, when it has no cap) that the kernel OOM-killed.

    Counting in our cgroup, not the whole machine's ``/proc/vmstat``, keeps
    other programs' OOM kills from being blamed on the child. 0 where unknown.
    """
    v1, v2 = own_cgroup_dirs()
    if v1 is not None:
        return oom_kills(v1 / "memory.oom_control")
    if v2 is not None:
        return oom_kills(v2 / "memory.events")
    return 0
