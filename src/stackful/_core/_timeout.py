"""TimeoutScope: raise ``TimeoutError`` in the running task once a deadline passes.

It is a timer plus :meth:`Runtime.interrupt`: when the timer fires, the task's current wait
(or its next blocking point) raises this scope's own ``TimeoutError`` instance.  Owning the
instance lets nested scopes tell their timeout from an outer one, and lets a scope whose body
finished in time withdraw a timeout that fired but was never delivered.  A task's open scopes
are listed on it, outermost first: that nesting is how the rule in :class:`Runtime`'s docstring
ranks two timeouts that land in the same tick (the outer one wins).
"""

from __future__ import annotations

from types import TracebackType

from ._run import get_task
from ._task import Task
from ._timers import NEVER, Timer, deadline_at


class TimeoutScope:
    """Context manager: the body gets ``TimeoutError`` if it is still blocked at ``deadline``.

    ``deadline`` is on the runtime's clock; None or +inf mean no deadline, NaN is a
    ``ValueError``, a deadline already past expires at the body's first blocking point.
    ``expired`` tells afterwards whether this scope's deadline passed inside the body.
    """

    __slots__ = ("deadline", "what", "expired", "error", "_task", "_timer")

    def __init__(self, deadline: float | None, what: str = "") -> None:
        if type(deadline) is not float or not deadline < NEVER:  # not the common case
            checked = deadline_at(deadline)
            deadline = None if checked == NEVER else checked
        self.deadline = deadline
        self.what = what
        self.expired = False
        self.error: TimeoutError | None = None
        self._task: Task | None = None
        self._timer: Timer | None = None

    def __enter__(self) -> TimeoutScope:
        task = get_task("timeout()")
        if self._task is not None:
            raise RuntimeError("a timeout scope cannot be entered twice")
        self._task = task
        scopes = task._scopes
        if scopes is None:
            task._scopes = [self]
        else:
            scopes.append(self)
        if self.deadline is not None:
            self._timer = task._runtime.call_at(self.deadline, self._fire, None)
        return self

    def _fire(self, _: object) -> None:
        task = self._task
        assert task is not None
        self.expired = True
        suffix = f" in {self.what}" if self.what else ""
        self.error = TimeoutError(f"timed out{suffix}")
        task._runtime.interrupt(task, self.error)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        task = self._task
        assert task is not None
        scopes = task._scopes
        assert scopes is not None
        if scopes[-1] is self:
            scopes.pop()
        else:  # exited out of order (by hand): still forget it
            scopes.remove(self)
        if self.error is not None and task._pending_exc is self.error:
            # Fired, but the body finished before blocking again: it made it in time.
            task._pending_exc = None

    def owns(self, exc: BaseException) -> bool:
        """True if ``exc`` is the ``TimeoutError`` this scope raised."""
        return exc is self.error and exc is not None
