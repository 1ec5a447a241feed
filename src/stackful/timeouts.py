"""Timeouts: ``with timeout(seconds):`` raises ``TimeoutError`` in the task when time is up.

The exception is raised at the blocking point the task is in when the deadline passes, or at
its next one; a body that finishes without blocking again is not interrupted.  Scopes nest:
each raises its own ``TimeoutError``, and an inner scope never swallows an outer one's: when
both expire before the task runs again, the outer one's is raised.  A cancellation beats
either (the rule is in ``Runtime.park``'s docstring).

Deadlines: ``None`` or ``inf`` never expire; NaN is a ``ValueError``; a negative duration is a
``ValueError``, an absolute deadline already past expires at the body's first blocking point.
"""

from __future__ import annotations

from . import lowlevel
from .lowlevel import TimeoutScope

__all__ = ["TimeoutScope", "current_time", "sleep_until", "timeout", "timeout_at"]


def timeout(seconds: float | None) -> TimeoutScope:
    """Context manager: ``TimeoutError`` if the body is still blocked after ``seconds``.

    ``None`` or ``inf`` means no limit; negative (or NaN) durations are a ``ValueError``.
    After the block, the scope's ``expired`` attribute tells whether the deadline passed.
    """
    return lowlevel.timeout_scope(seconds, f"timeout({seconds})")


def timeout_at(deadline: float) -> TimeoutScope:
    """Like :func:`timeout`, with an absolute deadline on the runtime's clock.

    A deadline already past expires at the body's first blocking point; ``inf`` never
    expires; NaN is a ``ValueError``.
    """
    return TimeoutScope(deadline, f"timeout_at({deadline})")


def current_time() -> float:
    """The runtime's clock (the virtual one under ``run(..., clock=VirtualClock())``)."""
    return lowlevel.current_time()


def sleep_until(deadline: float) -> None:
    """Block the running task until the runtime's clock reaches ``deadline`` (``inf``: forever)."""
    lowlevel.current_runtime().sleep_until(deadline)
