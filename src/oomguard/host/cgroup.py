"""Memory cgroups: this process's limit and usage (v1 or v2), the kernel's OOM-kill count there, and the
charge of a cgroup that holds one process tree and nothing else."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
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


def cgroup_dirs(pid: int | str = "self") -> tuple[Path | None, Path | None]:
    """The cgroup v1 memory directory and cgroup v2 directory of ``pid``, where they exist."""
    v1 = v2 = None
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
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


@cache
def own_cgroup_dirs() -> tuple[Path | None, Path | None]:
    """This process's cgroup v1 memory directory and cgroup v2 directory, where they exist."""
    return cgroup_dirs("self")


_LIMIT_TTL = 2.0  # seconds a read limit is trusted: the sampler asks 20 times a second, it seldom changes
_own_limit: tuple[float, int | None, Path | None] = (-float("inf"), None, None)  # read at, limit, usage file


def cgroup_limit_and_usage() -> tuple[int | None, int | None]:
    """The memory limit and usage of this process's cgroup (None where there is no limit)."""
    global _own_limit
    now = time.monotonic()
    if now - _own_limit[0] >= _LIMIT_TTL:
        _own_limit = (now, *_read_own_limit())
    _at, limit, usage = _own_limit
    if limit is None or usage is None:
        return None, None
    return limit, _read_int(usage)


def _read_own_limit() -> tuple[int | None, Path | None]:
    v1, v2 = own_cgroup_dirs()
    if v2 is not None:
        limit = _read_int(v2 / "memory.max")
        if limit is not None:
            return limit, v2 / "memory.current"
    if v1 is not None:
        limit = _read_int(v1 / "memory.limit_in_bytes")
        if limit is not None:
            return limit, v1 / "memory.usage_in_bytes"
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


def _read_stat(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for line in lines:
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


@dataclass(frozen=True)
class TreeCgroup:
    """A memory cgroup that holds exactly one process tree and whose limit is the one that kills it."""

    directory: Path
    v2: bool

    def charge(self) -> int | None:
        """What the cgroup is charged, less the file cache it can drop without killing anything
        (cached file pages that no process maps); None where unreadable.

        The whole charge would count a dataset read from disk as used, though the kernel
        reclaims that cache before its OOM killer acts; pages mapped by a process, shared
        memory and anonymous memory stay counted, each page once.
        """
        usage = _read_int(self.directory / ("memory.current" if self.v2 else "memory.usage_in_bytes"))
        stat = _read_stat(self.directory / "memory.stat")
        if usage is None or not stat:
            return None
        if self.v2:
            cache, shmem, mapped = stat.get("file", 0), stat.get("shmem", 0), stat.get("file_mapped", 0)
        else:
            cache, shmem = stat.get("total_cache", 0), stat.get("total_shmem", 0)
            mapped = stat.get("total_mapped_file", 0)
        return max(0, usage - max(0, cache - shmem - mapped))


def tree_cgroup(pid: int, pids: Collection[int], machine: int) -> TreeCgroup | None:
    """The memory cgroup of ``pid`` where its charge is the tree's: it holds only ``pids`` (the tree),
    no cgroup below it, and a limit under ``machine`` bytes (so it, not the machine, is what kills)."""
    v1, v2 = cgroup_dirs(pid)
    for directory, is_v2, limit_file in ((v2, True, "memory.max"), (v1, False, "memory.limit_in_bytes")):
        if directory is None:
            continue
        limit = _read_int(directory / limit_file)
        if limit is None or limit >= machine:
            continue
        try:
            members = {int(p) for p in (directory / "cgroup.procs").read_text().split()}
            nested = any(entry.is_dir() for entry in directory.iterdir())
        except (OSError, ValueError):
            continue
        if members and members <= set(pids) and not nested:
            return TreeCgroup(directory, is_v2)
    return None
