"""The timer heap: callbacks ordered by deadline; and the one check of every deadline.

Cancelled timers stay in the heap (removing from the middle of a heap is O(n)) and are
dropped lazily when they reach the top; ``active`` counts only live ones, because deadlock
detection must not mistake a cancelled timer for something that could still wake a task.

Every timeout and deadline a user passes (``sleep``, ``timeout``, ``timeout_at``, ``join``,
the primitives' ``timeout=``, I/O waits, ``call_later``) goes through :func:`deadline_after`
or :func:`deadline_at`, and every timer through :meth:`TimerHeap.schedule`, which applies the
same rule.  The rule:

* NaN is a ``ValueError``; anything but a real number is a ``TypeError``.  (A NaN deadline
  compares false with everything: at the top of the heap it would stop every later timer.)
* ``+inf`` means "never": no timer is scheduled, so a task waiting only on it counts as
  blocked for good in deadlock reports, and a virtual clock never jumps to infinity.
* A deadline in the past has already expired: its timer fires at the next tick.
* A relative timeout must be ``>= 0`` (negative is a ``ValueError``, as in ``time.sleep``
  and ``threading``); ``None`` means no timeout.
"""

from __future__ import annotations

import heapq
import itertools
import math
import numbers
from collections.abc import Callable
from typing import Any

NEVER = math.inf


def _real(value: object, what: str) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    return float(value)


def deadline_at(deadline: float | None, what: str = "deadline") -> float:
    """Check an absolute deadline on the runtime's clock; None or +inf give :data:`NEVER`."""
    if deadline is None:
        return NEVER
    deadline = _real(deadline, what)
    if deadline != deadline:
        raise ValueError(f"{what} must not be NaN")
    return deadline


def deadline_after(
    now: float, seconds: float | None, what: str = "timeout", *, none_ok: bool = True
) -> float:
    """The deadline ``seconds`` after ``now``; None (if ``none_ok``) or +inf give :data:`NEVER`.

    ``seconds`` must be >= 0 (``ValueError`` otherwise, NaN included).
    """
    if (type(seconds) is float or type(seconds) is int) and seconds >= 0:
        return now + seconds  # the common case, NaN excluded (inf gives NEVER)
    if seconds is None and none_ok:
        return NEVER
    value = _real(seconds, what)
    if not value >= 0:
        alternative = " or None" if none_ok else ""
        raise ValueError(f"{what} must be >= 0{alternative}, got {seconds!r}")
    return now + value


def check_timeout(seconds: float | None, what: str = "timeout") -> float:
    """Check a relative timeout before a primitive changes any state (same rule).

    Returns it as a float, :data:`NEVER` for None or +inf.
    """
    if (type(seconds) is float or type(seconds) is int) and seconds >= 0:
        return float(seconds)
    return deadline_after(0.0, seconds, what)


class Timer:
    """A scheduled callback; :meth:`cancel` it to stop it from firing."""

    __slots__ = ("deadline", "_callback", "_arg", "_heap", "_live")

    def __init__(
        self, heap: TimerHeap | None, deadline: float, callback: Callable[[Any], object], arg: Any
    ) -> None:
        self.deadline = deadline
        self._callback = callback
        self._arg = arg
        self._heap = heap
        # Invariant: _live is True until the timer fires or is cancelled; heap.active counts the
        # live timers in the heap (a timer set for +inf has no heap: it never fires).
        self._live = True

    def cancel(self) -> None:
        """Stop the timer; a no-op if it already fired or was cancelled."""
        if self._live:
            self._live = False
            if self._heap is not None:
                self._heap.active -= 1
            # Drop references now: a cancelled timer can sit in the heap for a long time.
            self._callback = _noop
            self._arg = None

    @property
    def pending(self) -> bool:
        """True until the timer fires or is cancelled."""
        return self._live


def _noop(_: Any) -> None:
    pass


class TimerHeap:
    """Min-heap of :class:`Timer` keyed by (deadline, insertion order)."""

    __slots__ = ("_heap", "_seq", "active")

    def __init__(self) -> None:
        # Entries are (deadline, seq, timer); seq keeps equal deadlines FIFO and means timers
        # themselves are never compared.
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self.active = 0

    def schedule(self, deadline: float, callback: Callable[[Any], object], arg: Any) -> Timer:
        """Call ``callback(arg)`` once the clock reaches ``deadline`` (+inf: never)."""
        if type(deadline) is not float or deadline != deadline:
            deadline = deadline_at(deadline)
        timer = Timer(self, deadline, callback, arg)
        if deadline == NEVER:
            # Never fires: kept out of the heap and of ``active`` (it can wake nobody).
            timer._heap = None
            return timer
        heapq.heappush(self._heap, (deadline, next(self._seq), timer))
        self.active += 1
        return timer

    def next_deadline(self) -> float | None:
        """Deadline of the earliest live timer, or None."""
        heap = self._heap
        while heap and not heap[0][2]._live:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def fire_due(self, now: float, on_error: Callable[[BaseException], object]) -> int:
        """Run every live timer whose deadline is <= now, in order; return how many ran.

        A callback's exception goes to ``on_error`` and the others still run: timers fire
        in whichever task happens to check them, which must not receive it.
        """
        heap = self._heap
        fired = 0
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            if timer._live:
                timer._live = False
                self.active -= 1
                fired += 1
                try:
                    timer._callback(timer._arg)
                except BaseException as exc:
                    on_error(exc)
        return fired

    def clear(self) -> None:
        """Forget every timer (the runtime is closing)."""
        for _, _, timer in self._heap:
            timer.cancel()
        self._heap.clear()
