"""The user-facing runtime: ``run``, ``spawn``, ``yield_now``, ``sleep``, I/O waits, ``tasks``.

Thin functions over :mod:`stackful._core`; each finds this thread's runtime and fails with a
clear ``RuntimeError`` when called outside ``stackful.run()``.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ._core import (
    BlockingReport,
    BusyResourceError,
    Cancelled,
    CancelScope,
    Clock,
    ClosedResourceError,
    DeadlockError,
    HasFileno,
    Runtime,
    SystemClock,
    Task,
    TaskExceptHookArgs,
    TaskGroup,
    TaskStatus,
    TooManyTasksError,
    VirtualClock,
    get_runtime,
    get_task,
    set_thread_pool_size,
    to_thread,
)
from ._native import sleep as _native_sleep
from ._native import wait_io as _wait_io
from ._native import yield_now as _native_yield_now

T = TypeVar("T")

__all__ = [
    "BlockingReport", "BusyResourceError", "CancelScope", "Cancelled", "Clock",
    "ClosedResourceError", "DeadlockError", "Runtime", "SystemClock", "Task", "TaskExceptHookArgs",
    "TaskGroup", "TaskStatus", "TooManyTasksError", "VirtualClock", "current_task",
    "notify_closing", "run", "set_thread_pool_size", "sleep", "spawn", "tasks", "to_thread",
    "wait_readable", "wait_writable", "yield_now",
]


def run(
    main: Callable[..., T],
    /,
    *args: Any,
    clock: Clock | None = None,
    handle_signals: Iterable[int] = (signal.SIGINT,),
    watchdog: float | None = None,
    watchdog_hook: Callable[[BlockingReport], object] | None = None,
    structured: bool = False,
    **kwargs: Any,
) -> T:
    """Run ``main(*args, **kwargs)`` in a fresh runtime on this thread; return its result.

    ``clock`` replaces the real clock (e.g. ``VirtualClock()`` for tests).  Tasks still alive
    when main returns are cancelled and wound down first.  Raises main's exception,
    :class:`DeadlockError` if every task blocks forever, or ``KeyboardInterrupt`` after
    winding the tasks down on Ctrl-C.  ``handle_signals=(signal.SIGINT, signal.SIGTERM)``
    winds down on SIGTERM too, then raises ``SystemExit(143)`` (see :class:`Runtime`).

    ``watchdog=0.1`` reports every task that holds the thread for 0.1 s without yielding (a
    blocking call that should have been cooperative), once per stall, with its stack:
    ``watchdog_hook(report)`` receives a :class:`BlockingReport`, on the watchdog's own thread;
    by default it is printed on stderr.

    ``structured=True`` gives the whole program trio's rule: main runs as the body of a root
    :class:`TaskGroup` that every ``spawn`` joins, so ``run`` returns once all of them have
    finished, the first failure cancels the rest, and the failures leave ``run`` as one
    ``ExceptionGroup``.  By default (asyncio's and gevent's rule) the tasks still alive when
    main ends are cancelled and their failures go to the excepthook.
    """
    rt = Runtime(clock=clock, handle_signals=handle_signals, watchdog=watchdog,
                 watchdog_hook=watchdog_hook, structured=structured)
    result: T = rt.run(main, *args, **kwargs)
    return result


def spawn(
    fn: Callable[..., Any],
    /,
    *args: Any,
    name: str | None = None,
    stack_size: int | None = None,
    **kwargs: Any,
) -> Task:
    """Start ``fn(*args, **kwargs)`` as a new task (at the back of the ready queue); in a
    ``run(..., structured=True)``, as a child of the root group (see :func:`run`)."""
    rt = get_runtime("spawn()")
    root = rt._root_group  # structured=True: None until main's body opens it
    if root is not None and not root.closed:
        task: Task = root.spawn(fn, *args, name=name, stack_size=stack_size, **kwargs)
        return task
    return rt.spawn(fn, args, kwargs, name=name, stack_size=stack_size)


yield_now = _native_yield_now
"""Let every other ready task run once, then continue (the seeds' ``t_yield``).

The whole round-robin step is in C (scheduler.c): no Python frame on the hot path."""


sleep = _native_sleep
"""Block the running task for ``seconds`` on the runtime's clock (0: just yield; +inf: until
cancelled).

A finite sleep on the real clock is all C (loop.c: a timer and a park); anything else goes to
:meth:`Runtime.sleep`."""


def wait_readable(fd: int | HasFileno, timeout: float | None = None) -> None:
    """Block until ``fd`` (an int or an object with ``fileno()``) is readable.

    Raises ``TimeoutError`` after ``timeout`` seconds.  Without a timeout the whole wait is
    the C core's (no Python frame between here and the switch).
    """
    if timeout is None:
        _wait_io(fd, False)
    else:
        get_runtime("wait_readable()").wait_fd(fd, False, timeout)


def wait_writable(fd: int | HasFileno, timeout: float | None = None) -> None:
    """Block until ``fd`` is writable; raises ``TimeoutError`` after ``timeout`` seconds."""
    if timeout is None:
        _wait_io(fd, True)
    else:
        get_runtime("wait_writable()").wait_fd(fd, True, timeout)


def notify_closing(fd: int | HasFileno) -> None:
    """Call before closing ``fd``: tasks waiting on it get :class:`ClosedResourceError`.

    stackful's own sockets do this in ``close()``; code that closes raw file descriptors other
    tasks may be waiting on must call it, or those tasks never wake.
    """
    get_runtime("notify_closing()").notify_closing(fd)


def current_task() -> Task:
    """The task running now."""
    return get_task("current_task()")


def tasks() -> list[Task]:
    """The live tasks of this thread's runtime, in spawn order (``.name``, ``.state``)."""
    return get_runtime("tasks()").tasks()
