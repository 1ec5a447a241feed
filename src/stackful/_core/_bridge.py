"""How other OS threads reach a running runtime: the thread bridge.

A runtime belongs to one thread and none of its state is locked; another thread never touches
it.  It posts a callable instead: the callable goes into a queue, and a write to an eventfd (a
pipe where there is none) wakes the hub if it is blocked in the poller.  The hub runs what was
posted between batches of tasks, on its own thread.  Nothing polls.

The eventfd is registered with the runtime's poller (persistent: no ``epoll_ctl`` per wake) by
:meth:`ThreadBridge.arm`; the poller calls :meth:`ThreadBridge._on_readable`, which only records
the event (the poller is iterating its events), and the hub then calls :meth:`run_posted`.

Deadlocks.  With no other thread involved the runtime knows when nothing can ever wake its
tasks, and raises ``DeadlockError``.  Another thread can: while a job it runs for a task is in
flight (``to_thread``), or while a :class:`RuntimeToken` exists (its holder may call in), the
hub waits for the bridge instead of declaring a deadlock.
"""

from __future__ import annotations

import _thread
import os
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._io import READ

if TYPE_CHECKING:
    from ._run import Runtime
    from ._task import Task


def _make_wakeup_fds() -> tuple[int, int]:
    """(read end, write end): one eventfd where the platform has it, else a pipe."""
    if hasattr(os, "eventfd"):
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return fd, fd
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    return r, w


class ThreadBridge:
    """The queue of callables other threads posted to one runtime, and its wake-up fd."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._posted: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        # Guards `closed` against the write that follows a post: once closed, the fds are
        # gone and their numbers may belong to another file.  Reentrant: a token's __del__
        # (a garbage collection) may run while this thread is inside post().
        self._lock = _thread.RLock()
        self.closed = False
        self._rfd, self._wfd = _make_wakeup_fds()
        self._armed = False
        self._fired = False
        # Why the hub should wait for other threads rather than report a deadlock: tasks
        # waiting for another thread's answer (to_thread jobs, replies; hub thread only) and
        # live tokens (any thread, under the lock).
        self.waits: set[ThreadWait] = set()
        self.live_tokens = 0
        _bridges.add(self)

    # -- any thread ------------------------------------------------------------------------------

    def post(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        """Have the runtime's hub call ``fn(*args)`` soon.  ``RuntimeError`` once it is over."""
        if not self.post_if_running(fn, args):
            raise RuntimeError("the runtime has finished: it runs nothing more")

    def post_if_running(self, fn: Callable[..., object], args: tuple[Any, ...]) -> bool:
        """:meth:`post`, or False (and nothing done) once the runtime is over."""
        with self._lock:
            if self.closed:
                return False
            self._posted.append((fn, args))
            self._kick()
            return True

    def _kick(self) -> None:
        try:
            os.write(self._wfd, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except BlockingIOError:
            pass  # the counter (or pipe) is full: the hub is due to wake anyway

    def token_born(self) -> None:
        with self._lock:
            self.live_tokens += 1

    def token_died(self) -> None:
        with self._lock:
            self.live_tokens -= 1
            if not self.closed:
                self._kick()  # the hub may have waited only for this token: let it re-check

    # -- the runtime's thread ------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Something was posted, or the wake-up fd fired: the hub should call run_posted()."""
        return self._fired or bool(self._posted)

    @property
    def expecting(self) -> bool:
        """Might another thread still post something the tasks wait for?"""
        return bool(self.waits) or self.live_tokens > 0 or bool(self._posted)

    @property
    def armed(self) -> bool:
        """Is the wake-up fd registered with the poller (so it counts in ``io.waiting``)?"""
        return self._armed

    def arm(self) -> None:
        """Register the wake-up fd with the poller, so a post wakes a blocked hub."""
        io = self._runtime.io
        while not self._armed:
            if io.add(self._rfd, READ, self._on_readable, "readable", True):
                self._armed = True
            else:
                self._drain()  # an edge nobody waited for: consume it and register again

    def _on_readable(self) -> None:
        # Called by the poller mid-iteration: only note it.
        self._armed = False
        self._fired = True

    def _drain(self) -> None:
        try:
            while os.read(self._rfd, 4096):
                if self._rfd == self._wfd:
                    break  # an eventfd reads its whole counter at once
        except BlockingIOError:
            pass

    def run_posted(self) -> None:
        """Run everything posted so far (the hub, between batches).  An exception a callable
        raises ends the run, like a timer callback's; the rest still runs."""
        self._fired = False
        if not self._runtime.closed:
            self.arm()  # first: a post from now on wakes the next poll
        self._drain()
        posted = self._posted
        on_error = self._runtime._on_interrupt
        while posted:
            fn, args = posted.popleft()
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001  (handed to the run, not lost)
                on_error(exc)

    def close(self) -> None:
        """The run is over (``runtime.closed`` is set): run what was posted before this point
        (a reply another thread waits for fails or completes; an exception a callable raises
        is the run's, as always), then refuse posts and release the fds."""
        while True:
            with self._lock:
                if not self._posted:
                    self.closed = True
                    break
            self.run_posted()
        if self._armed:
            self._runtime.io.forget(self._rfd)
            self._armed = False
        self._close_fds()


    # -- fork ------------------------------------------------------------------------------------

    def after_fork_in_child(self) -> None:
        """The runtime goes on in a forked child: a wake-up fd of its own (the inherited one
        is shared with the parent), and every task waiting on another thread -- which did not
        survive the fork -- gets an error rather than waiting forever."""
        self._lock = _thread.RLock()  # another thread may have held it at the fork
        if self.closed:
            return
        io = self._runtime.io
        io.forget(self._rfd)
        self._close_fds()
        self._rfd, self._wfd = _make_wakeup_fds()
        self._armed = False
        self.arm()
        for wait in list(self.waits):
            wait.lost_in_fork()

    def orphan(self) -> None:
        """In a forked child, for a runtime whose thread did not survive: refuse posts."""
        self._lock = _thread.RLock()
        if not self.closed:
            self.closed = True
            self._close_fds()  # the child's copies: the parent's runtime keeps its own

    def _close_fds(self) -> None:
        os.close(self._rfd)
        if self._wfd != self._rfd:
            os.close(self._wfd)


_bridges: weakref.WeakSet[ThreadBridge] = weakref.WeakSet()

LOST_IN_FORK = ("the thread that was to answer did not survive fork() (in the child only the "
                "forking thread lives on)")


def orphan_bridges(keep: object) -> None:
    """After fork, in the child: every bridge but that of ``keep`` (the forking thread's
    runtime) belongs to a runtime that will never run again."""
    for bridge in list(_bridges):
        if bridge._runtime is not keep:
            bridge.orphan()


class ThreadWait:
    """A task waiting for another thread's answer (a to_thread job, a reply)."""

    __slots__ = ()

    def lost_in_fork(self) -> None:
        raise NotImplementedError


class RuntimeToken:
    """A handle other OS threads use to reach a running runtime.

    Get one in a task with :func:`stackful.lowlevel.current_token`, hand it to another thread;
    every method is safe to call from any thread.  While a token exists the runtime does not
    report a deadlock when all its tasks are blocked: the token's holder may still wake them.
    Drop the token when it is no longer needed.

    ``call_soon(fn, *args)`` runs a plain callable on the runtime's thread (in the hub, not in a
    task: it must not block; an exception it raises ends the run, like a timer callback's).
    ``run_sync`` does the same and waits for the result; ``run`` runs ``fn`` as a new task
    (so it may block: put into a full ``Queue``...) and waits for its result.  Waiting blocks
    the calling thread -- or, when the caller is itself a task of another runtime, parks that
    task.  Calling them from the runtime's own thread would wait forever: ``RuntimeError``.
    Every method raises ``RuntimeError`` once the runtime has finished.
    """

    __slots__ = ("__weakref__", "_bridge", "_runtime")

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._bridge = runtime.thread_bridge()
        self._bridge.token_born()

    def __del__(self) -> None:
        bridge = getattr(self, "_bridge", None)
        if bridge is not None:
            bridge.token_died()

    def __repr__(self) -> str:
        state = "finished" if self._bridge.closed else "running"
        return f"<RuntimeToken of a {state} runtime>"

    def call_soon(self, fn: Callable[..., object], /, *args: Any) -> None:
        """Run ``fn(*args)`` soon on the runtime's thread; do not wait for it."""
        if not callable(fn):
            raise TypeError(f"call_soon() needs a callable, got {type(fn).__name__}")
        self._bridge.post(fn, args)

    def run_sync(self, fn: Callable[..., Any], /, *args: Any) -> Any:
        """Run ``fn(*args)`` on the runtime's thread (not in a task) and return its result
        (or raise its exception) in the calling thread."""
        if not callable(fn):
            raise TypeError(f"run_sync() needs a callable, got {type(fn).__name__}")
        self._check_other_thread("run_sync()")
        reply = Reply("RuntimeToken.run_sync")

        runtime = self._runtime

        def call() -> None:
            if runtime.closed:
                reply.fail(RuntimeError("the runtime finished before the call could run"))
                return
            try:
                value = fn(*args)
            except BaseException as exc:  # noqa: BLE001  (carried to the caller)
                reply.fail(exc)
            else:
                reply.succeed(value)

        self._bridge.post(call, ())
        return reply.wait()

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` as a new task of the runtime; return its result (or
        raise its exception) in the calling thread."""
        if not callable(fn):
            raise TypeError(f"run() needs a callable, got {type(fn).__name__}")
        self._check_other_thread("run()")
        reply = Reply("RuntimeToken.run")
        runtime = self._runtime

        def body() -> None:
            try:
                value = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001  (carried to the caller)
                reply.fail(exc)
                if not isinstance(exc, Exception):
                    raise  # Cancelled, KeyboardInterrupt...: they end this task too
            else:
                reply.succeed(value)

        def start() -> None:
            try:
                runtime.spawn(body, (), {}, name=f"from-thread:{getattr(fn, '__name__', '?')}")
            except BaseException as exc:  # noqa: BLE001  (carried to the caller)
                reply.fail(exc)

        self._bridge.post(start, ())
        return reply.wait()

    def cancel(self, task: Task) -> None:
        """Cancel ``task`` (a task of this runtime) as ``task.cancel()`` would."""
        if task._runtime is not self._runtime:
            raise RuntimeError(f"task {task.name!r} belongs to another runtime")
        self._bridge.post(_cancel_quietly, (self._runtime, task))

    def wake(self, task: Task, value: Any = None) -> None:
        """:func:`stackful.lowlevel.wake` from another thread: for primitives built on
        ``park``, with the same contract (the task is parked, and its waker's registration
        says it is this wake's to deliver); done on the runtime's thread, soon."""
        if task._runtime is not self._runtime:
            raise RuntimeError(f"task {task.name!r} belongs to another runtime")
        self._bridge.post(self._runtime.wake, (task, value))

    def stop(self) -> None:
        """End the run: cancel its main task (``run()`` then raises ``Cancelled`` unless main
        handles it); every task is wound down as when main finishes."""
        self._bridge.post(_stop_run, (self._runtime,))

    def _check_other_thread(self, what: str) -> None:
        if _thread.get_ident() == self._runtime._thread_id and not self._bridge.closed:
            raise RuntimeError(
                f"RuntimeToken.{what} called on the runtime's own thread: it would wait for "
                "itself forever (call the function directly, or spawn a task)")

def _cancel_quietly(runtime: Runtime, task: Task) -> None:
    if runtime.closed:
        return
    runtime.cancel(task)


def _stop_run(runtime: Runtime) -> None:
    main = runtime._main
    if main is not None and not runtime.closed:
        runtime.cancel(main)


class Reply(ThreadWait):
    """A one-shot result handed from one thread to another: the waiter blocks its thread, or
    parks if it is a task (its own runtime's bridge then delivers the wake)."""

    __slots__ = ("_done", "_error", "_lock", "_task", "_value", "_what")

    def __init__(self, what: str) -> None:
        from ._run import current_runtime_or_none

        self._what = what
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._task: Task | None = None
        self._lock: Any = None
        runtime = current_runtime_or_none()
        if runtime is not None and runtime.current is not None:
            self._task = runtime.current
            runtime.thread_bridge()  # now: _finish, on another thread, posts the wake to it
        else:
            self._lock = _thread.allocate_lock()
            self._lock.acquire()

    def succeed(self, value: Any) -> None:
        self._value = value
        self._finish()

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        task = self._task
        if task is None:
            self._lock.release()
            return
        bridge = task._runtime._bridge  # made by __init__
        if bridge is not None:
            bridge.post_if_running(_wake_reply_waiter, (task, self))

    def wait(self) -> Any:
        task = self._task
        if task is None:
            self._lock.acquire()
        else:
            runtime = task._runtime
            bridge = runtime.thread_bridge()
            bridge.waits.add(self)
            try:
                while not self._done:
                    runtime.park(self._what, None)
            finally:
                bridge.waits.discard(self)
                self._task = None  # a late _finish (after a cancel) then wakes nobody
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._value


    def lost_in_fork(self) -> None:
        self.fail(RuntimeError(f"{self._what}: {LOST_IN_FORK}"))


def _wake_reply_waiter(task: Task, reply: Reply) -> None:
    from ._task import BLOCKED

    if reply._task is task and task.state is BLOCKED:
        task._runtime.wake(task)
