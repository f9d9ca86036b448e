"""Monotonic clocks: the real one and a fake one that tests move by hand.

All deadline arithmetic in the agent (lease renewal, fencing, monitor intervals) goes through
a ``Clock`` so that unit tests can simulate seconds of cluster life in microseconds, and so
that wall-clock jumps (NTP, manual date changes) can never shorten or stretch a deadline.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """A monotonic time source in seconds. ``now()`` never goes backwards."""

    def now(self) -> float: ...


class MonotonicClock:
    """The real clock: ``time.monotonic``.

    On Linux this is CLOCK_MONOTONIC, which does not advance while the machine is suspended
    but does advance while a process (or a whole container, ``podman pause``) is frozen — which
    is exactly what lets a frozen agent notice on wake-up that its deadline has passed.
    """

    def now(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that only moves when a test calls ``advance``. Thread-safe."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (must be >= 0)."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go backwards")
        with self._lock:
            self._now += seconds
