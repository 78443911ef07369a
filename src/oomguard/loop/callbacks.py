"""Callbacks: one no-op method per event, all with the same signature.

The loop calls them in this order::

    on_start
    for each epoch:
        on_epoch_start
        for each batch:  guard.step ...  on_step_end
        [on_validation_end]              # every val_every epochs and at the last
        on_epoch_end
    on_end                               # also after a stop request or an error
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oomguard.loop.state import State


class Callback:
    def on_start(self, state: State) -> None: ...

    def on_epoch_start(self, state: State) -> None: ...

    def on_step_end(self, state: State) -> None: ...

    def on_validation_end(self, state: State) -> None: ...

    def on_epoch_end(self, state: State) -> None: ...

    def on_end(self, state: State) -> None: ...


class CallbackList(Callback):
    """Calls each callback in order."""

    def __init__(self, callbacks: Iterable[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_start(self, state: State) -> None:
        for callback in self.callbacks:
            callback.on_start(state)

    def on_epoch_start(self, state: State) -> None:
        for callback in self.callbacks:
            callback.on_epoch_start(state)

    def on_step_end(self, state: State) -> None:
        for callback in self.callbacks:
            callback.on_step_end(state)

    def on_validation_end(self, state: State) -> None:
        for callback in self.callbacks:
            callback.on_validation_end(state)

    def on_epoch_end(self, state: State) -> None:
        for callback in self.callbacks:
            callback.on_epoch_end(state)

    def on_end(self, state: State) -> None:
        for callback in self.callbacks:
            callback.on_end(state)
