"""The stackful runtime hosted on an asyncio event loop (``stackful.aio.run``).

Task switches stay fiber switches; what the runtime would wait for in its own poller goes
through the loop instead:

* :class:`AsyncioPoller` is the runtime's poller: the loop's ``add_reader``/``add_writer``
  watch the file descriptors tasks wait on, and when the runtime has nothing to run, its hub
  waits in the loop (the hub runs on a fiber bridged with :func:`stackful.aio.run_sync`, so it
  can ``await_`` a future that a ready fd, the next timer's ``call_later`` or a woken task
  completes);
* a task that calls :func:`stackful.aio.await_` parks; the awaitable runs as an asyncio task
  (in a copy of the stackful task's context), and its outcome wakes the stackful task.
  Cancelling the stackful task cancels it.

asyncio's callbacks and tasks run whenever the runtime has no task ready, and at the hub's
checks between batches of task switches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from ._core import BusyResourceError, Runtime
from ._core._io import READ
from ._native import Fiber, current

T = TypeVar("T")


class _HostedTaskFiber(Fiber):
    """A task's fiber on a hosted runtime: it sees the hosting loop as its running loop
    (and the hosting asyncio task as the current one), so asyncio libraries work in it."""

    __slots__ = ()
    __fiber_inherits_asyncio__: ClassVar[bool] = True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AsyncioPoller:
    """The runtime's poller on an asyncio loop (the face of ``_core._io.SelectorsPoller``).

    Invariant: ``_waiters[fd]`` is ``[reader, writer]``; the loop watches ``fd`` for reading
    exactly while ``reader`` is not None (and likewise for writing).  Waits are one-shot.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, runtime: HostedRuntime) -> None:
        self.loop = loop
        self.runtime = runtime
        self._waiters: dict[int, list[Any]] = {}
        self._woken: list[Any] = []
        self._wakeup: asyncio.Future[None] | None = None
        self.hub: Fiber | None = None
        # Tasks parked in await_: an asyncio task's end will wake each.
        self.awaiting = 0

    @property
    def waiting(self) -> int:
        """What may still wake a task: fds waited on, and awaitables being awaited."""
        return len(self._waiters) + self.awaiting

    @property
    def registered(self) -> int:
        return len(self._waiters)

    def add(self, fd: int, event: int, waiter: Any, describe: str,
            persistent: bool = False) -> bool:
        slot = 0 if event == READ else 1
        pair = self._waiters.setdefault(fd, [None, None])
        if pair[slot] is not None:
            raise BusyResourceError(
                f"another task is already waiting for fd {fd} to become {describe}")
        pair[slot] = waiter
        if slot == 0:
            self.loop.add_reader(fd, self._ready, fd, 0)
        else:
            self.loop.add_writer(fd, self._ready, fd, 1)
        return True

    def _unwatch(self, fd: int, slot: int) -> None:
        pair = self._waiters[fd]
        pair[slot] = None
        if slot == 0:
            self.loop.remove_reader(fd)
        else:
            self.loop.remove_writer(fd)
        if pair == [None, None]:
            del self._waiters[fd]

    def _ready(self, fd: int, slot: int) -> None:
        pair = self._waiters.get(fd)
        if pair is None or pair[slot] is None:
            return
        self._woken.append(pair[slot])
        self._unwatch(fd, slot)
        self.interrupt()

    def remove(self, fd: int, event: int, waiter: Any) -> None:
        pair = self._waiters.get(fd)
        slot = 0 if event == READ else 1
        if pair is not None and pair[slot] is waiter:
            self._unwatch(fd, slot)

    def forget(self, fd: int) -> list[tuple[Any, str]]:
        pair = self._waiters.get(fd)
        if pair is None:
            return []
        out = [(w, what) for w, what in zip(pair, ("readable", "writable"), strict=True)
               if w is not None]
        for slot in (0, 1):
            if pair[slot] is not None:
                self._unwatch(fd, slot)
        return out

    def interrupt(self) -> None:
        """Something woke a task: end the hub's wait in the loop."""
        if self._wakeup is not None:
            _resolve(self._wakeup)

    def poll(self, timeout: float | None) -> list[Any]:
        """Return the waiters whose fd is ready; on the hub, first wait in the loop up to
        ``timeout`` seconds (0: let the loop run what is ready, then come back)."""
        from .aio import await_

        if not self._woken and current() is self.hub:
            try:
                if timeout == 0:
                    await_(asyncio.sleep(0))
                else:
                    self._wait(timeout)
            except asyncio.CancelledError:
                # The hosting task is cancelled: so is the run (main first, then the rest).
                self.runtime.host_cancelled()
        woken, self._woken = self._woken, []
        return woken

    def _wait(self, timeout: float | None) -> None:
        from .aio import await_

        self._wakeup = wakeup = self.loop.create_future()
        timer = None if timeout is None else self.loop.call_later(timeout, _resolve, wakeup)
        try:
            await_(wakeup)
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        for fd in list(self._waiters):
            self.forget(fd)

    def _after_fork(self) -> list[int]:
        return []  # the loop's own selector is the loop's business


class HostedRuntime(Runtime):
    """A :class:`Runtime` whose I/O waits and timers go through an asyncio loop."""

    _fiber_type = _HostedTaskFiber

    def __init__(self, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        kwargs.setdefault("handle_signals", ())  # the hosting loop's run handles Ctrl-C
        super().__init__(**kwargs)
        self.io.close()
        self.io: AsyncioPoller = AsyncioPoller(loop, self)
        self._host_cancelled = False

    def run(self, main: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.io.hub = current()
        try:
            result = super().run(main, *args, **kwargs)
        except BaseException:
            if self._host_cancelled:
                raise asyncio.CancelledError() from None
            raise
        if self._host_cancelled:
            raise asyncio.CancelledError()
        return result

    def host_cancelled(self) -> None:
        """The asyncio task hosting the run was cancelled: cancel the run's main task."""
        self._host_cancelled = True
        if self._main is not None:
            self.cancel(self._main)

    def await_in_task(self, awaitable: Awaitable[T]) -> T:
        """Park the running task until ``awaitable``, run as an asyncio task, is done."""
        from . import lowlevel

        task = lowlevel.current_task()
        future = asyncio.ensure_future(awaitable, loop=self.io.loop)
        io = self.io

        def done(f: asyncio.Future[Any]) -> None:
            io.awaiting -= 1
            if f.cancelled():
                self.wake_with_exception(task, asyncio.CancelledError())
            elif (exc := f.exception()) is not None:
                self.wake_with_exception(task, exc)
            else:
                self.wake(task, f.result())
            io.interrupt()

        def abort() -> None:
            future.remove_done_callback(done)
            io.awaiting -= 1
            future.cancel()

        io.awaiting += 1
        future.add_done_callback(done)
        return lowlevel.park("await_", abort)  # type: ignore[no-any-return]


async def run_hosted(main: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any],
                     runtime_kwargs: dict[str, Any]) -> T:
    """``stackful.run(main, *args, **kwargs)`` hosted on the running asyncio loop."""
    from .aio import run_sync

    runtime = HostedRuntime(asyncio.get_running_loop(), **runtime_kwargs)
    return await run_sync(runtime.run, main, *args, **kwargs)
