"""Caution from evidence: how much room the plan leaves free, from how well its predictions matched.

The margin is a share of the room between what is held all epoch and the
budget. It starts from the probe (the configured ``headroom``, or wider when
the probed peaks scatter around their line), then each finished epoch's
measured peak is held against the prediction: a peak within the margin
narrows it (halved, down to :data:`MIN_MARGIN`, never below what an earlier
epoch showed was needed), a peak beyond it widens it to what that epoch
needed, with :data:`WIDEN` to spare. A well-predicted run so takes the
larger, faster microbatch; the Guard's over-budget recovery stays the safety
net for the steps in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from oomguard import events as ev
from oomguard.engine.prediction import Prediction
from oomguard.events import PARTED, PHASE_PARTS

#: The narrowest margin (share of the room) that confirmed predictions lead to.
MIN_MARGIN = 0.03
#: The widest: half of the room stays free however badly predictions have matched.
MAX_MARGIN = 0.5
#: A measured shortfall is kept free this many times over.
WIDEN = 1.5


@dataclass
class Caution:
    """The margin now, and the least that the evidence so far allows."""

    margin: float
    floor: float = MIN_MARGIN
    confirmed: int = 0
    missed: int = 0

    @classmethod
    def start(cls, headroom: float, spread: float = 0.0) -> Caution:
        """``1 - headroom`` of the room, or more when the probe's points scattered by ``spread`` of it."""
        return cls(margin=_clamp(max(1.0 - headroom, WIDEN * spread)))

    def update(self, predicted: int, measured: int, room: float) -> bool:
        """Take one epoch's evidence (``room``: budget less what is held); True when it was a miss."""
        if room <= 0:
            return False
        short = (measured - predicted) / room  # how much of the room the prediction fell short by
        if short > self.margin:
            self.missed += 1
            self.floor = max(self.floor, _clamp(WIDEN * short))
            self.margin = self.floor
            return True
        self.confirmed += 1
        self.floor = max(self.floor, _clamp(WIDEN * short))
        self.margin = max(self.floor, self.margin / 2)
        return False

    def state_dict(self) -> dict[str, float]:
        return {"margin": self.margin, "margin_floor": self.floor, "confirmed": self.confirmed,
                "missed": self.missed}

    def load_state_dict(self, state: dict[str, int | float]) -> None:
        self.margin = float(state.get("margin", self.margin))
        self.floor = float(state.get("margin_floor", self.floor))
        self.confirmed = int(state.get("confirmed", self.confirmed))
        self.missed = int(state.get("missed", self.missed))


def _clamp(margin: float) -> float:
    return min(MAX_MARGIN, max(MIN_MARGIN, margin))


@dataclass
class Observed:
    """What the Guard measured of an epoch's parts: the least held between steps, the largest phase peaks."""

    held: int | None = None
    phases: dict[str, int] = field(default_factory=dict)
    #: The largest microbatch each phase ran at: the plan in force, as far as the peak goes.
    sizes: dict[str, int] = field(default_factory=dict)
    #: Bytes of the largest checkpoint snapshot taken (0: none was in flight in this epoch).
    snapshot: int = 0

    def between_steps(self, used: int) -> None:
        self.held = used if self.held is None else min(self.held, used)

    def phase(self, name: str, peak: int | None, size: int) -> None:
        self.sizes[name] = max(self.sizes.get(name, 0), size)
        if peak:
            self.phases[name] = max(self.phases.get(name, 0), peak)

    def parts(self) -> dict[str, int]:
        """``held`` and each phase's peak above it, as measured (bytes)."""
        held = self.held or 0
        out = {"held": held} if self.held is not None else {}
        out.update({name: max(0, peak - held) for name, peak in self.phases.items() if name in PHASE_PARTS})
        return out


def grown_part(predicted: Prediction, measured: dict[str, int]) -> tuple[str, int]:
    """The part that went furthest over its prediction, and by how many bytes.

    ``held`` is compared without the snapshot (between steps no checkpoint is
    usually in flight); a phase by what it added over what was held.
    """
    held = predicted.between_steps
    growth = {"held": measured.get("held", held) - held}
    for name in PHASE_PARTS:
        if name in measured:
            growth[name] = measured[name] - predicted.part(name)
    name = max(growth, key=lambda key: growth[key])
    return name, growth[name]


def peak_check(epoch: int, predicted: Prediction, measured: int, observed: Observed, margin: float,
               sizes: tuple[int, int | None]) -> ev.PeakCheck:
    """The ``peak_check`` event of an epoch: the peaks, the parts, and the part that grew when they parted."""
    parts = observed.parts()
    grew = grew_by = None
    if abs(measured - predicted.peak) > PARTED * predicted.peak:
        grew, grew_by = grown_part(predicted, parts)
    return ev.PeakCheck(epoch=epoch, predicted=predicted.peak, measured=measured, microbatch=sizes[0],
                        eval_microbatch=sizes[1], margin=round(margin, 4), parts=predicted.components(),
                        measured_parts=parts, grew=grew, grew_by=grew_by)
