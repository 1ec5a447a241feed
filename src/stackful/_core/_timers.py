"""The timer heap (in C) and the one check of every deadline.

``active`` counts the pending timers: deadlock detection must not mistake a cancelled timer
for something that could still wake a task.

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

import math
import numbers

from .._native import Timer as _Timer
from .._native import TimerHeap as _TimerHeap

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


# The heap and its timers are C (stackful/_native/timers.c): cancelling removes a timer from
# the heap at once and drops what it holds, so a million early-exit timeouts leave nothing
# behind.  TimerHeap.schedule applies the deadline rule above itself (NaN: ValueError; +inf:
# kept out of the heap and of ``active``).
Timer = _Timer
TimerHeap = _TimerHeap
