"""Exceptions raised by the scheduler core.

They live here, below everything else, so that the core, ``lowlevel`` and the user primitives
can all raise them without importing each other.
"""

from __future__ import annotations


class Cancelled(BaseException):
    """Raised inside a task at its next blocking point after :meth:`Task.cancel`.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that a broad ``except Exception`` in user
    code does not swallow it by accident: cancellation should unwind the task, running its
    ``finally`` blocks on the way.
    """


class DeadlockError(RuntimeError):
    """Raised by ``run`` when every live task is blocked and nothing can ever wake one.

    The runtime's version of Go's "all goroutines are asleep - deadlock!": no task is ready, no
    timer is pending and no file descriptor is awaited.  ``blocked`` lists ``(task name, what it
    waits on)`` for every task that was stuck.
    """

    def __init__(self, message: str, blocked: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.blocked = blocked


class TooManyTasksError(RuntimeError):
    """Raised by ``spawn`` when the runtime already holds ``max_tasks`` live tasks."""


class BusyResourceError(RuntimeError):
    """Raised when a second task waits for the same event on a file descriptor."""


class ClosedResourceError(OSError):
    """Raised in a task waiting on a file descriptor that was closed under it.

    Whoever closes a file descriptor that tasks may be waiting on calls ``notify_closing(fd)``
    first (stackful's own sockets do): each waiter then gets this error, naming the fd, instead
    of sleeping for good, and the fd's number is free for the next file that gets it.
    """
