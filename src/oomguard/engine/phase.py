"""One phase of a run, train or eval: its microbatch, its ceiling, and what a microbatch of it takes."""

from __future__ import annotations

from dataclasses import dataclass, field

from oomguard.engine.plan import Curve
from oomguard.engine.recovery import MemoryModel
from oomguard.engine.split import largest_chunk


@dataclass
class Phase:
    """Train or eval: its microbatch (0 until planned), the ceiling it never grows past, its memory model."""

    name: str
    size: int
    ceiling: int | None
    model: MemoryModel = field(default_factory=MemoryModel)
    auto: bool = False
    #: Set by a shrink or a plan: the size is an estimate that quiet steps may show to be too small.
    may_grow: bool = False
    #: The largest size that ran a stretch of quiet steps: as far as growing goes on host memory.
    safe: int = 0
    #: The probe's measurements of this phase (None: not probed, or resumed: then ``growth`` is what
    #: its whole steps showed).
    curve: Curve | None = None
    growth: float = 1.0

    def extra(self, size: int) -> int:
        """Bytes a microbatch of ``size`` adds to what is held: the model, or the probed curve if higher."""
        line = self.model.fixed + self.model.per_sample * size
        if self.curve is not None:
            return max(round(line), self.curve.extra(size))
        return round(line * self.growth)

    def largest(self, start: int, target: float, ceiling: int, total: int) -> int:
        """The largest size up to ``ceiling`` whose chunks of ``total`` samples are predicted to peak under
        ``target`` (0 when none)."""
        best = self.model.largest(start, target, ceiling)
        while best > 0 and start + self.extra(largest_chunk(total, best)) > target:
            best -= 1
        return best

    @property
    def words(self) -> str:
        return "training" if self.name == "train" else "evaluation"
