"""Ctrl-C and SIGTERM during training: stop at the next step boundary, after a checkpoint."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from oomguard.loop.stopping import StopCause


@contextmanager
def stop_on_signals(request_stop: Callable[[StopCause, str], None],
                    rank: int | None = None) -> Iterator[None]:
    """First Ctrl-C/SIGTERM: stop at the next step boundary, after a checkpoint; second: now.

    A ``rank`` of a group only ever stops at a step boundary (the launcher's own
    stop follows the terminal's Ctrl-C; the launcher kills it if it takes too
    long), and only rank 0 says so. Outside the main thread (a training started
    from another thread of a program) signals stay the program's business.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    repeat_stops_now = rank is None
    seen: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if seen and repeat_stops_now:
            raise KeyboardInterrupt
        if seen:
            return
        seen.append(signum)
        if not rank:
            print("\noomguard: stopping after this step (checkpointing)"
                  + ("; Ctrl-C again to stop now" if repeat_stops_now else ""), file=sys.stderr)
        request_stop(StopCause.SIGNAL, f"signal {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
