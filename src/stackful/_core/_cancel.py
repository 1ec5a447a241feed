"""Cancel scopes: a block of a task's code that can be cancelled, by hand or at a deadline.

The rules, in one place (README, "Structured concurrency", repeats them for users):

* **Cancellation is delivered at blocking points only.**  A scope's cancellation (its
  :meth:`CancelScope.cancel`, or its deadline passing) raises in the task that entered the
  scope at the blocking call the task is in (a park: ``sleep``, a lock, a queue, I/O, a
  join, ``yield_now``...), or at its next one.  Code that does not block is never
  interrupted; a body that finishes before blocking again leaves the scope normally, and the
  undelivered cancellation is withdrawn.
* **What is raised.**  A cancelled scope raises its own :class:`Cancelled`; the scope catches
  it on the way out (``cancelled_caught``) and the code after the block runs.  A ``fail``
  scope (``fail_after``, ``timeout``) raises its own ``TimeoutError`` instead, at the
  blocking point, and lets it through.  Each scope raises its own instance, so
  a scope never catches another's.
* **Once.**  A scope delivers its cancellation once.  Code that catches it and blocks again
  inside the scope is not interrupted again (trio re-raises at every blocking point: see the
  README for why not here).
* **Nesting.**  When two interruptions land before the task runs again, the stronger is
  raised: ``KeyboardInterrupt``/``SystemExit`` > ``Task.cancel()`` > an outer scope's > an
  inner scope's (``Runtime``'s docstring has the why).  An outer scope's cancellation unwinds
  the inner scopes on its way out; an inner scope that expired alone is caught by itself and
  the outer scope's body goes on.
* **Shields.**  Inside ``CancelScope(shield=True)`` the cancellations of scopes outside it and
  ``Task.cancel()`` are held back until the shield's block ends, then raised at the task's
  next blocking point; the shield's own cancellation (and those of scopes inside it) still
  arrive.  ``KeyboardInterrupt`` and ``SystemExit`` are not held: the run is ending, and a
  shielded block that hangs must not hang the process.  ``shield`` may be set inside the
  block: lifting it hands on what it held, raising it holds what waits for the next
  blocking point.
* **From anywhere.**  ``cancel()`` may be called by any task of the runtime, before the
  scope is entered (its first blocking point then raises), inside it, or after it (no
  effect).  Another OS thread calls it through a token:
  ``token.call_soon(scope.cancel)`` (``stackful.lowlevel.current_token``); calling it
  directly from another thread is a ``RuntimeError`` naming that way.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING

from .._native import ScopeCore, get_thread_scheduler
from .._native import _holding_shield as holding_shield
from ._exceptions import Cancelled
from ._run import Runtime, _strength
from ._timers import NEVER, Timer, deadline_at

if TYPE_CHECKING:
    from ._group import TaskGroup
    from ._task import Task


class CancelScope(ScopeCore):
    """Context manager: a block of the running task that can be cancelled.

    ``deadline`` (absolute, on the runtime's clock; None or +inf: none) cancels the block
    when it passes; ``fail=True`` makes the deadline raise ``TimeoutError`` out of the block
    instead of leaving it quietly; ``shield=True`` holds back cancellations from outside
    while the block runs.  The rules are in this module's docstring.

    After the block: ``cancel_called`` (cancel() was called or the deadline passed),
    ``expired`` (the deadline passed inside the block), ``cancelled_caught`` (the block was
    left by this scope's own ``Cancelled``).  A scope is entered at most once.
    """

    # Every field is ScopeCore's, in C (scope.c), which also does __init__, __enter__ and
    # __exit__: a scope's entry and exit are the runtime's most frequent operation after a
    # switch.  The fields: the deadline (_deadline: a finite float or None), ``what`` (for
    # messages), the flags documented above, ``_shield`` (the ``shield`` property's),
    # ``_fail`` (fails at the deadline), ``error``
    # (the interruption this scope raised -- its Cancelled, or its TimeoutError if it fails:
    # the identity that lets it, and the rule in _strength, tell it from any other; set
    # once), ``_task`` (the task that entered it), ``_timer`` (the deadline's, while
    # inside), ``_exited``, ``_held`` (a shield's: the strongest interruption from outside
    # it that arrived while it ran), ``group`` (the TaskGroup whose body this scope is: the
    # group tree walks it).
    __slots__ = ()

    if TYPE_CHECKING:
        _deadline: float | None
        what: str
        expired: bool
        error: BaseException | None
        _shield: bool
        cancel_called: bool
        cancelled_caught: bool
        _fail: bool
        _task: Task | None
        _timer: Timer | None
        _held: BaseException | None
        _exited: bool
        group: TaskGroup | None

        def __init__(
            self, deadline: float | None = None, what: str = "", *, shield: bool = False,
            fail: bool = False,
        ) -> None: ...

        def __enter__(self) -> CancelScope: ...

        def __exit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> bool: ...

    @staticmethod
    def _checked_deadline(deadline: float) -> float | None:
        # (For ScopeCore.__init__, with a deadline that is not a finite float.)
        checked = deadline_at(deadline)
        return None if checked == NEVER else checked

    # -- the deadline ----------------------------------------------------------------------------

    @property
    def deadline(self) -> float | None:
        """The absolute deadline on the runtime's clock (None: none).  Settable, also inside
        the block (the timer moves); a deadline already past expires at the next blocking
        point."""
        return self._deadline

    @deadline.setter
    def deadline(self, deadline: float | None) -> None:
        checked = deadline_at(deadline)
        self._deadline = None if checked == NEVER else checked
        task = self._task
        if task is None or self._exited or self.error is not None:
            return
        self._check_thread(task._runtime, "CancelScope.deadline")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._deadline is not None:
            self._timer = task._runtime.call_at(self._deadline, type(self)._fire, self)

    # -- the shield ------------------------------------------------------------------------------

    @property
    def shield(self) -> bool:
        """Hold back cancellations from outside while the block runs.  Settable, also inside
        the block: lifting it hands on what it held (raised at once in a blocked task, else
        at its next blocking point); raising it holds what was waiting for that point."""
        return self._shield

    @shield.setter
    def shield(self, shield: bool) -> None:
        shield = bool(shield)
        task = self._task
        if task is None or self._exited or shield == self._shield:
            self._shield = shield
            return
        self._check_thread(task._runtime, "CancelScope.shield")
        self._shield = shield
        if shield:
            pending = task._pending_exc
            if pending is not None and holding_shield(task, pending) is self:
                task._pending_exc = None  # from outside this scope: held from now on
                self.hold(pending)
        elif self._held is not None:
            held, self._held = self._held, None
            task._runtime.interrupt(task, held)

    # -- entering and leaving (ScopeCore: C) ---------------------------------------------------

    def _absorb_pending(self, task: Task) -> None:
        # An interruption already waiting for the task's next blocking point comes from
        # outside this shield (nothing is inside yet): hold it until the shield ends.
        pending = task._pending_exc
        if pending is not None and not isinstance(pending, (KeyboardInterrupt, SystemExit)):
            task._pending_exc = None
            self._held = pending

    def hold(self, exc: BaseException) -> None:
        """(For the runtime.)  Keep ``exc``, from outside this shield, for the shield's end;
        of two, the stronger (the rule in the module docstring)."""
        held = self._held
        task = self._task
        assert task is not None
        if held is None or _strength(task, exc) > _strength(task, held):
            self._held = exc

    # -- cancelling -------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel the block: its next blocking point raises this scope's ``Cancelled``.

        Idempotent; no effect once the block has been left.  Callable from any task of the
        runtime; from another thread use ``token.call_soon(scope.cancel)``.
        """
        if self.error is not None or self._exited:
            return
        task = self._task
        if task is not None:
            self._check_thread(task._runtime, "CancelScope.cancel()")
        if self._fail:  # a fail scope leaves by TimeoutError whatever cancelled it (as trio)
            suffix = f" in {self.what}" if self.what else ""
            self._deliver(TimeoutError(f"cancelled{suffix}"))
            return
        suffix = f" ({self.what})" if self.what else ""
        self._deliver(Cancelled(f"cancel scope cancelled{suffix}"))

    # _fire (the deadline's timer calls CancelScope._fire(scope): no bound method per
    # scope) and _deliver (the interruption made this scope's, its timer stopped, the task
    # interrupted) are ScopeCore's, in C: an expiring timeout is a hot path.

    @staticmethod
    def _check_thread(runtime: Runtime, what: str) -> None:
        if get_thread_scheduler() is not runtime:
            if threading.get_ident() != runtime._thread_id:
                raise RuntimeError(
                    f"{what} called from another thread: use "
                    "token.call_soon(scope.cancel) with a token from "
                    "stackful.lowlevel.current_token()")
            raise RuntimeError(f"{what}: the scope's runtime is not running")

    # -- inspection -------------------------------------------------------------------------------

    def owns(self, exc: BaseException) -> bool:
        """True if ``exc`` is the interruption this scope raised."""
        return exc is self.error and exc is not None

    def __repr__(self) -> str:
        state = ("left" if self._exited else "active" if self._task is not None
                 else "not entered")
        flags = " cancelled" if self.cancel_called else ""
        flags += " shielded" if self.shield else ""
        return f"<{type(self).__name__} {state}{flags} deadline={self._deadline}>"
