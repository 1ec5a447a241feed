"""asyncio and plain functions, bridged on fibers.

:func:`run_sync` runs a plain function on a fiber of its own, inside the asyncio task that
awaits it; anywhere below that function, at any depth, :func:`await_` hands an awaitable to
the task and suspends the fiber until it completes::

    import asyncio
    import stackful.aio

    def fetch_all(urls):                      # plain code, no async/await colour
        return [stackful.aio.await_(fetch(u)) for u in urls]

    async def main():
        return await stackful.aio.run_sync(fetch_all, ["a", "b"])

The coroutine driving the fiber awaits each awaitable on the fiber's behalf, in the task, and
switches back with the result or the exception: one fiber switch each way, no thread, no copy
of the stack.

Rules (the bridged function behaves as if its code ran in the coroutine itself):

* **Cancellation.** Cancelling the task raises :class:`asyncio.CancelledError` in the fiber at
  its pending :func:`await_` (asyncio delivers it there, as at an ``await``).  If the function
  lets it escape, ``run_sync`` raises it and the task is cancelled; if it catches it and goes
  on, so does the task, exactly as a coroutine that swallows a cancellation.  ``asyncio.timeout``
  around ``run_sync`` works the same way.  Between two ``await_`` calls the function runs
  without interruption: a function that never calls ``await_`` holds the event loop.
* **Context.** The fiber runs in the task's :class:`contextvars.Context` itself (not a copy):
  what the task set is visible in the function, and what the function sets stays set after
  ``run_sync`` returns.  The running loop and ``asyncio.current_task()`` are the task's too.
* **Exceptions** cross both ways with their tracebacks: one escaping the function is raised by
  ``run_sync`` (its frames in the traceback), one raised by an awaitable is raised by
  ``await_`` (the coroutine's frames in the traceback).
* **Closing.** If the coroutine that runs ``run_sync`` is closed while the function waits
  (``GeneratorExit``), that is raised in the function; an ``await_`` after it raises
  ``RuntimeError`` (nothing can be awaited any more) and the awaitable is closed.
* ``await_`` outside a fiber started by ``run_sync`` raises ``RuntimeError``, except in a task
  of a runtime hosted on asyncio (:func:`run`), where the task parks while the awaitable runs
  as an asyncio task.  In a coroutine, use ``await``.

Plain code also gets ``async with`` and ``async for``: :func:`sync_with` and :func:`sync_iter`.
Since the running loop and task are the task's, libraries that ask which event loop runs
(sniffio, and anyio-based ones such as httpx) see asyncio in bridged code.

SQLAlchemy's ``greenlet_spawn(fn, *args, **kwargs)`` / ``await_only(awaitable)`` pair is
``run_sync`` / ``await_``, one to one (``in_greenlet()`` is :func:`in_bridge`).
"""

from __future__ import annotations

import asyncio
import asyncio.events
import contextlib
import functools
import inspect
import weakref
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Final, ParamSpec, TypeVar

from ._aio_host import HostedRuntime
from ._aio_host import run_hosted as _run_hosted
from ._core import current_runtime_or_none
from ._native import Fiber, current

__all__ = [
    "asyncify", "await_", "in_bridge", "run", "run_hosted", "run_sync", "sync_iter", "sync_with",
]

P = ParamSpec("P")
T = TypeVar("T")

_current: Final = current


class _BridgedFiber(Fiber):
    """The fiber ``run_sync`` runs a function on.

    Invariant: while the function runs or waits in :func:`await_`, ``parent`` is the fiber
    running the driving coroutine (``run_sync``), where ``await_`` switches to.
    """

    __slots__ = ()
    # It starts with the task's running loop, current task and async generator hooks, in
    # the task's contextvars.Context itself.
    __fiber_inherits_asyncio__: ClassVar[bool] = True
    __fiber_inherits_context__: ClassVar[bool] = True


async def run_sync(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` on a new fiber inside the running task; return its result.

    The function, and anything it calls, may wait for an awaitable with :func:`await_`; this
    coroutine awaits it in the task meanwhile.  An exception escaping ``fn`` is raised here.
    """
    fiber = _BridgedFiber(fn)
    request: Any = fiber.switch(*args, **kwargs)
    while not fiber.dead:
        # The fiber is suspended in await_(request).
        try:
            value = await request
        except GeneratorExit as exc:
            request = _close_fiber(fiber, exc)
            raise
        except BaseException as exc:  # noqa: BLE001 - every outcome goes to the fiber
            driver = _current()
            if fiber.parent is not driver:  # resumed on another fiber than it left
                fiber.parent = driver
            request = fiber.throw(exc)
        else:
            driver = _current()
            if fiber.parent is not driver:
                fiber.parent = driver
            request = fiber.switch(value)
    return request  # type: ignore[no-any-return]


def _close_fiber(fiber: Fiber, exit_exc: GeneratorExit) -> Any:
    """The coroutine driving ``fiber`` is being closed: let the function unwind."""
    fiber.parent = _current()
    request = fiber.throw(exit_exc)
    while not fiber.dead:
        _discard(request)
        request = fiber.throw(RuntimeError(
            "await_() while the coroutine running this bridge is being closed"))
    return request


def _discard(awaitable: object) -> None:
    """Close a coroutine that will never be awaited (no 'never awaited' warning)."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()


def await_(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` in the task that runs this function; return its result.

    Only inside a function run by :func:`run_sync` (at any depth below it): the fiber is
    suspended, the task awaits ``awaitable``, and its result is returned here or its
    exception (cancellation included) raised here.
    """
    fiber = _current()
    if type(fiber) is _BridgedFiber:
        return fiber.parent.switch(awaitable)  # type: ignore[union-attr, no-any-return]
    runtime = current_runtime_or_none()
    if runtime is not None and runtime.current is not None:
        if isinstance(runtime, HostedRuntime):
            return runtime.await_in_task(awaitable)
        _discard(awaitable)
        raise RuntimeError(
            "await_() in a task of stackful's own runtime needs the runtime hosted on an "
            "asyncio loop: start it with stackful.aio.run(main) instead of stackful.run(main)")
    _discard(awaitable)
    raise RuntimeError(
        "await_() outside a function run by stackful.aio.run_sync(): in a coroutine, use "
        "'await'; from plain code, start it with 'await stackful.aio.run_sync(fn)'")


def in_bridge() -> bool:
    """Can :func:`await_` be called here (in a function run by :func:`run_sync`, or in a
    task of a runtime hosted on asyncio)?"""
    if type(_current()) is _BridgedFiber:
        return True
    runtime = current_runtime_or_none()
    return isinstance(runtime, HostedRuntime) and runtime.current is not None


def run(main: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``stackful.run(main, *args, **kwargs)`` hosted on a new asyncio event loop.

    Task switches stay fiber switches; the tasks' I/O waits and timers go through the
    loop, and any task may :func:`await_` an awaitable (it runs as an asyncio task meanwhile),
    so asyncio libraries work from stackful tasks and asyncio tasks run alongside them.
    Inside a coroutine already, ``await run_hosted(main, *args)`` does the same on the
    running loop.
    """
    return asyncio.run(run_hosted(main, *args, **kwargs))


async def run_hosted(main: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run the stackful runtime with ``main`` as its main task on the running asyncio loop."""
    return await _run_hosted(main, args, kwargs, {})


class _RunningLoopPerFiber:
    """``asyncio.events._running_loop`` per fiber, as the native core keeps the C one.

    asyncio's pure-Python ``_get_running_loop``/``_set_running_loop`` (used where the
    ``_asyncio`` extension is missing, and kept as ``_py__get_running_loop``...) read a
    ``threading.local``'s ``loop_pid``.  This stand-in keeps it per fiber; a fiber that
    inherits asyncio's state (a bridged one, a greenlet) sees its starter's until it sets
    its own.
    """

    __slots__ = ("_by_fiber",)

    def __init__(self, initial: tuple[Any, Any]) -> None:
        self._by_fiber: weakref.WeakKeyDictionary[Fiber, tuple[Any, Any]] = (
            weakref.WeakKeyDictionary())
        if initial != (None, None):
            self._by_fiber[_current()] = initial

    @property
    def loop_pid(self) -> tuple[Any, Any]:
        fiber: Fiber | None = _current()
        while fiber is not None:
            found = self._by_fiber.get(fiber)
            if found is not None:
                return found
            if not getattr(type(fiber), "__fiber_inherits_asyncio__", False):
                break
            fiber = fiber.parent
        return (None, None)

    @loop_pid.setter
    def loop_pid(self, value: tuple[Any, Any]) -> None:
        self._by_fiber[_current()] = value


def _install_running_loop_per_fiber() -> None:
    events: Any = asyncio.events  # typeshed does not list the private holder
    if not isinstance(events._running_loop, _RunningLoopPerFiber):
        events._running_loop = _RunningLoopPerFiber(events._running_loop.loop_pid)


_install_running_loop_per_fiber()


@contextlib.contextmanager
def sync_with(manager: AbstractAsyncContextManager[T]) -> Iterator[T]:
    """``async with manager as x`` for plain code: ``with sync_with(manager) as x``.

    Its ``__aenter__`` and ``__aexit__`` are awaited with :func:`await_`; an exception
    in the body reaches ``__aexit__`` as it would in ``async with`` (and is suppressed if
    that returns true).
    """
    enter, leave = type(manager).__aenter__, type(manager).__aexit__
    value = await_(enter(manager))
    try:
        yield value
    except BaseException as exc:
        if not await_(leave(manager, type(exc), exc, exc.__traceback__)):
            raise
    else:
        await_(leave(manager, None, None, None))


def sync_iter(iterable: AsyncIterable[T]) -> Iterator[T]:
    """``async for x in iterable`` for plain code: ``for x in sync_iter(iterable)``.

    Each ``__anext__`` is awaited with :func:`await_`.  Breaking out of the loop early
    leaves an async generator open: close it with ``await_(agen.aclose())`` if it holds
    something.
    """
    iterator = aiter(iterable)
    next_item = type(iterator).__anext__
    while True:
        try:
            item = await_(next_item(iterator))
        except StopAsyncIteration:
            return
        yield item


def asyncify(fn: Callable[P, T]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn a plain function into a coroutine function that runs it with :func:`run_sync`.

    ``await asyncify(fn)(*args)`` is ``await run_sync(fn, *args)``; inside, ``fn`` may call
    :func:`await_`.  Usable as a decorator.
    """
    @functools.wraps(fn)
    async def bridged(*args: P.args, **kwargs: P.kwargs) -> T:
        return await run_sync(fn, *args, **kwargs)

    return bridged
