"""One attempt: start the child, watch its memory tree, wait for its end, gather the evidence.

    keeper (once per supervisor): ends the child's process group and cgroup if the supervisor dies
    the cap's cgroup for this attempt (if any); the keeper is told about it
    start the child: bound to the supervisor, in the cgroup, stdout a pseudo-terminal on a terminal
    sample its memory tree every ``interval`` (into ``timeline``); the poll cap kills it over the cap
    wait for it; kill what is left of its process group after a failure; drain its output
    evidence: the last ~2 s of samples, the cap's and the kernel's OOM kills
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from oomguard import environment, host
from oomguard.memory.sampler import MemorySampler, Sample
from oomguard.supervise.attribution import Evidence
from oomguard.supervise.cap import CgroupCap, PollCap, make_cap
from oomguard.supervise.child import Child
from oomguard.supervise.keeper import Keeper

WINDOW_SECONDS = 2.0  # "the last samples": what attribution looks at


@dataclass
class Outcome:
    returncode: int
    evidence: Evidence
    stderr: list[str]
    tail: list[str]
    seconds: float
    began: float  # unix seconds: when the child was started
    ended: float  # and when its death was seen


class Attempts:
    """Runs the attempts of one supervisor; ``child`` is the one running now (for the signal handlers)."""

    def __init__(self, cap: int | None, use_cgroup: bool | None, timeline: Path | None, interval: float,
                 terminal: bool, say: Callable[[str], None]) -> None:
        self.cap_limit = cap
        self.cap, self.cap_note = make_cap(cap, use_cgroup)
        self.timeline = timeline
        self.interval = interval
        self.terminal = terminal
        self.say = say
        self.keeper: Keeper | None = None
        self.child: Child | None = None

    def open(self) -> None:
        """Start the keeper; say once why the cap polls, when it does for want of a cgroup."""
        if self.cap is not None and self.cap_note:
            self.say(f"memory cap: polling the run's memory every {self.interval * 1000:.0f} ms "
                     f"(no cgroup: {self.cap_note})")
        self.keeper = Keeper.start()

    def close(self) -> None:
        if self.keeper is not None:
            self.keeper.close()
            self.keeper = None

    def run(self, argv: list[str], number: int, started: Callable[[Child], None],
            env: dict[str, str] | None = None) -> Outcome:
        """Run attempt ``number`` of ``argv`` (with ``env`` besides ours) to its end; ``started`` is called
        once the child runs."""
        procs = self._prepare_cap(number)
        directory = self.cap.directory if isinstance(self.cap, CgroupCap) else None
        if self.keeper is not None and directory is not None:
            self.keeper.watch_cgroup(directory)
        kills_before = host.own_oom_kills()
        clock, began = time.monotonic(), time.time()
        window: deque[Sample] = deque(maxlen=max(1, int(WINDOW_SECONDS / self.interval)))
        ours = {environment.SUPERVISED: str(os.getpid()), environment.ATTEMPT: str(number)}
        try:
            child = Child.start(argv, cgroup_procs=procs, env={**(env or {}), **ours}, terminal=self.terminal)
        except BaseException:
            self._release_cap(directory)
            raise
        if self.keeper is not None:
            self.keeper.watch_group(child.pid)
        self.child = child
        sampler = MemorySampler(csv_path=self.timeline, interval=self.interval, pid=child.pid)
        sampler.add_listener(lambda sample: self._on_sample(sample, window, child))
        sampler.start()
        started(child)
        returncode = child.wait()
        assert returncode is not None
        ended = time.time()
        sampler.stop()
        if returncode != 0:
            child.kill_group()  # workers it left behind would hold memory the next attempt needs
        child.finish_output()
        if self.keeper is not None:
            self.keeper.forget(child.pid)
        self.child = None
        cap_hit = self.cap.hit() if self.cap is not None else False
        self._release_cap(directory)
        evidence = Evidence(
            peak_rss=max((s.tree_memory for s in window), default=0),
            min_available=min((s.system_available for s in window), default=None),
            total=host.total_memory(),
            limit=self.cap_limit,
            cap_hit=cap_hit,
            kernel_oom_kills=host.own_oom_kills() - kills_before,
        )
        return Outcome(returncode, evidence, child.stderr_tail.lines(), child.tail.lines(),
                       time.monotonic() - clock, began, ended)

    @property
    def killer(self) -> str | None:
        return self.cap.kind if self.cap is not None else None

    def _prepare_cap(self, number: int) -> Path | None:
        if self.cap is None:
            return None
        try:
            return self.cap.prepare(number)
        except OSError as exc:
            assert isinstance(self.cap, CgroupCap)
            self.say(f"cannot use a cgroup for the memory cap ({exc}); polling memory instead")
            self.cap = PollCap(self.cap.limit)
            return None

    def _release_cap(self, directory: Path | None) -> None:
        if self.cap is not None:
            self.cap.release()
        if self.keeper is not None and directory is not None:
            self.keeper.forget(directory)

    def _on_sample(self, sample: Sample, window: deque[Sample], child: Child) -> None:
        window.append(sample)
        if self.cap is not None and not self.cap.hit() and self.cap.over(sample.tree_memory):
            child.kill_tree()


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False
