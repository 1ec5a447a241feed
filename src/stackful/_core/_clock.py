"""Clocks: where the runtime's idea of "now" comes from.

The scheduler never calls ``time.monotonic`` itself: it asks its clock, so tests can swap in a
:class:`VirtualClock` and exercise timers, sleeps and timeouts without sleeping for real.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """What the runtime needs from a clock."""

    def now(self) -> float:
        """Current time in seconds (any epoch; only differences matter)."""
        ...

    def idle_timeout(self, deadline: float) -> float:
        """Real seconds the idle runtime may block in the I/O poller before ``deadline`` passes."""
        ...

    def idle_expired(self, deadline: float) -> None:
        """Called when the runtime blocked for :meth:`idle_timeout` and nothing happened."""
        ...


class SystemClock:
    """The real monotonic clock."""

    __slots__ = ()

    # time.monotonic itself: the runtime reads the clock at every timeout, sleep and
    # deadline, and a Python frame around it doubled the cost of a scope with a deadline.
    now: Callable[[], float] = staticmethod(time.monotonic)
    """Return ``time.monotonic()``."""

    def idle_timeout(self, deadline: float) -> float:
        """Block until the deadline is due."""
        return max(0.0, deadline - time.monotonic())

    def idle_expired(self, deadline: float) -> None:
        """Nothing to do: real time moved on by itself."""


class VirtualClock:
    """A clock that only moves when told to, or when every task is blocked (autojump).

    With autojump the runtime, finding no ready task, first polls I/O for
    ``autojump_threshold`` real seconds (0 by default: just a non-blocking poll) and then jumps
    the clock straight to the next timer's deadline.  A test that sleeps for an hour therefore
    finishes at once, and still sees timers fire in deadline order.
    """

    __slots__ = ("_now", "autojump_threshold")

    def __init__(self, start: float = 0.0, *, autojump_threshold: float = 0.0) -> None:
        if not 0 <= autojump_threshold < math.inf:
            raise ValueError(f"autojump_threshold must be finite and >= 0, got "
                             f"{autojump_threshold!r}")
        if not math.isfinite(start):
            raise ValueError(f"a virtual clock starts at a finite time, not {start!r}")
        self._now = float(start)
        self.autojump_threshold = autojump_threshold

    def now(self) -> float:
        """Return the virtual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move virtual time forward by ``seconds`` (timers now due fire at the next tick)."""
        if seconds < 0:
            raise ValueError(f"cannot move a clock backwards (advance({seconds!r}))")
        if not seconds < math.inf:  # inf or NaN: every later deadline would be lost
            raise ValueError(f"cannot advance a clock by {seconds!r}")
        self._now += seconds

    def idle_timeout(self, deadline: float) -> float:
        """Only wait ``autojump_threshold`` real seconds for I/O before jumping."""
        return self.autojump_threshold

    def idle_expired(self, deadline: float) -> None:
        """Autojump: nothing happened while idle, so the next deadline is "now"."""
        if deadline > self._now:
            self._now = deadline

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now!r})"
