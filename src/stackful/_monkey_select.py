"""The cooperative ``select.select``, ``poll`` and ``epoll`` of :mod:`stackful.monkey`.

Each one dispatches: called in a task of the runtime running on this thread, a wait parks the
task; anywhere else (a plain thread, the scheduler itself, no runtime) it is the stdlib's own
call, unchanged.  In a task a call first asks the stdlib's function without waiting; only if
nothing is ready does it wait, then ask again:

* ``select()`` and ``poll().poll()`` register the task with the runtime's poller for every
  file descriptor at once (one waiter per fd and direction); the first one ready wakes it, and
  every registration is dropped when it resumes (or when a cancellation or timeout aborts the
  wait).  A wake is a hint: the stdlib call that follows says what is ready, and if nothing is
  (a spurious wake), the task waits again until its deadline;
* ``epoll().poll()`` waits for the epoll object's own descriptor, which is readable while any
  of its registered files has an event.

Exceptional conditions (``select``'s third list, ``POLLPRI`` alone) and file descriptors that
another task is already waiting for (a ``BusyResourceError`` for the poller) go through a
temporary epoll set instead, whose own descriptor the task waits for.  Timeouts run on the
runtime's clock.
"""

from __future__ import annotations

import operator
import select as _std
from collections.abc import Callable, Iterable
from typing import Any

from ._core import BusyResourceError, ClosedResourceError, Runtime, Task, TimeoutScope
from ._core._io import READ, WRITE, fileno_of
from ._native import get_thread_scheduler

# The stdlib's own, taken at import (the select module may hold ours later).
std_select = _std.select
std_poll = _std.poll
std_epoll = _std.epoll

_PRI = 4  # an exceptional condition, beside READ (1) and WRITE (2)
_DESCRIBE = {READ: "readable", WRITE: "writable"}
# The stdlib keeps timeouts as int64 nanoseconds: larger ones are an OverflowError there.
_MAX_SECONDS = 2**63 / 1e9

_POLL_READ = _std.POLLIN | _std.POLLRDNORM | _std.POLLRDBAND
_POLL_WRITE = _std.POLLOUT | _std.POLLWRNORM | _std.POLLWRBAND
_POLL_DEFAULT = _std.POLLIN | _std.POLLPRI | _std.POLLOUT
_EPOLL_BY_WANT = ((READ, _std.EPOLLIN), (WRITE, _std.EPOLLOUT), (_PRI, _std.EPOLLPRI))


def _running_task() -> tuple[Runtime, Task] | None:
    """This thread's runtime and its running task, or None (not in a task: the stdlib's call)."""
    rt = get_thread_scheduler()
    if rt is None:
        return None
    task = rt.current
    return None if task is None else (rt, task)


def seconds_or_none(value: object, scale: float = 1.0) -> float | None:
    """``value`` (times ``scale``) as seconds, if the stdlib would take it as a finite,
    non-negative timeout; None if it would refuse it (the caller then lets the stdlib raise)."""
    if isinstance(value, float):
        seconds = float(value)
    else:
        try:
            seconds = float(operator.index(value))  # type: ignore[arg-type]
        except TypeError:
            return None
    seconds *= scale
    if not 0.0 <= seconds < _MAX_SECONDS:  # NaN fails this too
        return None
    return seconds


# -- the wait: the only place these functions park ------------------------------------------------


def wait_any(rt: Runtime, task: Task, wants: dict[int, int], deadline: float | None,
             reason: str) -> None:
    """Park ``task`` until one of ``wants`` (fd -> READ|WRITE|_PRI) may be ready, or until
    ``deadline`` on the runtime's clock (None: no deadline).  It may return early: the caller
    looks again.  Cancellation and enclosing timeouts are raised as from any wait."""
    if any(mask & _PRI for mask in wants.values()):
        _wait_nested(rt, task, wants, deadline, reason)
        return
    io = rt.io
    added: list[tuple[int, int]] = []

    def abort() -> None:
        for fd, event in added:
            io.remove(fd, event, task)
        added.clear()

    try:
        for fd, mask in wants.items():
            for event in (READ, WRITE):
                if not mask & event:
                    continue
                try:
                    parked = io.add(fd, event, task, _DESCRIBE[event])
                except PermissionError:
                    continue  # epoll refuses regular files: they never change readiness
                if not parked:
                    return  # a remembered edge of a persistent fd: ready now
                added.append((fd, event))
        _park(rt, reason, abort, deadline)
    except BusyResourceError:
        # Another task waits for one of these (fd, direction) pairs: wait on our own set.
        abort()
        _wait_nested(rt, task, wants, deadline, reason)
    except ClosedResourceError:
        pass  # another task closed one of them: the caller's second look reports it
    finally:
        abort()


def _wait_nested(rt: Runtime, task: Task, wants: dict[int, int], deadline: float | None,
                 reason: str) -> None:
    """Wait through a temporary epoll set holding ``wants``: its own fd turns readable."""
    with std_epoll() as ep:
        for fd, mask in wants.items():
            events = 0
            for want, flag in _EPOLL_BY_WANT:
                if mask & want:
                    events |= flag
            try:
                ep.register(fd, events)
            except PermissionError:
                pass  # a regular file: never anything to wait for
        wait_any(rt, task, {ep.fileno(): READ}, deadline, reason)


def _park(rt: Runtime, reason: str, abort: Callable[[], None], deadline: float | None) -> None:
    if deadline is None:
        rt.park(reason, abort)
        return
    scope = TimeoutScope(deadline, reason)
    try:
        with scope:
            rt.park(reason, abort)
    except TimeoutError as exc:
        if not scope.owns(exc):
            raise


def _expired(rt: Runtime, deadline: float | None) -> bool:
    return deadline is not None and rt.clock.now() >= deadline


# -- select.select --------------------------------------------------------------------------------


def select(rlist: Iterable[Any], wlist: Iterable[Any], xlist: Iterable[Any],
           timeout: float | None = None, /) -> tuple[list[Any], list[Any], list[Any]]:
    """``select.select``: in a task of this thread's runtime the wait parks the task (see the
    module docstring); elsewhere the stdlib's, unchanged."""
    here = _running_task()
    if here is None or timeout == 0:
        return std_select(rlist, wlist, xlist, timeout)
    try:
        rlist, wlist, xlist = list(rlist), list(wlist), list(xlist)
    except TypeError:
        return std_select(rlist, wlist, xlist, timeout)  # raises the stdlib's error
    seconds = None if timeout is None else seconds_or_none(timeout)
    if timeout is not None and seconds is None:
        return std_select(rlist, wlist, xlist, timeout)  # raises the stdlib's error
    ready = std_select(rlist, wlist, xlist, 0)
    if ready[0] or ready[1] or ready[2] or seconds == 0:
        return ready
    wants: dict[int, int] = {}
    for objs, want in ((rlist, READ), (wlist, WRITE), (xlist, _PRI)):
        for obj in objs:
            fd = fileno_of(obj)
            wants[fd] = wants.get(fd, 0) | want
    rt, task = here
    deadline = None if seconds is None else rt.clock.now() + seconds
    while True:
        wait_any(rt, task, wants, deadline, "select()")
        ready = std_select(rlist, wlist, xlist, 0)
        if ready[0] or ready[1] or ready[2] or _expired(rt, deadline):
            return ready


# -- select.poll ----------------------------------------------------------------------------------


def _poll_wants(mask: int) -> int:
    want = (READ if mask & _POLL_READ else 0) | (WRITE if mask & _POLL_WRITE else 0)
    if mask & _std.POLLPRI and not want & READ:
        want |= _PRI
    # Errors and hang-ups are reported whatever the mask says: a read wait sees them.
    return want or READ


class poll:  # noqa: N801  (the stdlib's name)
    """``select.poll()``'s object, whose :meth:`poll` parks a task (see the module docstring).

    It wraps a stdlib poll object and keeps its own copy of the registrations, which is what
    a task waits for.
    """

    __slots__ = ("_poll", "_masks")

    def __init__(self) -> None:
        self._poll = std_poll()
        self._masks: dict[int, int] = {}

    def register(self, fd: Any, eventmask: int = _POLL_DEFAULT, /) -> None:
        """Watch ``fd`` (an int or an object with ``fileno()``) for ``eventmask``."""
        self._poll.register(fd, eventmask)
        self._masks[fileno_of(fd)] = eventmask

    def modify(self, fd: Any, eventmask: int, /) -> None:
        """Change the events watched on a registered ``fd``."""
        self._poll.modify(fd, eventmask)
        self._masks[fileno_of(fd)] = eventmask

    def unregister(self, fd: Any, /) -> None:
        """Stop watching ``fd``."""
        self._poll.unregister(fd)
        del self._masks[fileno_of(fd)]

    def poll(self, timeout: float | None = None, /) -> list[tuple[int, int]]:
        """The ready ``(fd, events)`` pairs, waiting up to ``timeout`` milliseconds (None or
        negative: no limit)."""
        here = _running_task()
        if here is None or timeout == 0:
            return self._poll.poll(timeout)
        forever = timeout is None
        seconds: float | None = None
        if not forever:
            if isinstance(timeout, (int, float)) and timeout < 0:
                forever = True
            else:
                seconds = seconds_or_none(timeout, 1e-3)
                if seconds is None:
                    return self._poll.poll(timeout)  # raises the stdlib's error
        ready = self._poll.poll(0)
        if ready or seconds == 0:
            return ready
        rt, task = here
        deadline = None if forever or seconds is None else rt.clock.now() + seconds
        while True:
            wants = {fd: _poll_wants(mask) for fd, mask in self._masks.items()}
            wait_any(rt, task, wants, deadline, "poll()")
            ready = self._poll.poll(0)
            if ready or _expired(rt, deadline):
                return ready


# -- select.epoll ---------------------------------------------------------------------------------


class epoll:  # noqa: N801  (the stdlib's name)
    """``select.epoll``, whose :meth:`poll` parks a task (see the module docstring).

    It wraps a stdlib epoll object (which cannot be subclassed); every other method is the
    stdlib's.
    """

    __slots__ = ("_epoll",)

    def __init__(self, sizehint: int = -1, flags: int = 0) -> None:
        self._epoll = std_epoll(sizehint, flags)

    @classmethod
    def fromfd(cls, fd: int, /) -> epoll:
        """An epoll object for an existing epoll file descriptor."""
        self = cls.__new__(cls)
        self._epoll = std_epoll.fromfd(fd)
        return self

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._epoll.closed

    def close(self) -> None:
        """Close the epoll file descriptor."""
        self._epoll.close()

    def fileno(self) -> int:
        """The epoll file descriptor."""
        return self._epoll.fileno()

    def register(self, fd: Any, eventmask: int = _std.EPOLLIN | _std.EPOLLPRI | _std.EPOLLOUT,
                 /) -> None:
        """Register ``fd`` for ``eventmask``."""
        self._epoll.register(fd, eventmask)

    def modify(self, fd: Any, eventmask: int, /) -> None:
        """Change the events of a registered ``fd``."""
        self._epoll.modify(fd, eventmask)

    def unregister(self, fd: Any, /) -> None:
        """Remove ``fd``."""
        self._epoll.unregister(fd)

    def poll(self, timeout: float | None = None, maxevents: int = -1) -> list[tuple[int, int]]:
        """The ready ``(fd, events)`` pairs, waiting up to ``timeout`` seconds (None or
        negative: no limit)."""
        here = _running_task()
        if here is None or timeout == 0:
            return self._epoll.poll(timeout, maxevents)
        forever = timeout is None or (isinstance(timeout, (int, float)) and timeout < 0)
        seconds: float | None = None
        if not forever:
            seconds = seconds_or_none(timeout)
            if seconds is None:
                return self._epoll.poll(timeout, maxevents)  # raises the stdlib's error
        ready = self._epoll.poll(0, maxevents)
        if ready or seconds == 0:
            return ready
        rt, task = here
        deadline = None if seconds is None else rt.clock.now() + seconds
        me = {self._epoll.fileno(): READ}
        while True:
            wait_any(rt, task, me, deadline, "epoll.poll()")
            ready = self._epoll.poll(0, maxevents)
            if ready or _expired(rt, deadline):
                return ready

    def __enter__(self) -> epoll:
        self._epoll.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._epoll.close()
