"""The timer heap: callbacks ordered by deadline.

Cancelled timers stay in the heap (removing from the middle of a heap is O(n)) and are
dropped lazily when they reach the top; ``active`` counts only live ones, because deadlock
detection must not mistake a cancelled timer for something that could still wake a task.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any


class Timer:
    """A scheduled callback; :meth:`cancel` it to stop it from firing."""

    __slots__ = ("deadline", "_callback", "_arg", "_heap", "_live")

    def __init__(
        self, heap: TimerHeap, deadline: float, callback: Callable[[Any], object], arg: Any
    ) -> None:
        self.deadline = deadline
        self._callback = callback
        self._arg = arg
        self._heap = heap
        # Invariant: _live is True exactly while the timer is in the heap, not cancelled and not
        # fired; heap.active counts the live timers.
        self._live = True

    def cancel(self) -> None:
        """Stop the timer; a no-op if it already fired or was cancelled."""
        if self._live:
            self._live = False
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
        """Call ``callback(arg)`` once the clock reaches ``deadline``."""
        timer = Timer(self, deadline, callback, arg)
        heapq.heappush(self._heap, (deadline, next(self._seq), timer))
        self.active += 1
        return timer

    def next_deadline(self) -> float | None:
        """Deadline of the earliest live timer, or None."""
        heap = self._heap
        while heap and not heap[0][2]._live:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def fire_due(self, now: float) -> int:
        """Run every live timer whose deadline is <= now, in order; return how many ran."""
        heap = self._heap
        fired = 0
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            if timer._live:
                timer._live = False
                self.active -= 1
                fired += 1
                timer._callback(timer._arg)
        return fired

    def clear(self) -> None:
        """Forget every timer (the runtime is closing)."""
        for _, _, timer in self._heap:
            timer.cancel()
        self._heap.clear()
