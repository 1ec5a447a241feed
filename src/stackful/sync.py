"""Lock, Event, Semaphore and Condition for tasks, on :mod:`stackful.lowlevel` only.

Every wait is FIFO and ownership is *handed over* on release: the first waiter gets the lock
(or the semaphore's unit) before the releasing task can take it back, so no waiter starves.
Timeouts follow ``threading``: ``acquire``/``wait`` return False when their timeout passes
(``None`` or ``inf``: no timeout; negative or NaN: ``ValueError``).  A wait that was satisfied
(the lock handed over, the unit given, the event set) stands even if a cancellation or
timeout lands before the task runs again: that is raised at its next blocking point.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

from .lowlevel import (
    RuntimeBinding,
    Task,
    WaitQueue,
    check_timeout,
    current_time,
)

__all__ = ["Condition", "Event", "Lock", "Semaphore"]


def _check_timeout(blocking: bool, timeout: float | None) -> None:
    if timeout is None:
        return
    if not blocking:
        raise ValueError("can't specify a timeout for a non-blocking call")
    check_timeout(timeout)


class _HeldWith:
    """``with x:`` acquires on entry and releases on exit (Lock, Semaphore, Condition)."""

    __slots__ = ()

    def acquire(self) -> bool:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Lock(_HeldWith):
    """A mutual-exclusion lock owned by the task that acquired it (not reentrant)."""

    __slots__ = ("_owner", "_waiters", "_binding")

    def __init__(self) -> None:
        # Invariant: _owner is None only while nobody waits (release hands over directly).
        self._owner: Task | None = None
        self._waiters = WaitQueue()
        self._binding = RuntimeBinding("Lock")

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds; False if it could not."""
        task = self._binding.task("acquire")
        _check_timeout(blocking, timeout)
        owner = self._owner
        if owner is None:
            self._owner = task
            return True
        if owner is task:
            raise RuntimeError(
                "Lock.acquire(): the current task already holds this lock (Lock is not reentrant)"
            )
        if not blocking:
            return False
        ok, _ = self._waiters.park_for(task, "Lock.acquire", timeout)
        # When woken, release() already made us the owner.
        return ok

    def release(self) -> None:
        """Release the lock; the first waiter becomes the owner."""
        task = self._binding.task("release")
        if self._owner is not task:
            state = "unlocked" if self._owner is None else f"held by task {self._owner.name!r}"
            raise RuntimeError(
                f"Lock.release(): the current task does not hold this lock ({state})"
            )
        if self._waiters:
            self._owner, _ = self._waiters.wake_one()
        else:
            self._owner = None

    def locked(self) -> bool:
        """True while some task holds the lock."""
        return self._owner is not None

    @property
    def owner(self) -> Task | None:
        """The task holding the lock, or None."""
        return self._owner

    def __repr__(self) -> str:
        owner = self._owner.name if self._owner is not None else None
        return f"<Lock owner={owner!r} waiters={len(self._waiters)}>"


class Event:
    """A flag tasks can wait for; ``set`` wakes them all."""

    __slots__ = ("_flag", "_waiters", "_binding")

    def __init__(self) -> None:
        self._flag = False
        self._waiters = WaitQueue()
        self._binding = RuntimeBinding("Event")

    def is_set(self) -> bool:
        """The flag."""
        return self._flag

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        self._binding.runtime("set")
        self._flag = True
        self._waiters.wake_all(True)

    def clear(self) -> None:
        """Reset the flag; later waiters block again."""
        self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set; False if ``timeout`` seconds passed first."""
        task = self._binding.task("wait")
        _check_timeout(True, timeout)
        if self._flag:
            return True
        ok, _ = self._waiters.park_for(task, "Event.wait", timeout)
        return ok

    def __repr__(self) -> str:
        return f"<Event set={self._flag} waiters={len(self._waiters)}>"


class Semaphore(_HeldWith):
    """A counter of available units; ``acquire`` takes one, ``release`` gives one back.

    With ``max_value``, releasing past it is a ``ValueError`` (a bounded semaphore).
    """

    __slots__ = ("_value", "_max", "_waiters", "_binding")

    def __init__(self, value: int = 1, *, max_value: int | None = None) -> None:
        if value < 0:
            raise ValueError(f"Semaphore initial value must be >= 0, got {value!r}")
        if max_value is not None and max_value < value:
            raise ValueError(f"max_value ({max_value}) is below the initial value ({value})")
        self._value = value
        self._max = max_value
        self._waiters = WaitQueue()
        self._binding = RuntimeBinding("Semaphore")

    @property
    def value(self) -> int:
        """Units available now."""
        return self._value

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a unit, waiting up to ``timeout`` seconds; False if none came."""
        task = self._binding.task("acquire")
        _check_timeout(blocking, timeout)
        if self._value > 0:
            self._value -= 1
            return True
        if not blocking:
            return False
        ok, _ = self._waiters.park_for(task, "Semaphore.acquire", timeout)
        return ok

    def release(self) -> None:
        """Give a unit back: straight to the first waiter if there is one."""
        self._binding.runtime("release")
        if self._waiters:
            self._waiters.wake_one()
            return
        if self._max is not None and self._value >= self._max:
            raise ValueError(f"Semaphore released too many times (max_value={self._max})")
        self._value += 1

    def __repr__(self) -> str:
        return f"<Semaphore value={self._value} waiters={len(self._waiters)}>"


class Condition:
    """Wait for a state change announced by ``notify``, under a :class:`Lock`."""

    __slots__ = ("_lock", "_waiters", "_binding")

    def __init__(self, lock: Lock | None = None) -> None:
        self._lock = lock if lock is not None else Lock()
        self._waiters = WaitQueue()
        self._binding = RuntimeBinding("Condition")

    @property
    def lock(self) -> Lock:
        """The underlying lock."""
        return self._lock

    def _check_owner(self, what: str) -> Task:
        task = self._binding.task(what)
        if self._lock.owner is not task:
            raise RuntimeError(f"Condition.{what}(): the current task does not hold the lock")
        return task

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait for a notify, re-acquire; False if ``timeout`` passed.

        The lock is always re-acquired, even when the wait ends in a cancellation or timeout
        (those wait until it is; if several land, the rule in ``Runtime``'s docstring picks the one
        raised).  A waiter that was notified but then ends with an exception passes the
        notification on to the next waiter, so ``notify(1)`` is never lost.
        """
        task = self._check_owner("wait")
        _check_timeout(True, timeout)
        self._lock.release()
        try:
            notified, _ = self._waiters.park_for(task, "Condition.wait", timeout)
        except BaseException as exc:
            # Interrupted while waiting, so not notified (the interruption took us off the
            # queue).  Re-take the lock, then raise exc or whatever stronger came meanwhile.
            task._runtime.call_shielded(self._lock.acquire, exc)
            raise
        try:
            task._runtime.call_shielded(self._lock.acquire)
        except BaseException:
            if notified and self._waiters:
                self._waiters.wake_one()
            raise
        return notified

    def wait_for(self, predicate: Callable[[], object], timeout: float | None = None) -> bool:
        """Wait until ``predicate()`` is true; return its last value's truth."""
        _check_timeout(True, timeout)
        deadline = None if timeout is None else current_time() + timeout
        result = predicate()
        while not result:
            remaining = None
            if deadline is not None:
                remaining = deadline - current_time()
                if remaining <= 0:
                    break
            self.wait(remaining)
            result = predicate()
        return bool(result)

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters (they re-acquire the lock in turn)."""
        self._check_owner("notify")
        while n > 0 and self._waiters:
            self._waiters.wake_one()
            n -= 1

    def notify_all(self) -> None:
        """Wake every waiter."""
        self._check_owner("notify_all")
        self._waiters.wake_all()

    def __enter__(self) -> Condition:
        self._lock.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()
