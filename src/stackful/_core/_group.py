"""TaskGroup: tasks that live inside a block of their parent's code (a trio "nursery").

Rules (README, "Structured concurrency"; cancellation itself follows ``_cancel.py``):

* The ``with`` block does not end until every child has finished, also when the body raised.
* The first child to fail (raise anything but a cancellation) cancels the group: the body's
  next blocking point raises the group's own ``Cancelled``, which the group catches at the
  end, and every child is cancelled (``Task.cancel``).  A child spawned into a cancelled
  group is cancelled at once.
* When the block ends, the failures -- the body's and the children's, in the order they
  happened -- leave it as one ``ExceptionGroup`` (``BaseExceptionGroup`` if one is not an
  ``Exception``).  Cancellations are not failures; an interruption of the task that owns the
  group (``Task.cancel``, an enclosing scope's cancellation or timeout) cancels the children
  and, once they have finished, goes on as itself.  If there were failures as well, the
  ``ExceptionGroup`` is raised and the interruption waits for the owner's next blocking
  point: nothing is lost.
* Any task of the runtime may spawn into the group while it is open (its block, or the wait
  at its end); before or after, spawning is a ``RuntimeError``.
* ``start(fn)`` runs ``fn(..., task_status=status)`` as a child and waits until it calls
  ``status.started(value)``, then returns ``value``; if the child ends first, its exception
  is raised by ``start`` instead of counting as a failure of the group (a ``RuntimeError``
  if it returned, or if it was cancelled: the caller was not).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._native import FiberExit, GroupCore, get_thread_scheduler
from ._cancel import CancelScope
from ._exceptions import Cancelled
from ._run import _NOT_AN_INTERRUPTION, _strength, get_task
from ._task import BLOCKED

if TYPE_CHECKING:
    from ._run import Runtime
    from ._task import Task

# A group's life: made, its block running (or its end waiting for children), over.
_NEW, _OPEN, _CLOSED = "new", "open", "closed"


class TaskStatus:
    """What :meth:`TaskGroup.start` hands its function as ``task_status``: call
    :meth:`started` once ready (say, once a server listens)."""

    __slots__ = ("_group", "_task", "_waiter", "_started")

    def __init__(self, group: TaskGroup) -> None:
        self._group = group
        self._task: Task | None = None
        # The task blocked in start(), until it is woken or its wait is interrupted.
        self._waiter: Task | None = None
        self._started = False

    def started(self, value: Any = None) -> None:
        """Tell the task in ``start()`` that the child is ready; ``start()`` returns ``value``."""
        if self._started:
            raise RuntimeError("task_status.started() was already called")
        self._started = True
        task = self._task
        if task is not None:
            self._group._starting.pop(task, None)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and waiter.state is BLOCKED:
            self._group._runtime_checked("task_status.started()").wake(waiter, value)


class TaskGroup(GroupCore):
    """Context manager: ``with TaskGroup() as tg: tg.spawn(fn, *args)``; see the module
    docstring for the rules.

    ``tg.cancel()`` cancels the body and every child.  For tools: ``owner`` (the task whose
    block it is), ``parent`` (the group around it, in its owner or in the group its owner
    was spawned into), ``tasks`` (live children) and ``groups`` (open groups inside it).
    """

    # GroupCore's C fields (spawn.c: a child's spawn and end use them without Python code):
    # _children, _starting, _waiter, _runtime, _state, _cancelled -- made in
    # GroupCore.__new__, each described below or where __init__ sets it.
    __slots__ = (
        "name", "cancel_scope", "owner", "parent", "_failures", "_failed_tasks", "_subgroups",
    )

    if TYPE_CHECKING:
        # Invariant: the live children, in spawn order (each has _group = self).
        _children: dict[Task, None]
        # Children started by start() that have not called started() yet.
        _starting: dict[Task, TaskStatus]
        # The owner, while it is blocked at the end of the block waiting for children.
        _waiter: Task | None
        _runtime: Runtime | None
        _state: str
        _cancelled: bool

        def spawn(
            self, fn: Callable[..., Any], /, *args: Any, name: str | None = None,
            stack_size: int | None = None, **kwargs: Any,
        ) -> Task:
            """Start ``fn(*args, **kwargs)`` as a child task of the group and return it.

            ``RuntimeError`` unless the group is open (see the module docstring).
            """

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        # The body's scope: cancelled with the group.
        self.cancel_scope = CancelScope(what=f"TaskGroup {name!r}" if name else "TaskGroup")
        self.cancel_scope.group = self
        self.owner: Task | None = None
        self.parent: TaskGroup | None = None
        self._runtime = None
        self._state = _NEW
        self._failures: list[BaseException] = []
        self._failed_tasks: list[Task] = []  # the children among the failures
        self._cancelled = False
        self._subgroups: dict[TaskGroup, None] = {}

    # -- the tree, for tools ---------------------------------------------------------------------

    @property
    def tasks(self) -> list[Task]:
        """The live children, in spawn order."""
        return list(self._children)

    @property
    def groups(self) -> list[TaskGroup]:
        """The open groups whose parent this group is."""
        return list(self._subgroups)

    @property
    def closed(self) -> bool:
        """True once the block has ended (nothing can be spawned into it any more)."""
        return self._state is _CLOSED

    # -- the block -------------------------------------------------------------------------------

    def __enter__(self) -> TaskGroup:
        task = get_task("TaskGroup")
        if self._state is not _NEW:
            raise RuntimeError("a TaskGroup cannot be entered twice")
        self.owner = task
        self._runtime = task._runtime
        parent = _innermost_group(task)
        self.cancel_scope.__enter__()
        self._state = _OPEN
        if parent is not None:
            self.parent = parent
            parent._subgroups[self] = None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        owner = self.owner
        runtime = self._runtime
        assert owner is not None and runtime is not None
        scope = self.cancel_scope
        if isinstance(exc, FiberExit):
            # The run's wind-down is killing the owner: it cannot wait any more.
            self._cancel_children()
            scope.__exit__(None, None, None)
            self._close()
            return False
        # What ended the body: nothing, the group's own cancellation, an interruption from
        # outside (carried on once the children are done), or a failure.
        interrupted: BaseException | None = None
        if exc is not None and exc is not scope.error:
            if _strength(owner, exc) > _NOT_AN_INTERRUPTION or isinstance(exc, Cancelled):
                interrupted = exc
                self._cancel_children()
            else:
                self._failures.append(exc)
                self.cancel()
        scope.__exit__(None, exc if exc is scope.error else None, None)
        while self._children:
            self._waiter = owner
            try:
                runtime.park(self._wait_reason(), self._forget_waiter)
            except FiberExit:
                raise
            except BaseException as late:  # noqa: BLE001  an interruption: kept, raised below
                if interrupted is None or _strength(owner, late) > _strength(owner, interrupted):
                    interrupted = late
                self._cancel_children()
        self._close()
        failures = self._failures
        if failures:
            if isinstance(interrupted, (KeyboardInterrupt, SystemExit)):
                # The run is ending: the failures go to the excepthook instead of an
                # ExceptionGroup nobody would see.
                for task in self._failed_tasks:
                    task._exc_retrieved = False
                    runtime.report_unretrieved(task)
                raise interrupted
            if interrupted is not None:
                runtime._hold(owner, interrupted)
            what = f"TaskGroup {self.name!r}" if self.name else "TaskGroup"
            count = f"{len(failures)} failure{'s' if len(failures) > 1 else ''}"
            raise BaseExceptionGroup(f"{what}: {count}", failures)
        if interrupted is not None:
            if interrupted is exc:
                return False
            raise interrupted
        return exc is not None  # the group's own Cancelled (a failure would be above)

    def _wait_reason(self) -> str:
        n = len(self._children)
        return f"TaskGroup: {n} child{'ren' if n > 1 else ''} to finish"

    def _forget_waiter(self) -> None:
        self._waiter = None

    def _close(self) -> None:
        self._state = _CLOSED
        parent = self.parent
        if parent is not None:
            parent._subgroups.pop(self, None)

    # -- spawning --------------------------------------------------------------------------------

    # spawn(fn, /, *args, name=None, stack_size=None, **kwargs) is GroupCore's (spawn.c): its
    # common case makes the child without a Python frame; the rest comes here.

    def _spawn_slow(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
        name: str | None, stack_size: int | None,
    ) -> Task:
        runtime = self._runtime
        if self._state is not _OPEN or get_thread_scheduler() is not runtime:
            runtime = self._runtime_checked("TaskGroup.spawn()")  # raises the clear error
        assert runtime is not None
        if stack_size is None and runtime._fast_spawn:
            task: Task = runtime._spawn_fast(fn, args, kwargs, name, self)
        else:
            task = runtime.spawn(fn, args, kwargs, name=name, stack_size=stack_size)
            task._group = self
            self._children[task] = None
        if self._cancelled:
            runtime.cancel(task)
        return task

    def start(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        name: str | None = None,
        stack_size: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, task_status=status, **kwargs)`` as a child; wait until it calls
        ``status.started(value)`` and return ``value``.

        If the child ends before that, ``start`` raises its exception (a ``RuntimeError`` if
        it returned or was cancelled).  If the caller is interrupted while waiting, the child
        is cancelled.
        """
        me = get_task("TaskGroup.start()")
        status = TaskStatus(self)
        task = self.spawn(fn, *args, name=name, stack_size=stack_size,
                          task_status=status, **kwargs)
        status._task = task
        self._starting[task] = status
        status._waiter = me
        runtime = self._runtime
        assert runtime is not None

        def abort() -> None:
            status._waiter = None

        try:
            return runtime.park(f"TaskGroup.start({_name_of(fn)})", abort)
        except FiberExit:
            raise
        except BaseException:
            if not status._started:
                self._starting.pop(task, None)
                runtime.cancel(task)
            raise

    def _runtime_checked(self, what: str) -> Runtime:
        runtime = self._runtime
        if self._state is not _OPEN:
            label = f"TaskGroup {self.name!r}" if self.name else "the TaskGroup"
            if self._state is _NEW:
                raise RuntimeError(f"{what}: {label} has not been entered yet (use it in a "
                                   "with block)")
            raise RuntimeError(f"{what}: {label} is closed -- its with block has ended and "
                               "every child has finished; spawn into a group only while its "
                               "block runs")
        assert runtime is not None
        if get_thread_scheduler() is not runtime:
            runtime.check_thread(what)
        return runtime

    # -- cancelling and children's ends ----------------------------------------------------------

    def cancel(self) -> None:
        """Cancel the group: its body (at its next blocking point) and every child.  Children
        spawned afterwards are cancelled at once.  No effect once the group is closed."""
        if self._state is _CLOSED:
            return
        self._cancelled = True
        self.cancel_scope.cancel()
        self._cancel_children()

    def _cancel_children(self) -> None:
        self._cancelled = True
        runtime = self._runtime
        assert runtime is not None
        for task in list(self._children):
            runtime.cancel(task)

    def _child_finished(self, task: Task) -> None:
        """(Called by the runtime as ``task``, a child, finishes.)"""
        self._children.pop(task, None)
        exc = task._exception
        if self._starting:
            status = self._starting.pop(task, None)
            if (status is not None and status._waiter is not None
                    and status._waiter.state is BLOCKED):
                # Ended before started(): start() raises, the group does not.
                waiter, status._waiter = status._waiter, None
                task._exc_retrieved = True
                runtime = self._runtime
                assert runtime is not None
                runtime.wake_with_exception(waiter, _start_failure(task, exc))
                exc = None
        if exc is not None and not isinstance(exc, (Cancelled, KeyboardInterrupt, SystemExit)):
            task._exc_retrieved = True
            self._failures.append(exc)
            self._failed_tasks.append(task)
            if not self._cancelled:
                self.cancel()
        if not self._children:
            owner, self._waiter = self._waiter, None
            # (Not blocked: the run's wind-down gave up on it and killed its fiber.)
            if owner is not None and owner.state is BLOCKED:
                runtime = self._runtime
                assert runtime is not None
                runtime.wake(owner)

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return (f"<TaskGroup{label} {self._state}, {len(self._children)} children, "
                f"{len(self._failures)} failures>")


def _innermost_group(task: Task) -> TaskGroup | None:
    """The group a new group opened by ``task`` sits in: the innermost open group of the
    task's own, else the group the task was spawned into."""
    scopes = task._scopes
    if scopes:
        for scope in reversed(scopes):
            if scope.group is not None:
                return scope.group
    return task._group


def _start_failure(task: Task, exc: BaseException | None) -> BaseException:
    """What ``start()`` raises for a child that ended before it was ready."""
    if exc is None:
        return RuntimeError(f"{_name_of(task)} returned without calling task_status.started()")
    if isinstance(exc, Cancelled):
        # Someone cancelled the child, not the caller: the caller must not unwind as if it
        # had been cancelled itself.
        error = RuntimeError(f"{_name_of(task)} was cancelled before it called "
                             "task_status.started()")
        error.__cause__ = exc
        return error
    return exc


def _name_of(obj: Any) -> str:
    name = getattr(obj, "name", None) or getattr(obj, "__qualname__", None)
    return str(name) if name else repr(obj)
