"""Hybrid locks: ``threading.Lock``/``RLock`` and ``queue.SimpleQueue`` for tasks *and* threads.

What :mod:`stackful.monkey` puts in place of the stdlib's.  One object may be shared by tasks of
one or more runtimes (on several OS threads) and by plain threads, all at once: a wait parks
the caller if it is a task of the runtime running on its thread, and blocks the thread
otherwise.  ``threading.Condition``, ``Event``, ``Semaphore``, ``Barrier`` and ``queue.Queue``
are the stdlib's own code, built on these locks (``Condition.wait`` waits by acquiring a lock
that ``notify`` releases), so they are hybrid too.

How a wait works.  Each object has a *mutex* (a real ``_thread`` lock, held only for a few
lines, never across a wait) guarding its state and a FIFO of :class:`_Waiter` records.  A
caller that cannot proceed appends its waiter under the mutex -- in the same critical
section as its last try, so no release can slip between them and be lost -- and then waits
outside it: a thread on a private ``_thread`` lock, a task in ``park``.  Whoever releases pops
the first waiter and *grants* it what it waited for (the lock's ownership, the queue's item)
before waking it, so a woken waiter never competes again.  Waking a task from its own
runtime's thread is ``runtime.wake``; from anywhere else the wake is posted through the
runtime's thread bridge (``RuntimeToken``'s mechanism) and happens on the runtime's thread.

A task's wait can end early (cancellation, a timeout).  Its ``abort`` runs under the mutex:
a waiter still queued is removed; one granted already -- by a thread whose wake has not been
delivered yet -- passes what it was given on (the lock to the next waiter, the item back to
the queue), because its ``park`` raises instead of returning it.

While a task waits here its runtime does not report a deadlock: another thread may release.
A deadlock of tasks on these objects therefore waits forever, as threads would.
"""

from __future__ import annotations

import _thread
from _queue import Empty
from collections import deque
from collections.abc import Callable
from types import GenericAlias
from typing import Any

from ._core import BLOCKED, FINISHED, Runtime, Task, TimeoutScope
from ._core._bridge import ThreadWait
from ._native import get_thread_scheduler

_allocate = _thread.allocate_lock
_get_ident = _thread.get_ident
TIMEOUT_MAX = _thread.TIMEOUT_MAX


class _Waiter(ThreadWait):
    """One waiting caller: a task (``task`` set) or a thread (``event``, a held lock)."""

    __slots__ = ("event", "gone", "granted", "owner", "task", "value")

    def __init__(self, owner: Any, task: Task | None) -> None:
        self.owner = owner  # the object waited on: on_lost() is called on it
        self.task = task
        self.event: Any = None
        if task is None:
            self.event = _allocate()
            self.event.acquire()
        self.granted = False
        self.gone = False  # the waiter stopped waiting: nothing may be delivered to it
        self.value: Any = None

    def lost_in_fork(self) -> None:
        """A forked child's task keeps waiting: a task of its runtime may still release.
        (A thread that held the object at the fork is gone for good, as with the stdlib's
        own locks.)"""


def _grant(w: _Waiter, value: Any) -> bool:
    """Give ``w`` what it waited for and wake it (mutex held).  False if it cannot be reached
    (its task is over): the caller then serves the next waiter."""
    w.granted = True
    w.value = value
    task = w.task
    if task is None:
        w.event.release()
        return True
    runtime = task._runtime
    if get_thread_scheduler() is runtime:
        state = task.state
        if state is BLOCKED:
            runtime.wake(task)
        elif state is FINISHED:  # killed without its abort (a run giving up on it)
            w.gone = True
            return False
        # else woken already by somebody else's mistake: it finds the grant when it runs
        return True
    bridge = runtime._bridge  # made before the task parked
    if bridge is None or not bridge.post_if_running(_deliver, (w,)):
        w.gone = True
        return False
    return True


def _deliver(w: _Waiter) -> None:
    """On the task's runtime thread: wake the granted task, unless it stopped waiting."""
    if w.gone:
        return  # its abort already passed the grant on
    task = w.task
    assert task is not None
    state = task.state
    if state is BLOCKED:
        task._runtime.wake(task)
        return
    if state is not FINISHED:
        return  # woken already by somebody else's mistake: it finds the grant when it runs
    # Killed without its abort (a run giving up on a task): pass the grant on.
    owner = w.owner
    with owner._mutex:
        w.gone = True
        owner._on_lost(w)


def _wait(owner: Any, w: _Waiter, timeout: float, reason: str) -> bool:
    """Wait (mutex not held) for ``w``, queued already, to be granted; ``timeout`` < 0: no
    limit.  True if granted; False on a timeout (``w`` dequeued, or its grant passed on)."""
    task = w.task
    if task is None:
        return _wait_thread(owner, w, timeout)
    runtime: Runtime = task._runtime
    mutex = owner._mutex

    def abort() -> None:
        with mutex:
            w.gone = True
            if w.granted:
                owner._on_lost(w)  # granted from another thread, wake not delivered yet
            else:
                owner._waiters.remove(w)

    def park_until_granted() -> None:
        runtime.park(reason, abort)
        while not w.granted:  # woken by somebody else's mistake: the grant is what counts
            runtime.park(reason, abort)

    bridge = runtime._bridge
    assert bridge is not None  # made before the waiter was queued
    bridge.waits.add(w)  # another thread may wake it: not a deadlock
    try:
        if timeout < 0:
            park_until_granted()
            return True
        scope = TimeoutScope(runtime.clock.now() + timeout, reason)
        try:
            with scope:
                park_until_granted()
        except TimeoutError as exc:
            if scope.owns(exc):
                return False
            raise
        return True
    finally:
        bridge.waits.discard(w)


def _wait_thread(owner: Any, w: _Waiter, timeout: float) -> bool:
    try:
        if w.event.acquire(True, timeout):
            return True
    except BaseException:
        # KeyboardInterrupt in the main thread: stop waiting, and pass on a grant that came.
        with owner._mutex:
            w.gone = True
            if w.granted:
                owner._on_lost(w)
            else:
                owner._waiters.remove(w)
        raise
    with owner._mutex:
        if w.granted:
            return True  # granted just as the timeout expired
        w.gone = True
        owner._waiters.remove(w)
    return False


def _new_waiter(owner: Any) -> _Waiter:
    """A waiter for the caller: a task of this thread's runtime, or the thread itself."""
    runtime = get_thread_scheduler()
    task = None if runtime is None else runtime.current
    if task is not None:
        runtime.thread_bridge()  # now: a releaser on another thread posts the wake through it
    return _Waiter(owner, task)


def _check_acquire_args(blocking: object, timeout: object) -> float:
    """The stdlib's checks of ``acquire(blocking, timeout)`` (its own errors: a free lock
    raises them); the timeout as a float, -1 for none."""
    _allocate().acquire(blocking, timeout)  # type: ignore[arg-type]
    if not blocking:
        return 0.0
    return float(timeout)  # type: ignore[arg-type]


class Lock:
    """``threading.Lock`` for tasks and threads alike (see the module docstring).

    Not reentrant, and any caller may release it, as with the stdlib's.  Waiters are served
    in the order they came.
    """

    __slots__ = ("__weakref__", "_lock", "_mutex", "_waiters")

    def __init__(self) -> None:
        # Invariant: _lock is held while somebody owns this lock, and a release that finds
        # waiters hands it to the first without unlocking it in between.
        self._lock = _allocate()
        self._mutex = _allocate()
        self._waiters: deque[_Waiter] = deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds (-1: no limit) if ``blocking``;
        True if taken."""
        if timeout != -1 or blocking is not True:
            timeout = _check_acquire_args(blocking, timeout)
        if self._lock.acquire(False):
            return True
        if not blocking or timeout == 0:
            return False
        w = _new_waiter(self)
        with self._mutex:
            if self._lock.acquire(False):  # the last try, in the same section as the queueing
                return True
            self._waiters.append(w)
        return _wait(self, w, timeout, "Lock.acquire")

    acquire_lock = acquire

    def release(self) -> None:
        """Release the lock (held by anyone): the first waiter, if any, gets it."""
        with self._mutex:
            if not self._lock.locked():
                raise RuntimeError("release unlocked lock")
            self._release_held()

    release_lock = release

    def _release_held(self) -> None:
        """Hand the held lock to the first reachable waiter, or unlock it (mutex held)."""
        waiters = self._waiters
        while waiters:
            if _grant(waiters.popleft(), None):
                return
        self._lock.release()

    def _on_lost(self, w: _Waiter) -> None:
        """A waiter that was granted the lock stopped waiting: pass the lock on."""
        self._release_held()

    def locked(self) -> bool:
        """True while somebody holds the lock."""
        return self._lock.locked()

    locked_lock = locked

    # What threading.Condition uses around a wait, if the lock has them.
    def _is_owned(self) -> bool:
        return self._lock.locked()  # a plain lock has no owner: held by somebody is all

    def _release_save(self) -> None:
        self.release()

    def _acquire_restore(self, state: None) -> None:
        _acquire_shielded(self)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _at_fork_reinit(self) -> None:
        self._lock = _allocate()
        self._mutex = _allocate()
        self._waiters = deque()

    def __repr__(self) -> str:
        state = "locked" if self._lock.locked() else "unlocked"
        return f"<{state} stackful hybrid lock object at {id(self):#x}>"


def _acquire_shielded(lock: Lock) -> None:
    """``lock.acquire()`` for ``Condition.wait``'s way out: in a task, a cancellation or
    timeout landing meanwhile waits until the lock is back (then it is raised), so the caller
    always leaves the wait holding the lock, as its ``with`` block expects."""
    runtime = get_thread_scheduler()
    if runtime is None or runtime.current is None:
        lock.acquire()
    else:
        runtime.call_shielded(lock.acquire)


def _me() -> Any:
    """Who owns a reentrant lock taken now: the running task, else the thread."""
    runtime = get_thread_scheduler()
    if runtime is not None:
        task = runtime.current
        if task is not None:
            return task
    return _get_ident()


class RLock:
    """``threading.RLock`` for tasks and threads: its owner is the task that took it (two
    tasks on one thread are two owners), or the thread, outside tasks."""

    __slots__ = ("__weakref__", "_count", "_lock", "_owner")

    def __init__(self) -> None:
        self._lock = Lock()
        self._owner: Any = None
        self._count = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock (again, if the caller holds it already); True if taken."""
        me = _me()
        owner = self._owner
        if owner is me or (owner is not None and owner == me):
            if timeout != -1 or blocking is not True:
                _check_acquire_args(blocking, timeout)
            self._count += 1
            return True
        if not self._lock.acquire(blocking, timeout):
            return False
        self._owner = me
        self._count = 1
        return True

    __enter__ = acquire

    def release(self) -> None:
        """Release one level; the last one frees the lock for the next waiter."""
        if not self._is_owned():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if not self._count:
            self._owner = None
            self._lock.release()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def locked(self) -> bool:
        """True while somebody holds the lock."""
        return self._lock.locked()

    def _is_owned(self) -> bool:
        owner = self._owner
        if owner is None:
            return False
        me = _me()
        return owner is me or owner == me

    def _recursion_count(self) -> int:
        return self._count if self._is_owned() else 0

    # What threading.Condition uses to release a reentrant lock fully around a wait.
    def _release_save(self) -> tuple[int, Any]:
        if not self._is_owned():
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self._owner)
        self._count = 0
        self._owner = None
        self._lock.release()
        return state

    def _acquire_restore(self, state: tuple[int, Any]) -> None:
        _acquire_shielded(self._lock)
        self._count, self._owner = state

    def _at_fork_reinit(self) -> None:
        self._lock._at_fork_reinit()
        self._owner = None
        self._count = 0

    def __repr__(self) -> str:
        owner = self._owner
        who = getattr(owner, "name", owner)
        state = "locked" if owner is not None else "unlocked"
        return (f"<{state} stackful hybrid RLock object owner={who!r} count={self._count} "
                f"at {id(self):#x}>")


class SimpleQueue:
    """``queue.SimpleQueue`` for tasks and threads: ``put`` never blocks; ``get`` parks a
    task or blocks a thread until an item comes, first come first served."""

    __slots__ = ("__weakref__", "_items", "_mutex", "_waiters")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._mutex = _allocate()
        self._waiters: deque[_Waiter] = deque()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item`` (``block`` and ``timeout`` are ignored: it never blocks)."""
        with self._mutex:
            self._hand(item)

    def put_nowait(self, item: Any) -> None:
        """``put(item)``."""
        self.put(item)

    def _hand(self, item: Any) -> None:
        """Give ``item`` to the first reachable waiter, or queue it (mutex held)."""
        waiters = self._waiters
        while waiters:
            if _grant(waiters.popleft(), item):
                return
        self._items.append(item)

    def _on_lost(self, w: _Waiter) -> None:
        """A waiter that was handed an item stopped waiting: the item goes first again."""
        item, w.value = w.value, None
        waiters = self._waiters
        while waiters:
            if _grant(waiters.popleft(), item):
                return
        self._items.appendleft(item)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the first item, waiting for one if ``block`` (up to ``timeout``
        seconds); ``queue.Empty`` if there is none."""
        if block and timeout is not None:
            if timeout < 0:
                raise ValueError("'timeout' must be a non-negative number")
        items = self._items
        with self._mutex:
            if items:
                return items.popleft()
            if not block:
                raise Empty
        w = _new_waiter(self)
        with self._mutex:
            if items:
                return items.popleft()
            self._waiters.append(w)
        if _wait(self, w, -1 if timeout is None else float(timeout), "SimpleQueue.get"):
            item, w.value = w.value, None
            return item
        raise Empty

    def get_nowait(self) -> Any:
        """``get(False)``."""
        return self.get(False)

    def empty(self) -> bool:
        """True if no item is queued (no guarantee about the next call)."""
        return not self._items

    def qsize(self) -> int:
        """How many items are queued (no guarantee about the next call)."""
        return len(self._items)

    # SimpleQueue[int], as the stdlib's.
    __class_getitem__: Any = classmethod(GenericAlias)


def thread_join(original: Callable[..., None]) -> Callable[..., None]:
    """``Thread.join`` that, in a task, waits on a worker thread (``to_thread``) so the task
    parks; elsewhere ``original``."""
    import threading

    from ._core import to_thread

    def join(self: threading.Thread, timeout: float | None = None) -> None:
        runtime = get_thread_scheduler()
        if runtime is None or runtime.current is None:
            return original(self, timeout)
        # The checks a worker thread would get wrong (it is not the caller's thread).
        if not self._started.is_set():  # type: ignore[attr-defined]
            raise RuntimeError("cannot join thread before it is started")
        if self is threading.current_thread():
            raise RuntimeError("cannot join current thread")
        if not self.is_alive():
            return original(self, 0)
        to_thread(original, self, timeout)
        return None

    join.__doc__ = original.__doc__
    join.__name__ = join.__qualname__ = "join"
    return join
