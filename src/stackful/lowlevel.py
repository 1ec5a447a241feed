"""The small surface that synchronisation primitives are built on.

Everything a primitive needs is here: the running task, :func:`park` it, :func:`wake` it
(with a value or an exception), a cancellation :func:`checkpoint`, timers, a FIFO
:class:`WaitQueue` of parked tasks, :func:`call_shielded` for a wait that must re-take
something whatever happens, and :func:`check_timeout`, the one rule for timeouts.
Primitives never touch the scheduler's internals, so the rules of suspension (cancellation,
timeouts, deadlock reports) live in one place.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ._core import (
    NEVER,
    Cancelled,
    CancelScope,
    Runtime,
    RuntimeToken,
    Task,
    TimeoutScope,
    Timer,
    check_timeout,
    current_runtime_or_none,
    deadline_after,
    get_runtime,
    get_task,
)

__all__ = [
    "CancelScope", "Cancelled", "Runtime", "RuntimeBinding", "RuntimeToken", "Task",
    "TimeoutScope", "Timer", "WaitQueue",
    "call_later", "call_shielded", "check_timeout",
    "checkpoint", "current_runtime", "current_task", "current_time", "current_token", "in_task",
    "park", "timeout_scope",
    "wake", "wake_with_exception",
]


def current_task() -> Task:
    """The running task; ``RuntimeError`` outside ``stackful.run()``."""
    return get_task("current_task()")


def current_runtime() -> Runtime:
    """This thread's running runtime; ``RuntimeError`` outside ``stackful.run()``."""
    return get_runtime("current_runtime()")


def in_task() -> bool:
    """Is the caller running in a task of the runtime running on this thread?

    What a blocking call asks to decide between parking the task (True) and blocking the
    thread as usual (False: no runtime here, or its hub, or another OS thread).
    """
    runtime = current_runtime_or_none()
    return runtime is not None and runtime.current is not None


def current_token() -> RuntimeToken:
    """A :class:`RuntimeToken` for this thread's running runtime, to hand to other threads:
    they call into the runtime through it (``call_soon``, ``run_sync``, ``run``, ``cancel``,
    ``stop``).  While a token exists the runtime waits for its holder rather than report a
    deadlock; drop it when done."""
    return RuntimeToken(get_runtime("current_token()"))


def park(reason: str, abort: Callable[[], object] | None = None) -> Any:
    """Suspend the running task until someone calls :func:`wake` on it; return the value.

    Register the task where its waker will find it *before* parking.  ``abort`` must undo
    that registration: it runs if the wait is interrupted by cancellation or a timeout, in
    which case ``park`` raises that exception instead of returning.  ``reason`` ("Lock.acquire")
    shows in ``tasks()`` and deadlock reports.
    """
    return get_runtime("park()").park(reason, abort)


def call_shielded(fn: Callable[[], Any], carry: BaseException | None = None) -> Any:
    """Call ``fn()`` with the running task's interruptions held back, then raise the winner.

    For a wait that must re-take something whatever happened, like ``Condition.wait``
    re-taking its lock: a cancellation or timeout landing during ``fn()`` waits for it to
    return; then the strongest of those and ``carry`` (an exception already on its way out)
    is raised, by the rule in :class:`Runtime`'s docstring.  Returns ``fn()``'s result otherwise.
    """
    return get_runtime("call_shielded()").call_shielded(fn, carry)


def wake(task: Task, value: Any = None) -> None:
    """Make a parked task ready; its :func:`park` returns ``value``."""
    _runtime_of(task, "wake()").wake(task, value)


def wake_with_exception(task: Task, exc: BaseException) -> None:
    """Make a parked task ready; its :func:`park` raises ``exc``."""
    _runtime_of(task, "wake_with_exception()").wake_with_exception(task, exc)


def _runtime_of(task: Task, what: str) -> Runtime:
    rt = get_runtime(what)
    if task._runtime is not rt:
        raise RuntimeError(f"{what}: task {task.name!r} belongs to another runtime")
    return rt


def checkpoint() -> None:
    """A blocking point that does not block: raise a pending cancellation, let others run."""
    get_runtime("checkpoint()").yield_now()


def current_time() -> float:
    """The runtime's clock (virtual under a ``VirtualClock``)."""
    return get_runtime("current_time()").clock.now()


def call_later(seconds: float, callback: Callable[[Any], object], arg: Any = None) -> Timer:
    """Call ``callback(arg)`` after ``seconds`` on the runtime's clock; ``.cancel()`` to stop.

    ``seconds`` follows :func:`check_timeout` (+inf: the callback never runs).  The callback
    runs inside the scheduler and must not block; an exception it raises ends the run: the
    tasks are wound down and ``run()`` raises it.
    """
    rt = get_runtime("call_later()")
    return rt.call_at(deadline_after(rt.clock.now(), seconds, "delay"), callback, arg)


def timeout_scope(seconds: float | None, what: str = "") -> TimeoutScope:
    """A :class:`TimeoutScope` ``seconds`` from now (None or +inf: never times out)."""
    # Checked before looking for a runtime: a bad value is a ValueError anywhere.
    checked = NEVER if seconds is None else check_timeout(seconds)
    if checked == NEVER:
        return TimeoutScope(None, what)
    return TimeoutScope(get_runtime("timeout()").clock.now() + checked, what)


class RuntimeBinding:
    """Ties a primitive to the runtime that uses it, so another thread's runtime cannot.

    Bound on first use; rebinding is allowed once the old runtime has finished (a primitive
    created at import time may serve one ``run`` after another).
    """

    __slots__ = ("_owner", "_runtime")

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._runtime: Runtime | None = None

    def task(self, what: str) -> Task:
        """Check the binding and return the running task."""
        task = get_task(f"{self._owner}.{what}()")
        self._check(task._runtime, what)
        return task

    def runtime(self, what: str) -> Runtime:
        """Check the binding and return the running runtime (task or not)."""
        rt = current_runtime_or_none()
        if rt is None:
            raise RuntimeError(
                f"{self._owner}.{what}() must be called inside stackful.run() "
                "(no runtime is running on this thread)"
            )
        self._check(rt, what)
        return rt

    def _check(self, rt: Runtime, what: str) -> None:
        bound = self._runtime
        if bound is rt:
            return
        if bound is None or bound.closed:
            self._runtime = rt
            return
        raise RuntimeError(
            f"{self._owner}.{what}(): this {self._owner} belongs to another runtime "
            "(primitives cannot be shared between threads' runtimes)"
        )


class WaitQueue:
    """FIFO of parked tasks, each with an optional payload; the primitives' parking lot."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: deque[list[Any]] = deque()

    def __len__(self) -> int:
        return len(self._waiters)

    def __bool__(self) -> bool:
        return bool(self._waiters)

    def park(self, task: Task, reason: str, payload: Any = None) -> Any:
        """Park ``task`` (the running one) at the back of the queue; return its wake value."""
        entry = [task, payload]
        waiters = self._waiters
        waiters.append(entry)

        def abort() -> None:
            waiters.remove(entry)

        return task._runtime.park(reason, abort)

    def park_for(
        self, task: Task, reason: str, timeout: float | None, payload: Any = None
    ) -> tuple[bool, Any]:
        """Like :meth:`park` with an optional timeout: ``(True, value)`` or ``(False, None)``.

        Only this wait's own timeout returns False; an enclosing ``timeout()`` still raises.
        """
        if timeout is None:
            return True, self.park(task, reason, payload)
        scope = timeout_scope(timeout, reason)
        try:
            with scope:
                return True, self.park(task, reason, payload)
        except TimeoutError as exc:
            if scope.owns(exc):
                return False, None
            raise

    def peek_payload(self) -> Any:
        """Payload of the first waiter (the queue must not be empty)."""
        return self._waiters[0][1]

    def wake_one(self, value: Any = None) -> tuple[Task, Any]:
        """Wake the first waiter with ``value``; return (task, its payload)."""
        task, payload = self._waiters.popleft()
        task._runtime.wake(task, value)
        return task, payload

    def wake_all(self, value: Any = None) -> int:
        """Wake every waiter with ``value``; return how many."""
        n = 0
        while self._waiters:
            self.wake_one(value)
            n += 1
        return n

    def throw_all(self, exc_factory: Callable[[], BaseException]) -> int:
        """Wake every waiter with a fresh exception from ``exc_factory``."""
        n = 0
        while self._waiters:
            task, _ = self._waiters.popleft()
            task._runtime.wake_with_exception(task, exc_factory())
            n += 1
        return n

    def tasks(self) -> Iterator[Task]:
        """The waiting tasks, first first."""
        return (entry[0] for entry in self._waiters)
