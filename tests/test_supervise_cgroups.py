"""Where the memory cap makes its cgroups: cgroup v2 on a fake tree (v1 for real: test_supervise_run)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from oomguard.supervise import cap as cap_module
from oomguard.supervise import run_command
from oomguard.supervise.cap import CgroupCap, PollCap, make_cap
from oomguard.supervise.cgroups import Site, find_site

MB = 1000**2


def tree(root: Path, files: dict[str, str]) -> None:
    """A fake cgroup filesystem: ``files`` maps paths under ``root`` to their contents."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def mounts(v2: Path | None = None, v1: Path | None = None) -> str:
    lines = ["proc /proc proc rw,nosuid 0 0"]
    if v2 is not None:
        lines.append(f"cgroup2 {v2} cgroup2 rw,nosuid,nodev,noexec,relatime 0 0")
    if v1 is not None:
        lines.append(f"cgroup {v1} cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0")
    return "\n".join(lines) + "\n"


def delegated(root: Path) -> Path:
    """A systemd-like v2 tree: we run in app.scope; its parent hands the memory controller down."""
    mount = root / "cgroup2"
    tree(mount, {
        "cgroup.controllers": "cpuset cpu io memory pids\n",
        "user.slice/cgroup.subtree_control": "cpu memory pids\n",
        "user.slice/cgroup.procs": "",
        "user.slice/app.scope/cgroup.procs": "4242\n",
        "user.slice/app.scope/cgroup.subtree_control": "",
        "user.slice/app.scope/memory.max": "max\n",
    })
    return mount


def test_a_delegated_v2_tree_gets_the_caps_cgroups_beside_our_own(tmp_path: Path) -> None:
    mount = delegated(tmp_path)
    site, why = find_site("0::/user.slice/app.scope\n", mounts(v2=mount))
    assert (site, why) == (Site(mount / "user.slice", 2), "")


def test_a_v2_root_that_hands_memory_down_is_used_itself(tmp_path: Path) -> None:
    mount = tmp_path / "cgroup2"
    tree(mount, {"cgroup.controllers": "cpu memory\n", "cgroup.subtree_control": "memory\n",
                 "cgroup.procs": ""})
    assert find_site("0::/\n", mounts(v2=mount)) == (Site(mount, 2), "")


def test_memory_bound_to_v1_in_a_hybrid_tree_falls_back_to_v1(tmp_path: Path) -> None:
    # What this machine has: cgroup2 mounted without controllers, memory on cgroup v1.
    unified, memory = tmp_path / "unified", tmp_path / "memory"
    tree(unified, {"cgroup.controllers": "", "cgroup.procs": "1\n"})
    tree(memory, {"ci/job/memory.limit_in_bytes": "9223372036854771712\n"})
    site, _why = find_site("4:memory:/ci/job\n0::/\n", mounts(v2=unified, v1=memory))
    assert site == Site(memory / "ci" / "job", 1)


def test_no_usable_cgroup_says_why_in_a_few_words(tmp_path: Path) -> None:
    mount = delegated(tmp_path)
    (mount / "user.slice" / "cgroup.subtree_control").write_text("cpu pids\n")  # memory not handed down
    site, why = find_site("0::/user.slice/app.scope\n", mounts(v2=mount))
    assert site is None
    assert why == f"cgroup v2: {mount / 'user.slice'} does not hand the memory controller down " \
                  "(cgroup.subtree_control)"
    assert find_site("0::/\n", mounts()) == (None, "no cgroup v2 hierarchy is mounted")


def test_a_v2_cap_sets_memory_max_and_counts_the_kernels_oom_kills(tmp_path: Path) -> None:
    mount = delegated(tmp_path)
    cap = CgroupCap(300 * MB, Site(mount / "user.slice", 2))
    procs = cap.prepare(1)
    directory = procs.parent
    assert directory.parent == mount / "user.slice" and procs.name == "cgroup.procs"
    assert (directory / "memory.max").read_text() == str(300 * MB)
    assert (directory / "memory.swap.max").read_text() == "0"
    assert not (directory / "memory.limit_in_bytes").exists()
    (directory / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 0\noom_kill 0\n")
    assert not cap.hit()
    (directory / "memory.events").write_text("low 0\nhigh 0\nmax 15\noom 1\noom_kill 1\n")
    assert cap.hit() and cap.kind == "cgroup"
    cap.release()  # a real cgroup is removed; the fake one keeps its plain files
    assert cap.directory is None


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def print(self, *objects: Any) -> None:
        self.lines.append(" ".join(str(o) for o in objects))


def test_without_a_cgroup_the_cap_polls_and_says_why_in_one_line(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    mount = delegated(tmp_path)
    (mount / "user.slice" / "cgroup.subtree_control").write_text("cpu\n")
    fake = find_site("0::/user.slice/app.scope\n", mounts(v2=mount))
    monkeypatch.setattr(cap_module, "find_site", lambda: fake)  # the system as this fake tree shows it
    cap, why = make_cap(100 * MB)
    assert isinstance(cap, PollCap) and not isinstance(cap, CgroupCap) and why == fake[1]
    with pytest.raises(OSError, match="no cgroup can be made for the memory cap: cgroup v2: "):
        make_cap(100 * MB, use_cgroup=True)
    console = Lines()
    assert run_command([sys.executable, "-c", "pass"], tmp_path / "run", memory_limit=100 * MB,
                       console=console) == 0
    assert console.lines == [f"oomguard: memory cap: polling the run's memory every 50 ms (no cgroup: {why})"]
