"""The epoch's peak predicted from its parts, not just the training step's.

What an epoch peaks at is everything held throughout (the process itself,
the weights, the optimizer state as it will be once training runs, an EMA
copy, images a dataset keeps decoded, a checkpoint snapshot that may be in
flight, the loader workers' own memory) plus the largest of the things that happen one at a time (a
training step's activations and gradients at the microbatch, an evaluation
microbatch, the optimizer step's temporaries)::

    peak = process + model + optimizer + ema + cache + snapshot + workers
           + max(activations, evaluation, optimizer_step)

Every part is measured by the probe or counted from tensors; a memory saver
is one more factor on a part (:meth:`Prediction.scaled`: activation
checkpointing on ``activations``, optimizer offload on ``optimizer``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from oomguard.events import HELD_PARTS, PART_WORDS, PHASE_PARTS
from oomguard.units import format_bytes


@dataclass(frozen=True)
class Prediction:
    """Bytes of each part of the epoch's peak (see the module docstring); absent parts are 0."""

    parts: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.parts) - set(HELD_PARTS) - set(PHASE_PARTS)
        if unknown:
            raise ValueError(f"unknown parts of a prediction: {sorted(unknown)}")

    def part(self, name: str) -> int:
        return int(self.parts.get(name, 0))

    @property
    def held(self) -> int:
        """What is there all epoch long, whatever the step does."""
        return sum(self.part(name) for name in HELD_PARTS)

    @property
    def between_steps(self) -> int:
        """What is held between steps: :attr:`held` less a checkpoint snapshot, usually not in flight then."""
        return self.held - self.part("snapshot")

    @property
    def largest_phase(self) -> str:
        """The phase that sets the peak (``activations`` when all are 0)."""
        return max(PHASE_PARTS, key=self.part)

    @property
    def peak(self) -> int:
        return self.held + self.part(self.largest_phase)

    def with_parts(self, **parts: int) -> Prediction:
        """The same prediction with some parts set anew (a phase at another microbatch)."""
        return replace(self, parts={**self.parts, **{k: max(0, int(v)) for k, v in parts.items()}})

    def scaled(self, **factors: float) -> Prediction:
        """Parts multiplied by a factor each: how a memory saver enters the prediction."""
        return self.with_parts(**{name: round(self.part(name) * factor) for name, factor in factors.items()})

    def moved(self, amount: int, source: str, target: str) -> Prediction:
        """``amount`` bytes of ``source`` counted as ``target`` instead (an EMA held by the process)."""
        amount = max(0, min(amount, self.part(source)))
        return self.with_parts(**{source: self.part(source) - amount, target: self.part(target) + amount})

    def components(self) -> dict[str, int]:
        """The parts as the ``plan`` event writes them (zero parts left out)."""
        return {name: self.part(name) for name in (*HELD_PARTS, *PHASE_PARTS) if self.part(name)}

    def lines(self) -> list[str]:
        """One line per part, then the peak: what ``oomguard probe`` and ``rehearse=true`` print."""
        shown = self.components()
        largest = self.largest_phase
        out = []
        for name in (*HELD_PARTS, *PHASE_PARTS):
            if name not in shown:
                continue
            note = ""
            if name in PHASE_PARTS:
                note = "  the largest phase" if name == largest else "  (at another time)"
            out.append(f"  {PART_WORDS[name]:<38} {format_bytes(shown[name]):>10}{note}")
        out.append(f"  {'predicted epoch peak':<38} {format_bytes(self.peak):>10}")
        return out
