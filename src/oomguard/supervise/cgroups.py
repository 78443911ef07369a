"""Where the memory cap can make a cgroup of its own: a delegated cgroup v2 subtree, or cgroup v1.

cgroup v2 (the unified hierarchy, what current Linux distributions mount):
a process may create cgroups where the hierarchy is delegated to it, and a
new cgroup gets a ``memory.max`` only where its parent lists ``memory`` in
``cgroup.subtree_control``. A cgroup that holds processes may not enable
controllers for its children ("no internal processes"), so the cap's cgroups
are made beside our own (in its parent, as ``systemd-run --user`` scopes are),
or inside it only where it already hands the memory controller down. Moving
the child there needs write access to the parent's ``cgroup.procs``.

cgroup v1: the memory controller's own hierarchy, when it is mounted and our
cgroup in it is writable (as root, in many containers and CI machines).

:func:`find_site` says which one can be used, or one line saying why none can.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_PROC_CGROUP = Path("/proc/self/cgroup")
_PROC_MOUNTS = Path("/proc/self/mounts")


@dataclass(frozen=True)
class Site:
    """A cgroup under which the cap makes one cgroup per attempt."""

    parent: Path
    version: int  # 1 or 2

    @property
    def limit_file(self) -> str:
        return "memory.max" if self.version == 2 else "memory.limit_in_bytes"

    @property
    def events_file(self) -> str:
        """Where the kernel counts its OOM kills (``oom_kill N``)."""
        return "memory.events" if self.version == 2 else "memory.oom_control"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def mount_points(mounts: str) -> tuple[Path | None, Path | None]:
    """The cgroup2 mount point and the cgroup v1 memory controller's, from ``/proc/self/mounts``."""
    v2 = v1 = None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        where, kind, options = Path(parts[1]), parts[2], parts[3].split(",")
        if kind == "cgroup2" and v2 is None:
            v2 = where
        elif kind == "cgroup" and "memory" in options and v1 is None:
            v1 = where
    return v2, v1


def own_paths(cgroups: str) -> tuple[str | None, str | None]:
    """Our cgroup's path in the unified hierarchy and in v1's memory hierarchy, from ``/proc/self/cgroup``."""
    v2 = v1 = None
    for line in cgroups.splitlines():
        _number, sep, rest = line.partition(":")
        controllers, sep2, relative = rest.partition(":")
        if not sep or not sep2:
            continue
        if controllers == "":
            v2 = relative
        elif "memory" in controllers.split(","):
            v1 = relative
    return v2, v1


def _v2_site(mount: Path, relative: str) -> tuple[Site | None, str]:
    own = mount / relative.lstrip("/")
    controllers = (_read(mount / "cgroup.controllers") or "").split()
    if "memory" not in controllers:
        return None, "the memory controller is not in the cgroup v2 hierarchy (it is bound to cgroup v1)"
    candidates = [own] if own == mount else [own, own.parent]
    for parent in candidates:
        handed_down = "memory" in (_read(parent / "cgroup.subtree_control") or "").split()
        if handed_down and os.access(parent, os.W_OK) and os.access(parent / "cgroup.procs", os.W_OK):
            return Site(parent, 2), ""
    parent = candidates[-1]
    if "memory" not in (_read(parent / "cgroup.subtree_control") or "").split():
        return None, f"{parent} does not hand the memory controller down (cgroup.subtree_control)"
    return None, f"{parent} is not delegated to this user (no write access)"


def find_site(cgroups: str | None = None, mounts: str | None = None) -> tuple[Site | None, str]:
    """Where to make the cap's cgroups: cgroup v2 first, then v1; else None and why, in a few words.

    ``cgroups`` and ``mounts`` are the texts of ``/proc/self/cgroup`` and
    ``/proc/self/mounts`` (read when not given: the tests give a fake tree).
    """
    cgroups = _read(_PROC_CGROUP) if cgroups is None else cgroups
    mounts = _read(_PROC_MOUNTS) if mounts is None else mounts
    if cgroups is None or mounts is None:
        return None, "no cgroups on this system"
    v2_mount, v1_mount = mount_points(mounts)
    v2_path, v1_path = own_paths(cgroups)
    reasons = []
    if v2_mount is not None and v2_path is not None:
        site, why = _v2_site(v2_mount, v2_path)
        if site is not None:
            return site, ""
        reasons.append(f"cgroup v2: {why}")
    else:
        reasons.append("no cgroup v2 hierarchy is mounted")
    if v1_mount is not None and v1_path is not None:
        own = v1_mount / v1_path.lstrip("/")
        if (own / "memory.limit_in_bytes").exists() and os.access(own, os.W_OK):
            return Site(own, 1), ""
        reasons.append(f"cgroup v1: {own} is not writable")
    return None, "; ".join(reasons)
