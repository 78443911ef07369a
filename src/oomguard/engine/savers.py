"""The memory savers of one Guard: which it may use here, which are on, and every switch as an event.

- ``activation_checkpointing`` (:mod:`oomguard.engine.recompute`): exact.
- ``amp``: autocast in the device's mixed precision (bfloat16, or float16 with a
  GradScaler on CUDA). It changes the numbers, so only ``amp=True`` (on from
  the start) or ``amp="auto"`` (only where microbatch 1 does not fit without a
  saver) allows it.
- ``optimizer_offload`` (:mod:`oomguard.engine.offload`): exact, where the
  device's memory is not the host's (CUDA).

``savers="auto"`` lets the plan switch on those that make microbatch 1 fit, or
that let a larger, faster microbatch fit (:mod:`oomguard.engine.saver_choice`);
``"off"`` none; a list switches those on from the start, and no others.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import torch

from oomguard import events as ev
from oomguard.config import EXACT_SAVERS, SAVER_NAMES, parse_savers
from oomguard.devices.base import Device
from oomguard.engine.offload import OptimizerOffload
from oomguard.engine.recompute import Blocks, Recompute
from oomguard.engine.runner import Runner
from oomguard.errors import ConfigError
from oomguard.events import EventLog

CHECKPOINTING, AMP, OFFLOAD = SAVER_NAMES
Combo = tuple[str, ...]
_SCALER_PREFIX = "saver_scaler_"


def combo_words(combo: Combo) -> str:
    """``activation_checkpointing+amp``; ``no saver`` for none."""
    return "+".join(combo) if combo else "no saver"


def ordered(names: Sequence[str]) -> Combo:
    return tuple(name for name in SAVER_NAMES if name in names)


def _amp_arg(amp: bool | str) -> bool | str:
    if amp in (True, False, "auto"):
        return amp
    raise ConfigError(f"amp={amp!r}: expected True, False or 'auto' (mixed precision only where microbatch 1 "
                      "does not fit without a memory saver)")


class Savers:
    """See the module docstring. ``apply`` switches quietly (the probe's trials), ``switch`` with events."""

    def __init__(self, runner: Runner, device: Device, events: EventLog,
                 setting: str | Sequence[str] = "auto", amp: bool | str = False,
                 blocks: Blocks | None = None) -> None:
        try:
            self.setting = parse_savers(list(setting) if isinstance(setting, tuple) else setting)
        except ValueError as err:
            raise ConfigError(f"savers={setting!r}: {err}; expected 'auto', 'off' or a list of "
                              f"{', '.join(SAVER_NAMES)}") from None
        self.amp = _amp_arg(amp)
        if self.amp is False and isinstance(self.setting, list) and AMP in self.setting:
            raise ConfigError("savers lists amp while amp=False; remove amp from savers, or pass amp='auto'")
        self.runner, self.device, self.events = runner, device, events
        try:
            # On host memory, the heap's freed pages go back before each block is recomputed.
            trim = device.release_host_heap if device.unified else None
            self.recompute = Recompute(runner.eval_model, blocks, trim)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        pin = device.host_offload and device.torch_device.type != "cpu"
        self.offload = OptimizerOffload(runner.optimizer, device.synchronize, pin=pin)
        runner.around_backward = self.recompute.keeping_statistics
        #: Mixed precision given from the start (``amp=True``, or a dtype passed to the Guard): on throughout.
        self.fixed_amp = runner.amp_dtype is not None or self.amp is True
        if self.amp is True and runner.amp_dtype is None:
            self._precision(True)
        self._plain = (runner.amp_dtype, runner.scaler)
        self.in_force: Combo = (AMP,) if self.fixed_amp else ()
        #: Microbatch 1's peak with each combination measured (None: not measured), in the order measured.
        self.measured: dict[Combo, int | None] = {}
        #: The combinations that did not fit: in a probe, or in a real step at microbatch 1.
        self.failed: set[Combo] = set()

    # -- what may be used ---------------------------------------------------------------------------

    def why_not(self, name: str) -> str | None:
        """Why ``name`` cannot be used by this Guard, in words; None when it can."""
        if name == CHECKPOINTING and not self.recompute.supported:
            return ("the model has no repeated blocks to recompute (name them: Guard(..., "
                    "blocks=['layers.0', ...]))")
        if name == AMP:
            if self.fixed_amp:
                return None
            if self.amp is False:
                return "amp=false"
            if self.device.mixed_precision().dtype is None:
                return self.device.mixed_precision().note or "no mixed precision on this device"
        if name == OFFLOAD and not self.device.host_offload:
            return f"the optimizer state is in host memory already on {self.device.torch_device.type}"
        return None

    def usable(self) -> Combo:
        """The savers this Guard may have on: allowed by ``savers`` and ``amp``, and working here."""
        if self.setting == "off":
            return self.in_force
        names = SAVER_NAMES if self.setting == "auto" else self.setting
        return ordered([name for name in names if self.why_not(name) is None])

    def possible(self) -> Combo:
        """The savers that work here for this model and ``amp``, whatever ``savers`` lists (none with
        ``savers=off``): what the restart ladder may switch on."""
        if self.setting == "off":
            return self.in_force
        return ordered([name for name in SAVER_NAMES if self.why_not(name) is None])

    def candidates(self, needed: bool) -> list[Combo]:
        """Combinations the plan may measure next: fewest savers (exact ones) first, never the one in force
        nor one that did not fit before.

        ``needed``: microbatch 1 does not fit with the savers in force, which lets ``amp="auto"`` in.
        """
        if self.setting != "auto":
            return []
        forced = self.forced()
        pool = [name for name in self.usable() if name not in forced and (needed or name != AMP)]
        found: list[Combo] = []
        for count in range(len(pool) + 1):
            for extra in combinations(pool, count):
                combo = ordered([*forced, *extra])
                if combo != self.in_force and combo not in self.failed and combo not in found:
                    found.append(combo)
        return sorted(found, key=lambda c: (len(c), sum(name not in EXACT_SAVERS for name in c)))

    # -- switching ----------------------------------------------------------------------------------

    def forced(self) -> Combo:
        """The savers on whatever the plan measures: a ``savers`` list, and mixed precision given."""
        listed = self.setting if isinstance(self.setting, list) else []
        return ordered([*listed, *((AMP,) if self.fixed_amp else ())])

    def _precision(self, on: bool) -> None:
        if not on:
            self.runner.set_precision(*self._plain)
            return
        precision = self.device.mixed_precision()
        scaler = self.runner.scaler
        if precision.scaler and scaler is None:
            scaler = torch.amp.GradScaler(self.device.torch_device.type)
        self.runner.set_precision(precision.dtype, scaler)

    def apply(self, combo: Combo) -> None:
        """Switch to exactly ``combo`` (what it cannot have stays off), without events."""
        on = set(combo) | set(self.forced())
        if CHECKPOINTING in on and self.why_not(CHECKPOINTING) is None:
            self.recompute.enable()
        else:
            self.recompute.disable()
        if AMP in on and self.why_not(AMP) is None:
            if self.runner.amp_dtype is None:
                self._precision(True)
        elif not self.fixed_amp:
            self._precision(False)
        if OFFLOAD in on and self.why_not(OFFLOAD) is None:
            self.offload.enable()
        else:
            self.offload.disable()
        self.in_force = ordered([name for name, active in ((CHECKPOINTING, self.recompute.on),
                                                           (AMP, self.runner.amp_dtype is not None),
                                                           (OFFLOAD, self.offload.on)) if active])

    def switch(self, combo: Combo, reason: str, peak: int | None = None, before: int | None = None,
               microbatch: int | None = None) -> None:
        """Switch to ``combo``; a ``saver`` event for each saver that went on or off."""
        was = self.in_force
        self.apply(combo)
        for name in SAVER_NAMES:
            if (name in was) != (name in self.in_force):
                self.events.emit(ev.Saver(name=name, on=name in self.in_force, reason=reason, peak=peak,
                                          before=before, microbatch=microbatch))

    def start(self) -> None:
        """Switch on the forced savers (a ``savers`` list), saying which cannot work here."""
        listed = self.setting if isinstance(self.setting, list) else []
        for name in listed:
            why = self.why_not(name)
            if why is not None:
                self.events.emit(ev.Saver(name=name, on=False, reason=f"listed in savers, but {why}"))
        if listed:
            self.switch(ordered(listed), f"savers={','.join(listed)}")

    # -- checkpoints ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, int | float]:
        state: dict[str, int | float] = {f"saver_{name}": int(name in self.in_force) for name in SAVER_NAMES}
        scaler = self.runner.scaler
        if scaler is not None and scaler is not self._plain[1] and scaler.is_enabled():
            for key, value in scaler.state_dict().items():  # the scaler this saver made: plain numbers
                state[_SCALER_PREFIX + key] = float(value)
        return state

    def load_state_dict(self, state: dict[str, int | float]) -> None:
        """The savers in force at the checkpoint (those still allowed), plus the forced ones."""
        if not any(f"saver_{name}" in state for name in SAVER_NAMES):
            return
        keep = [name for name in self.usable() if state.get(f"saver_{name}")]
        self.switch(ordered([*keep, *self.forced()]), "resumed with the savers of the checkpoint")
        scaler = self.runner.scaler
        numbers: dict[str, Any] = {key[len(_SCALER_PREFIX):]: value for key, value in state.items()
                                   if key.startswith(_SCALER_PREFIX)}
        if numbers and scaler is not None and scaler is not self._plain[1]:
            numbers["_growth_tracker"] = int(numbers.get("_growth_tracker", 0))
            numbers["growth_interval"] = int(numbers.get("growth_interval", 2000))
            scaler.load_state_dict(numbers)
