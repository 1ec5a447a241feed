"""Task: one fiber plus what the scheduler knows about it.

The seeds' ``Thread`` had a stack, a saved context and a state; here the stack and context
belong to the native :class:`Fiber` and the task adds the scheduling state around it.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from .._native import TASK_BLOCKED, TASK_FINISHED, TASK_READY, TASK_RUNNING, TaskCore
from ._exceptions import Cancelled

if TYPE_CHECKING:
    from ._cancel import CancelScope
    from ._group import TaskGroup
    from ._run import Runtime

# Task states, in the seeds' terms (Ready / Running) plus the two a real runtime needs.
# Plain interned strings: compared with ``is`` on the hot path, readable in ``tasks()``.
# The first three come from the C hot path (scheduler.c, loop.c), which sets them itself.
READY: str = TASK_READY
RUNNING: str = TASK_RUNNING
BLOCKED: str = TASK_BLOCKED
FINISHED: str = TASK_FINISHED


class TaskExceptHookArgs(NamedTuple):
    """What the task exception hook receives (shaped like ``threading.ExceptHookArgs``)."""

    exc_type: type[BaseException]
    exc_value: BaseException
    exc_traceback: TracebackType | None
    task: Task


def default_excepthook(args: TaskExceptHookArgs) -> None:
    """Print the traceback of a task's unretrieved exception on stderr."""
    print(f"Exception in stackful task {args.task.name!r}:", file=sys.stderr)
    traceback.print_exception(args.exc_type, args.exc_value, args.exc_traceback, file=sys.stderr)


class Task(TaskCore):
    """A function running in its own fiber under a runtime; created by ``spawn``.

    Use :meth:`join` to wait for its result, :meth:`cancel` to stop it.
    """

    # Every field is TaskCore's, in C (scheduler.h), so that the runtime makes, starts and
    # finishes a task without Python code (spawn.c): state, _fiber, _pending_exc,
    # _resume_value, _resume_exc, _abort, _wait_reason, _shield (what every switch, park and
    # wake touches) and the rest of the record, each described below.
    __slots__ = ("__weakref__",)

    if TYPE_CHECKING:
        name: str
        id: int
        _parent_id: int | None
        _runtime: Runtime
        _fn: Callable[..., Any] | None
        _args: tuple[Any, ...]
        _kwargs: dict[str, Any] | None
        _joiners: list[Task] | None
        _result: Any
        _exception: BaseException | None
        _exc_retrieved: bool
        _cancel_requested: bool
        _cancel_count: int
        _scopes: list[CancelScope] | None
        _group: TaskGroup | None

    def __init__(
        self,
        runtime: Runtime,
        task_id: int,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        # (Runtime.spawn's uncommon cases; the common one sets the same in C: spawn.c.)
        self.name = name
        self.id = task_id
        # Invariant: READY <=> the task is in runtime.ready exactly once; RUNNING <=> it is
        # runtime.current; BLOCKED <=> it is parked and _abort/_wait_reason describe the wait.
        self.state = READY
        self._runtime = runtime
        self._fiber = None
        self._fn = fn
        self._args = args
        self._kwargs = kwargs
        # The C fields start as: _resume_value/_resume_exc None (set by whoever wakes the task;
        # read once when it resumes), _pending_exc None (an interruption -- Cancelled, a
        # scope's TimeoutError, KeyboardInterrupt -- for its next blocking point; at most one:
        # the rule in Runtime's docstring keeps the stronger), _shield 0 (> 0 while
        # interruptions must wait: Runtime.call_shielded), _abort None, _wait_reason "".
        # The task's open cancel scopes (timeouts among them), outermost first (None until
        # it opens one).
        self._scopes = None
        # The TaskGroup this task was spawned into (told when the task finishes), or None.
        self._group = None
        self._joiners = None  # tasks in join(): a list from the first
        self._result = None
        self._exception = None
        self._exc_retrieved = False
        self._cancel_requested = False
        self._cancel_count = 0
        # Who spawned it, by id (not the task: a chain of spawners would stay alive), for
        # the task tree of dumps and deadlock reports; None: spawned by the hub (main).
        spawner = runtime.current
        self._parent_id = spawner.id if spawner is not None else None

    # -- inspection --------------------------------------------------------------------------

    def done(self) -> bool:
        """True once the task finished (returned, raised or was cancelled)."""
        return self.state is FINISHED

    def cancelled(self) -> bool:
        """True if the task finished by :class:`Cancelled`."""
        return self.state is FINISHED and isinstance(self._exception, Cancelled)

    @property
    def group(self) -> TaskGroup | None:
        """The :class:`TaskGroup` this task was spawned into, or None for a loose task."""
        return self._group

    @property
    def waiting_on(self) -> str:
        """What a blocked task waits on (e.g. ``"Lock.acquire"``); empty otherwise."""
        return str(self._wait_reason) if self.state is BLOCKED else ""

    def result(self) -> Any:
        """Return the task's return value, or raise its exception; the task must be done."""
        if self.state is not FINISHED:
            raise RuntimeError(f"task {self.name!r} is not finished (it is {self.state})")
        exc = self._exception
        if exc is not None:
            self._exc_retrieved = True
            raise exc
        return self._result

    def exception(self) -> BaseException | None:
        """Return the exception the task ended with (None if it returned); must be done."""
        if self.state is not FINISHED:
            raise RuntimeError(f"task {self.name!r} is not finished (it is {self.state})")
        self._exc_retrieved = True
        return self._exception

    # -- control -----------------------------------------------------------------------------

    def join(self, timeout: float | None = None) -> Any:
        """Wait for the task to finish; return its result or re-raise its exception.

        Raises ``TimeoutError`` if ``timeout`` seconds pass first (the task keeps running).
        """
        return self._runtime.join(self, timeout)

    def cancel(self) -> bool:
        """Ask the task to stop: :class:`Cancelled` is raised at its next blocking point.

        Returns False if the task had already finished.
        """
        return self._runtime.cancel(self)

    def __repr__(self) -> str:
        extra = f" waiting on {self._wait_reason}" if self.state is BLOCKED else ""
        return f"<Task {self.name!r} {self.state}{extra}>"

    # "Nothing lost": a failed task nobody looked at reports its exception when it is
    # forgotten (or when the run ends, whichever comes first) -- TaskCore's finalizer, in C.
