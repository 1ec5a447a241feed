"""Timeouts and cancel scopes: leave a block, or fail it, when time is up or on request.

``with timeout(seconds):`` (also ``fail_after``) raises ``TimeoutError`` in the task when time
is up; ``with move_on_after(seconds):`` leaves the block quietly instead (``cancelled_caught``
tells afterwards); ``CancelScope()`` is cancelled by hand (``scope.cancel()``, from any task).
All are :class:`CancelScope` s; ``shield=True`` holds back cancellations from outside.

The exception is raised at the blocking point the task is in when the deadline passes, or at
its next one; a body that finishes without blocking again is not interrupted.  Scopes nest:
each raises its own exception, and an inner scope never swallows an outer one's: when
both expire before the task runs again, the outer one's is raised.  A ``Task.cancel()`` beats
either.  The full rules are in ``stackful/_core/_cancel.py``'s docstring (README,
"Structured concurrency").

Deadlines: ``None`` or ``inf`` never expire; NaN is a ``ValueError``; a negative duration is a
``ValueError``, an absolute deadline already past expires at the body's first blocking point.
"""

from __future__ import annotations

from . import lowlevel
from ._core import NEVER, check_timeout, get_runtime
from ._native import get_thread_scheduler
from .lowlevel import CancelScope, TimeoutScope

__all__ = [
    "CancelScope", "TimeoutScope", "current_time", "fail_after", "fail_at", "move_on_after",
    "move_on_at", "sleep_until", "timeout", "timeout_at",
]


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


def _after(seconds: float | None, what: str) -> float | None:
    """The deadline ``seconds`` from now on the running runtime's clock (None: none)."""
    if (type(seconds) is float or type(seconds) is int) and 0 <= seconds < NEVER:
        runtime = get_thread_scheduler()  # the common case, in short
        if runtime is not None:
            now: float = runtime.clock.now()
            return now + seconds
    checked = NEVER if seconds is None else check_timeout(seconds)
    if checked == NEVER:
        return None
    return get_runtime(what).clock.now() + checked


def fail_after(seconds: float | None, *, shield: bool = False) -> TimeoutScope:
    """:func:`timeout` with trio's name, and ``shield``: ``TimeoutError`` out of the block if
    it is still blocked after ``seconds``."""
    if (type(seconds) is float or type(seconds) is int) and 0 <= seconds < NEVER:
        runtime = get_thread_scheduler()  # _after's common case, inline
        if runtime is not None:
            return TimeoutScope(runtime.clock.now() + seconds, "fail_after", shield=shield)
    return TimeoutScope(_after(seconds, "fail_after()"), "fail_after", shield=shield)


def fail_at(deadline: float | None, *, shield: bool = False) -> TimeoutScope:
    """:func:`fail_after` with an absolute deadline on the runtime's clock."""
    return TimeoutScope(deadline, "fail_at", shield=shield)


def move_on_after(seconds: float | None, *, shield: bool = False) -> CancelScope:
    """Context manager: leave the block quietly if it is still blocked after ``seconds``
    (``scope.cancelled_caught`` then True); the code after the block runs."""
    if (type(seconds) is float or type(seconds) is int) and 0 <= seconds < NEVER:
        runtime = get_thread_scheduler()  # _after's common case, inline
        if runtime is not None:
            return CancelScope(runtime.clock.now() + seconds, "move_on_after", shield=shield)
    return CancelScope(_after(seconds, "move_on_after()"), "move_on_after", shield=shield)


def move_on_at(deadline: float | None, *, shield: bool = False) -> CancelScope:
    """:func:`move_on_after` with an absolute deadline on the runtime's clock."""
    return CancelScope(deadline, "move_on_at", shield=shield)


def current_time() -> float:
    """The runtime's clock (the virtual one under ``run(..., clock=VirtualClock())``)."""
    return lowlevel.current_time()


def sleep_until(deadline: float) -> None:
    """Block the running task until the runtime's clock reaches ``deadline`` (``inf``: forever)."""
    lowlevel.current_runtime().sleep_until(deadline)
