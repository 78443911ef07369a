"""The plan's predicted epoch peak against the measured one, epoch by epoch, and why they parted.

Read from the ``peak_check`` events (one per finished epoch: the prediction
for the sizes in force, the sampler's measured peak, the parts, the caution
after it); an epoch that appears twice (a resumed run redid it) keeps its
last check.
"""

from __future__ import annotations

from collections.abc import Sequence

from oomguard import events as ev
from oomguard.events import PARTED
from oomguard.units import format_bytes


def peak_checks(events: Sequence[ev.Event]) -> list[ev.PeakCheck]:
    """The last check of each epoch, in epoch order (checks without numbers are skipped)."""
    by_epoch: dict[int, ev.PeakCheck] = {}
    for event in events:
        if isinstance(event, ev.PeakCheck) and _valid(event):
            by_epoch[event.epoch] = event
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _valid(check: ev.PeakCheck) -> bool:
    numbers = (check.epoch, check.predicted, check.measured)
    return all(isinstance(n, int) and not isinstance(n, bool) for n in numbers) and check.predicted > 0


def error(check: ev.PeakCheck) -> float:
    """How far the measured peak was from the prediction, as a share of the prediction (+: above)."""
    return check.measured / check.predicted - 1.0


def part_words(name: str | None) -> str:
    return ev.PART_WORDS.get(str(name), str(name)) if name else "no single part"


def _size(n: float) -> str:
    return format_bytes(n).replace(".0 ", " ")


def parted(events: Sequence[ev.Event]) -> str | None:
    """The verdict's words when predicted and measured peaks parted by more than :data:`PARTED`: the
    epoch they parted most in, by how much, and the part that grew; None when they never did."""
    checks = [check for check in peak_checks(events) if abs(error(check)) > PARTED]
    if not checks:
        return None
    worst = max(checks, key=lambda check: abs(error(check)))
    share = error(worst)
    side = "above" if share > 0 else "below"
    text = (f"epoch {worst.epoch} peaked {abs(share):.0%} {side} its predicted "
            f"{_size(worst.predicted)} ({_size(worst.measured)} measured)")
    if worst.grew is not None and isinstance(worst.grew_by, int):
        change = "grew" if worst.grew_by >= 0 else "shrank"
        text += f": {part_words(worst.grew)} {change} {_size(abs(worst.grew_by))} against its prediction"
    if len(checks) > 1:
        text = f"{len(checks)} epochs parted from the predicted peak by more than {PARTED:.0%}; most, " + text
    return text


def rows(events: Sequence[ev.Event]) -> list[list[str]]:
    """One row per epoch for the report's table."""
    out = []
    for check in peak_checks(events):
        share = error(check)
        grew = ""
        if check.grew is not None and isinstance(check.grew_by, int):
            grew = f"{part_words(check.grew)} {'+' if check.grew_by >= 0 else '-'}{_size(abs(check.grew_by))}"
        margin = f"{check.margin:.0%}" if isinstance(check.margin, int | float) else ""
        eval_size = "" if check.eval_microbatch is None else str(check.eval_microbatch)
        out.append([str(check.epoch), str(check.microbatch), eval_size, _size(check.predicted),
                    _size(check.measured), f"{share:+.1%}", margin, grew])
    return out
