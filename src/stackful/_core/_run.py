"""The runtime: ready queue, timers, I/O poller and the switches between task fibers.

Principles (the seeds' ``Runtime`` grown up):

* One runtime per OS thread, found through a thread-local; ``run`` owns it for its duration.
* Every task is a :class:`Fiber` whose parent is the *hub*: the fiber that called ``run``.
  The hub only runs when no task is ready (to block on timers / I/O), when the main task
  finishes, and on shutdown.
* A task that yields, blocks or finishes hands over *directly* to the next ready task: one
  fiber switch, never a bounce through the hub.  A finishing task does it by re-parenting its
  dying fiber onto the next task's fiber, so the core's "return to parent" is that switch.
* Every suspension goes through :meth:`Runtime.park` or :meth:`Runtime.yield_now`; those are
  the only places where a task gives up control, and the only places where a pending
  cancellation, timeout or deferred Ctrl-C is raised.  Which of two interruptions wins when
  both land before the task runs is one rule, written down once: in :class:`Runtime`'s docstring.
* Nothing here imports the user primitives; they sit on ``stackful.lowlevel``.
"""

from __future__ import annotations

import _thread
import contextvars
import os
import signal
import threading
import weakref
from collections.abc import Callable, Iterable
from time import perf_counter as _perf_counter
from types import FrameType
from typing import TYPE_CHECKING, Any

from .._native import (
    Fiber,
    SchedulerCore,
    current,
    get_thread_scheduler,
    set_thread_scheduler,
)
from .._native import _holding_shield as holding_shield
from .._native import _wake_sleeper as wake_sleeper
from ._bridge import ThreadBridge, orphan_bridges
from ._clock import Clock, SystemClock
from ._exceptions import Cancelled, ClosedResourceError, DeadlockError, TooManyTasksError
from ._io import READ, WRITE, HasFileno, IOPoller, fileno_of
from ._task import (
    BLOCKED,
    FINISHED,
    READY,
    RUNNING,
    Task,
    TaskExceptHookArgs,
    default_excepthook,
)
from ._timers import NEVER, Timer, TimerHeap, deadline_after, deadline_at
from ._tree import tree_lines
from ._watchdog import BlockingReport, Watchdog, check_watchdog

if TYPE_CHECKING:
    from ._group import TaskGroup

# How many times shutdown re-delivers Cancelled to a task that keeps blocking after it, before
# giving up on it (killing its fiber).  Two covers the usual "blocking call in a finally".
_SHUTDOWN_ROUNDS = 3

# Seconds a handled signal's exception waits for the running task's next blocking point before
# it is raised wherever the task runs (see Runtime._on_signal).
_SIGNAL_ESCALATE_AFTER = 0.05

# Seconds the runtime must have been idle before the stacks of tasks parked in I/O waits are
# trimmed (the pages below where each rests given back; see loop.c).
_TRIM_AFTER = 0.5

# The fewest switches between two checks of timers and I/O (see Runtime._batch_size).
_MIN_BATCH = 64


def get_runtime(what: str) -> Runtime:
    """Return this thread's running runtime, or raise a clear error naming ``what``."""
    rt = get_thread_scheduler()
    if rt is None:
        raise RuntimeError(f"{what} must be called inside stackful.run() (no runtime is running)")
    return rt  # type: ignore[no-any-return]


def get_task(what: str) -> Task:
    """Return the running task, or raise a clear error naming ``what``."""
    rt = get_thread_scheduler()
    if rt is None:
        raise RuntimeError(f"{what} must be called inside stackful.run() (no runtime is running)")
    task: Task | None = rt.current
    if task is None:
        raise RuntimeError(f"{what} must be called from a task, not from the scheduler")
    return task


def current_runtime_or_none() -> Runtime | None:
    """This thread's running runtime, or None."""
    return get_thread_scheduler()  # type: ignore[no-any-return]


class Runtime(SchedulerCore):
    """A scheduler for fibers on one OS thread.

    ``Runtime(clock=VirtualClock())`` makes timers virtual; ``max_tasks`` caps live tasks like
    the seeds' ``MAX_THREADS``; ``excepthook`` receives the exceptions of tasks nobody joined.
    A runtime runs once: ``Runtime(...).run(main, *args, **kwargs)``.

    ``handle_signals`` (main thread only; default SIGINT) are the signals that end the run
    gracefully: SIGINT raises ``KeyboardInterrupt``, any other ``SystemExit(128 + signum)``
    (so ``handle_signals=(SIGINT, SIGTERM)`` makes ``kill`` stop a server like Ctrl-C).  The
    exception lands in the running task at its next blocking point -- or where it runs, if
    it reaches none within 50 ms (a loop that never blocks) or the signal comes again, and
    if the task finishes first, the run ends with it all the same; every task is then
    cancelled, its ``finally`` blocks run, and :meth:`run` raises it.  A signal
    whose handler is not Python's default when the run starts is left to that handler.

    ``structured=True`` runs main as the body of a root :class:`TaskGroup` (trio's rule for a
    whole program): ``stackful.spawn`` puts its task into that group while it is open, so
    :meth:`run` returns only once every such task has finished, the first to fail cancels
    main and the others, and :meth:`run` raises the failures as one ``ExceptionGroup``
    (main's own failure among them).  The default (False) keeps asyncio's and gevent's
    rule: loose tasks still alive when main ends are cancelled, their failures go to the
    excepthook, and main's exception is raised as it is.

    ``watchdog`` (seconds, default None: off) starts a monitor thread for the run that
    reports each task holding the thread that long without yielding -- a blocking call
    that should have been cooperative -- once per stall, with the task's Python stack:
    ``watchdog_hook(report)`` receives a :class:`BlockingReport` (on the monitor thread;
    the default prints it on stderr).  See ``stackful/_core/_watchdog.py``.

    A task gives up control only in :meth:`park` (and :meth:`yield_now`, a park of one
    round), which blocks it until :meth:`wake` or :meth:`wake_with_exception`; the caller
    has registered the task wherever its waker will find it, and ``abort`` undoes that
    registration when the wait is interrupted (cancel, timeout); ``reason`` names the wait
    for ``tasks()`` and deadlock reports.  ``park``, ``wake`` and ``wake_with_exception`` are
    the C core's (loop.c).

    **Interruptions, and which one wins.**  An interruption -- ``KeyboardInterrupt`` or
    ``SystemExit`` (the run is ending), :class:`Cancelled` (``Task.cancel``, shutdown), the
    ``TimeoutError`` of a timeout scope -- is raised in a task only by ``park`` (and by
    ``yield_now``, a park of one round): by the park the task is blocked in, which
    aborts its wait; or, if it arrives while the task is not blocked, by the next
    park the task enters.  Until the task has resumed and seen it, the interruption is
    *undelivered*, and a task has at most one undelivered interruption.  When a second one
    arrives first, the stronger is kept and the other dropped::

        KeyboardInterrupt/SystemExit > Task.cancel() > outer scope's > inner scope's

    (a scope's interruption is its ``Cancelled`` or, for a timeout, its ``TimeoutError``).

    Why the stronger, and why drop the other: the stronger one unwinds everything the
    weaker would have (the run ends; the task ends; an outer scope's body contains the
    inner scope), so nothing is lost by not raising the weaker.  Raising the weaker first
    would let the task catch it and carry on -- ``lock.acquire(timeout=1)`` returns False
    -- and the stronger would be lost, or withdrawn when its scope exits "in time".

    Same-tick cases follow from that.  A task woken by an interruption has not seen it
    until it resumes, so a stronger one landing before then replaces it.  A task woken by
    :meth:`wake` or :meth:`wake_with_exception` has *completed* its wait (it has the lock,
    the item, the join result): that stands, and an interruption landing before it resumes
    is undelivered, for its next park.  Under a shield (:meth:`call_shielded`, which
    ``Condition.wait`` uses to re-take its lock) park is not interrupted at all: the
    interruption waits, by the same rule, for the shield's end.  A shielded cancel scope
    (``_cancel.py``) holds back only what comes from outside it, and not KeyboardInterrupt.
    """

    current: Task | None  # a SchedulerCore field, typed for this runtime
    # What a task runs on (a runtime hosted on asyncio uses a subclass).
    _fiber_type: type[Fiber] = Fiber

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        max_tasks: int | None = None,
        excepthook: Callable[[TaskExceptHookArgs], object] | None = None,
        handle_signals: Iterable[int] = (signal.SIGINT,),
        watchdog: float | None = None,
        watchdog_hook: Callable[[BlockingReport], object] | None = None,
        structured: bool = False,
    ) -> None:
        self._handled_signals = _check_signals(handle_signals)
        if not isinstance(structured, bool):
            raise TypeError(f"structured must be True or False, got {structured!r}")
        self.structured = structured
        # With structured=True, the group main's body runs in (see _run_in_root_group).
        self._root_group: TaskGroup | None = None
        threshold = check_watchdog(watchdog, watchdog_hook)
        self._watchdog = None if threshold is None else Watchdog(threshold, watchdog_hook)
        if max_tasks is not None and (not isinstance(max_tasks, int) or max_tasks < 1):
            raise ValueError(f"max_tasks must be a positive int or None, got {max_tasks!r}")
        self.clock: Clock = clock if clock is not None else SystemClock()
        # spawn()'s common case runs in C (_spawn_fast, spawn.c) while this holds: tasks on
        # plain fibers, no cap on live tasks, the run neither winding down nor over.
        self._fast_spawn = self._fiber_type is Fiber and max_tasks is None
        self._task_type = Task
        self._real_clock = type(self.clock) is SystemClock
        self.max_tasks = max_tasks
        self.excepthook: Callable[[TaskExceptHookArgs], object] = (
            excepthook if excepthook is not None else default_excepthook
        )
        # SchedulerCore (C) holds the fields the yield hot path touches:
        # Invariant: ready holds each READY task exactly once, in FIFO order.
        # Invariant: current is the RUNNING task, or None while the hub runs.
        self.current = None
        self.timers = TimerHeap()
        self.io = IOPoller()
        # Live (not finished) tasks, in spawn order: an insertion-ordered set.
        self._live: dict[Task, None] = {}
        self._next_id = 1  # a SchedulerCore field (the watchdog reads it)
        self._hub: Fiber | None = None
        self._main: Task | None = None
        self._thread_id = 0
        self._started = False
        self.closed = False
        # Timers and I/O are checked once per "batch" of ready tasks (see _tick), so a busy
        # yield loop cannot starve them, without paying for a check on every switch.
        self._countdown = 0  # a SchedulerCore field
        self._shutting_down = False
        self._shutdown_rounds = 0
        # The exception that ends the run early, once one happened: KeyboardInterrupt or
        # SystemExit (in a task or the hub), or whatever a timer callback raised.
        self._interrupt: BaseException | None = None
        # A handled signal (Ctrl-C...) that arrived while the hub was busy: its exception,
        # handled at the hub's next loop.
        self._hub_interrupt_pending: BaseException | None = None
        # A handled signal's exception waiting for its task's next blocking point, and
        # whether the signal handler now runs again to raise it where the task is.
        self._deferred_signal: tuple[Task, BaseException] | None = None
        self._escalating = False
        # The wake-up pipe a handled signal writes to (read end, write end): see
        # _watch_signal_wakeup.
        self._signal_wakeup: tuple[int, int] | None = None
        # The hub waits for timers and I/O (a SchedulerCore field, as the next: the watchdog
        # reads them).
        self._idle = False
        # How often a task handed control back to the hub (tests check yields bypass it).
        self.hub_resumptions = 0
        # For stats(): when run() started (perf_counter), and the hub's time blocked in the
        # poller waiting for timers and I/O.
        self._started_at = 0.0
        self._idle_seconds = 0.0
        self._deadlock: DeadlockError | None = None
        # Failed tasks whose exception nobody retrieved yet, by id (weak: see Task.__del__).
        self._failed: weakref.WeakValueDictionary[int, Task] = weakref.WeakValueDictionary()
        self._reported: set[int] = set()
        # The target of every task fiber, bound once: runs the task's function, records the
        # outcome and hands over to the next task, in C (spawn.c); the unusual ends of a
        # task (a failure, main's, the run ending) come back to _task_done.
        self._entry = self._task_entry
        # How other threads post to this runtime: made on first use (to_thread, a token).
        self._bridge: ThreadBridge | None = None

    # -- entry point ---------------------------------------------------------------------------

    def run(self, main: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``main(*args, **kwargs)`` as the main task until it returns; return its result.

        When main finishes, the tasks still alive are cancelled and their ``finally`` blocks
        run before ``run`` returns (or raises main's exception).
        """
        if get_thread_scheduler() is not None:
            raise RuntimeError("stackful.run() is already running on this thread")
        if self._started:
            raise RuntimeError("this Runtime has already run; create a new one")
        self._started = True
        self._started_at = _perf_counter()
        self._thread_id = threading.get_ident()
        self._hub = current()
        set_thread_scheduler(self)  # the core's per-thread slot: yield_now() finds us there
        old_handlers = self._install_signal_handlers()
        try:
            if self._watchdog is not None:
                self._watchdog.start(self)
            if self.structured and callable(main):  # (spawn refuses anything else)
                args, kwargs = (main, args, kwargs), {}
                main = self._run_in_root_group
            self._main = main_task = self.spawn(main, args, kwargs, name="main")
            self._loop()
        finally:
            self._deferred_signal = None
            self._restore_signal_handlers(old_handlers)
            self.closed = True
            self._fast_spawn = False
            if self._bridge is not None:
                self._bridge.close()
            set_thread_scheduler(None)
            self.timers.clear()
            self.io.close()
            if self._watchdog is not None:
                self._watchdog.stop()
        self._flush_unretrieved()
        if self._interrupt is not None:
            raise self._interrupt
        if self._deadlock is not None:
            raise self._deadlock
        main_task._exc_retrieved = True
        return main_task.result()

    def _run_in_root_group(self, main: Callable[..., Any], args: tuple[Any, ...],
                           kwargs: dict[str, Any]) -> Any:
        """structured=True: main's body inside the root group (see the class docstring)."""
        from ._group import TaskGroup  # (the group module builds on this one)

        with TaskGroup("root") as root:
            self._root_group = root
            return main(*args, **kwargs)

    # -- the hub -------------------------------------------------------------------------------

    def _loop(self) -> None:
        """The hub: run tasks until main is done and every other task has been wound down."""
        assert self._main is not None
        while True:
            if not self._shutting_down and (
                self._main.state is FINISHED
                or self._interrupt is not None
                or self._deadlock is not None
            ):
                self._start_shutdown()
            if self._hub_interrupt_pending is not None:
                self._on_interrupt(self._hub_interrupt_pending)
                self._hub_interrupt_pending = None
                continue
            nxt = self._pick_next()
            if nxt is not None:
                self.current = nxt
                nxt.state = RUNNING
                nxt._run_fiber.switch()
                # Back in the hub: a task blocked with nothing ready, or a task finished.
                self.current = None
                self.hub_resumptions += 1
                continue
            if not self._live:
                return
            bridge = self._bridge
            if bridge is None:
                if self.timers.active or self.io.waiting:
                    self._wait_for_events()
                    continue
            elif bridge.pending:
                bridge.run_posted()
                continue
            elif (self.timers.active or self.io.waiting > bridge.armed
                  or bridge.expecting):
                self._wait_for_events()
                continue
            # Nothing is ready and nothing can ever make a task ready.
            if self._shutting_down:
                self._shutdown_stuck_tasks()
            else:
                blocked = [(t.name, str(t._wait_reason)) for t in self._live]
                lines = "\n".join(tree_lines(self._live))
                self._deadlock = DeadlockError(
                    f"deadlock: all {len(blocked)} tasks are blocked and nothing can wake "
                    f"them (no ready task, no timer, no I/O wait):\n{lines}",
                    blocked,
                )

    def _wait_for_events(self) -> None:
        """Block (in the hub) until a timer is due or an awaited fd is ready."""
        deadline = self.timers.next_deadline()
        timeout = None if deadline is None else self.clock.idle_timeout(deadline)
        # Tasks parked in I/O waits get their stacks trimmed once the runtime has been idle
        # for _TRIM_AFTER seconds (real time: loop.c says why).
        trim = (len(self._parked_io) > 0 and self._real_clock
                and (timeout is None or timeout > _TRIM_AFTER))
        started = _perf_counter()
        try:
            # From here a handled signal's handler raises its exception (see _on_signal): it
            # must land inside this try, or it would leave the hub with no task wound down.
            self._idle = True
            if self._hub_interrupt_pending is not None:
                # A signal came in the hub after _loop looked: its run must not sleep on it.
                return
            woken = self._poll(_TRIM_AFTER if trim else timeout)  # wakes tasks whose fds are ready
        except (KeyboardInterrupt, SystemExit) as exc:
            # Raised by our signal handler while idle: the scheduler state is consistent here.
            self._idle = False
            self._on_interrupt(exc)
            return
        finally:
            self._idle = False
            self._idle_seconds += _perf_counter() - started  # stats(): the hub's time waiting
        if trim:
            if not woken:
                self._trim_parked()
            self._countdown = self._batch_size()
            return  # the loop comes back here for what is left of the timeout
        if not woken and deadline is not None:
            self.clock.idle_expired(deadline)
        self.timers.fire_due(self.clock.now(), self._on_interrupt)
        bridge = self._bridge
        if bridge is not None and bridge.pending:
            bridge.run_posted()
        self._countdown = self._batch_size()

    def _batch_size(self) -> int:
        # Every task that is ready now runs once before the next check, so no task starves
        # and timers are late by at most one round of the ready queue -- or by _MIN_BATCH
        # switches (microseconds) when few tasks are ready, so that two tasks yielding to
        # each other do not pay for a check every other switch.
        return max(len(self.ready) + 1, _MIN_BATCH)

    def _tick(self) -> None:
        """Fire due timers and collect ready fds without blocking; start a new batch.

        Called in the task whose switch ended a batch; timer callbacks and posted calls
        run as in the hub, with no current task (one that blocks gets the clear error
        instead of parking that task)."""
        task = self.current
        self.current = None
        try:
            if self.timers.active:
                self.timers.fire_due(self.clock.now(), self._on_interrupt)
            if self.io.waiting:
                self._poll(0)
            bridge = self._bridge
            if bridge is not None and bridge.pending:
                bridge.run_posted()
        finally:
            self.current = task
        self._countdown = self._batch_size()

    def _needs_hub(self) -> bool:
        """After a tick in a task: the hub must take over -- a timer callback ended the
        run (the hub winds it down), or a signal came while no task was current."""
        return (self.current is not None
                and (self._run_ending() or self._hub_interrupt_pending is not None))

    def _end_batch(self) -> bool:
        """The C park step's batch ran out: check timers and I/O.  True: go to the hub
        (see _needs_hub)."""
        self._tick()
        return self._needs_hub()

    def _pick_next(self) -> Task | None:
        """Pop the next ready task (FIFO), checking timers and I/O once per batch.

        Called from a task, None also when a timer callback just ended the run: the hub must
        wind it down (the task is queued or parked already).
        """
        self._countdown -= 1
        if self._countdown <= 0:
            self._tick()
            if self._needs_hub():
                return None
        if self.ready:
            task: Task = self.ready.popleft()
            return task
        return None

    # -- shutdown ------------------------------------------------------------------------------

    def _run_ending(self) -> bool:
        """True once something ended the run and the hub has not started winding down."""
        return self._interrupt is not None and not self._shutting_down

    def _start_shutdown(self) -> None:
        self._shutting_down = True
        self._fast_spawn = False
        for task in list(self._live):
            self.cancel(task)

    def _shutdown_stuck_tasks(self) -> None:
        """Shutdown found tasks blocked with nothing to wake them: cancel again, then give up."""
        self._shutdown_rounds += 1
        stuck = list(self._live)
        if self._shutdown_rounds < _SHUTDOWN_ROUNDS:
            for task in stuck:
                self.cancel(task)
            return
        # The tasks swallowed Cancelled and blocked again, repeatedly: kill their fibers so the
        # run can end (FiberExit unwinds them; their blocking calls in finally blocks raise).
        parked = {task for task in stuck if task.state is BLOCKED}
        for task in stuck:
            if task in parked and task.state is READY:
                # Woken by the unwinding of one killed before it (an event set in a
                # finally): it is queued, so it runs; the next round sees it again if stuck.
                continue
            fiber = task._fiber
            self._finish(task, None, Cancelled(f"task {task.name!r} ignored cancellation"))
            if fiber is not None and not fiber.dead:
                fiber.kill()

    def _on_interrupt(self, exc: BaseException) -> None:
        if self._interrupt is None:
            self._interrupt = exc

    # -- spawning and finishing ----------------------------------------------------------------

    def spawn(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        name: str | None = None,
        stack_size: int | None = None,
    ) -> Task:
        """Create a task running ``fn(*args, **kwargs)`` and put it at the back of the queue."""
        if stack_size is None and self._fast_spawn:
            task: Task = self._spawn_fast(fn, args, kwargs, name)
            return task
        if not callable(fn):
            raise TypeError(f"spawn() needs a callable, got {type(fn).__name__}")
        if self.closed:
            raise RuntimeError("cannot spawn: the runtime has finished")
        if self.max_tasks is not None and len(self._live) >= self.max_tasks:
            raise TooManyTasksError(
                f"cannot spawn task {name or getattr(fn, '__name__', '?')!r}: the runtime "
                f"already has {len(self._live)} live tasks (max_tasks={self.max_tasks})"
            )
        task_id = self._next_id
        self._next_id += 1
        task = Task(self, task_id, name if name is not None else f"task-{task_id}",
                    fn, args, kwargs)
        if stack_size is None:
            fiber = self._fiber_type(self._entry, name=task.name, parent=self._hub)
        else:
            fiber = self._fiber_type(self._entry, name=task.name, stack_size=stack_size,
                                     parent=self._hub)
        # Like asyncio, a task runs in a copy of its spawner's context (a copy of an empty
        # one is no different from the fresh context a fiber without one gets when needed).
        context = contextvars.copy_context()
        if len(context):
            fiber.context = context
        task._fiber = fiber
        self._live[task] = None
        self.ready.append(task)
        if self._shutting_down:
            # Born during the wind-down (say, in a finally block): wound down like the rest,
            # or run() would wait for it forever.
            self.cancel(task)
        return task

    def _task_done(self, task: Task | None, result: Any, error: BaseException | None) -> None:
        """A task's end, from its fiber's entry (``_task_entry``, in C, which does the common
        case itself: a task other than main returned while the run goes on)."""
        if task is None or task.state is FINISHED:
            # Shutdown gave up on this task and killed its fiber; an exception replaced the
            # FiberExit on the way out.  The hub (our parent) is waiting for us: just go.
            return
        self._finish(task, result, error)
        # Hand over directly: make the next ready task this fiber's parent, so the core's
        # switch-to-parent on return is the one switch to it.  Main's end and interrupts go
        # to the hub, which must act on them.
        fiber = current()
        if task is not self._main and self._interrupt is None:
            nxt = self._pick_next()
            if nxt is not None:
                assert nxt._fiber is not None  # set by spawn, cleared only once finished
                self.current = nxt
                nxt.state = RUNNING
                fiber.parent = nxt._run_fiber
                return
        self.current = None
        assert self._hub is not None
        fiber.parent = self._hub

    def _finish(self, task: Task, result: Any, error: BaseException | None) -> None:
        if task.state is FINISHED:
            return
        task.state = FINISHED
        task._result = result
        task._exception = error
        task._fiber = None
        task._abort = None
        unseen, task._pending_exc = task._pending_exc, None
        if isinstance(unseen, (KeyboardInterrupt, SystemExit)) and unseen is not error:
            # The task finished before the blocking point where this waited (a handled
            # signal's exception lands on whichever task runs): the run still ends with it.
            # (Its escalation, if pending, sees the task's _pending_exc gone and stays.)
            self._on_interrupt(unseen)
        self._live.pop(task, None)
        group = task._group
        if group is not None:
            group._child_finished(task)
        if error is not None:
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                task._exc_retrieved = True
                self._on_interrupt(error)
            elif isinstance(error, Cancelled) or task is self._main:
                task._exc_retrieved = True
            else:
                self._failed[task.id] = task
        joiners, task._joiners = task._joiners, None
        if joiners:
            for joiner in joiners:
                self.wake(joiner)

    # -- the unretrieved-exception hook -----------------------------------------------------------

    def report_unretrieved(self, task: Task) -> None:
        """Pass a failed task's exception to the hook once, if nobody retrieved it."""
        if task._exc_retrieved or task.id in self._reported or task._exception is None:
            return
        self._reported.add(task.id)
        exc = task._exception
        self.excepthook(TaskExceptHookArgs(type(exc), exc, exc.__traceback__, task))

    def _flush_unretrieved(self) -> None:
        for task_id in sorted(self._failed.keys()):
            task = self._failed.get(task_id)
            if task is not None:
                self.report_unretrieved(task)

    # -- the only places a task gives up control -----------------------------------------------

    def _switch_away(self, task: Task) -> None:
        """Suspend the running ``task`` (already queued or parked) and run the next one."""
        nxt = self._pick_next()
        if nxt is task:
            # It was the only ready task (a yield with nobody else to run).
            return
        if nxt is None:
            self.current = None
            assert self._hub is not None
            self._hub.switch()
        else:
            self.current = nxt
            nxt.state = RUNNING
            nxt._run_fiber.switch()
        # Resumed: whoever switched to us already set current = task and state = RUNNING.

    def yield_now(self) -> None:
        """Go to the back of the ready queue and let every other ready task run first."""
        # The hottest path of the runtime: _pick_next and _switch_away are inlined by hand.
        # The hottest path of the runtime: the round-robin step is SchedulerCore's, in C
        # (stackful.yield_now() goes there without even this frame).
        outcome = self._yield_fast()
        if outcome:
            self._yield_slow(outcome)

    def _yield_slow(self, outcome: int) -> None:
        """What the C yield step hands back: a batch to end, or a pending exception."""
        if outcome == 2:  # the batch is over: timers and I/O first
            self._tick()
            if self._needs_hub():
                # A timer callback raised, or a signal waits for the hub: go there.
                task = self.current
                assert task is not None and self._hub is not None
                task.state = READY
                self.ready.append(task)
                self.current = None
                self._hub.switch()
                outcome = 0 if task._pending_exc is None else 3
            else:
                outcome = self._switch_next()
        if outcome:  # a pending exception, before or after the switch
            task = self.current
            assert task is not None
            if task._shield:
                # Shielded: the interruption waits for the shield's end.  Before the switch
                # (outcome 1) the C step did nothing, so yield here.
                if outcome == 1:
                    task.state = READY
                    self.ready.append(task)
                    self._switch_away(task)
                return
            self._raise_pending(task, None)

    def _raise_pending(self, task: Task, abort: Callable[[], object] | None) -> None:
        exc = task._pending_exc
        task._pending_exc = None
        if abort is not None:
            abort()
        assert exc is not None
        raise exc

    def call_shielded(
        self, fn: Callable[[], Any], carry: BaseException | None = None
    ) -> Any:
        """Call ``fn()`` in the running task with interruptions held back, then deliver them.

        For a wait that must re-take something whatever happened (``Condition.wait``
        re-taking its lock): an interruption landing during ``fn()`` does not abort its wait
        (so it keeps its place in line); it stays undelivered, ranked by the rule in the class
        docstring against ``carry`` (an exception already on its way out: the wait's own
        interruption) and against any other.  When ``fn()`` returns, the winner is raised --
        ``carry`` itself if nothing stronger came -- else ``fn()``'s result is returned.
        """
        task = self.current
        if task is None:
            raise RuntimeError("call_shielded() must be called from a task")
        if carry is not None:
            self._hold(task, carry)
        task._shield += 1
        try:
            result = fn()
        finally:
            task._shield -= 1
        if not task._shield:
            exc = task._pending_exc
            if exc is not None:
                task._pending_exc = None
                raise exc
        return result

    def interrupt(self, task: Task, exc: BaseException) -> None:
        """Raise ``exc`` in ``task`` at its current wait, or at its next blocking point.

        Used for cancellation, timeouts and Ctrl-C; which interruption wins when two land
        before the task runs is the rule in the class docstring.  A parked task's ``abort``
        callback runs first, so the primitive it waited on forgets it.
        """
        state = task.state
        if state is FINISHED:
            return
        if task._scopes and _held_by_shield(task, exc):
            return
        if state is BLOCKED and not task._shield:
            abort = task._abort
            task._abort = None
            if abort is not None:
                abort()
            task._resume_exc = exc
            task.state = READY
            self.ready.append(task)
            return
        if state is READY:
            woken_by = task._resume_exc
            if woken_by is not None and _strength(task, woken_by) > _NOT_AN_INTERRUPTION:
                # Woken by an interruption it has not seen yet: the two compete at that park.
                if _strength(task, exc) > _strength(task, woken_by):
                    task._resume_exc = exc
                return
        self._hold(task, exc)

    def _hold(self, task: Task, exc: BaseException) -> None:
        """Keep ``exc`` undelivered for the task's next park, unless a stronger one waits."""
        old = task._pending_exc
        if old is None or _strength(task, exc) > _strength(task, old):
            task._pending_exc = exc

    def cancel(self, task: Task) -> bool:
        """Deliver :class:`Cancelled` to ``task`` (see :meth:`Task.cancel`)."""
        self.check_thread("Task.cancel()")
        if task.state is FINISHED:
            return False
        task._cancel_requested = True
        task._cancel_count += 1
        self.interrupt(task, Cancelled(f"task {task.name!r} was cancelled"))
        return True

    def join(self, task: Task, timeout: float | None) -> Any:
        """Block until ``task`` finishes (see :meth:`Task.join`)."""
        me = get_task("Task.join()")
        if task._runtime is not me._runtime:
            raise RuntimeError(f"cannot join task {task.name!r}: it belongs to another runtime")
        if task is me:
            raise RuntimeError(f"task {task.name!r} cannot join itself (it would wait forever)")
        deadline = NEVER if timeout is None else deadline_after(self.clock.now(), timeout)
        if task.state is not FINISHED:
            joiners = task._joiners
            if joiners is None:
                joiners = task._joiners = []
            joiners.append(me)

            def abort() -> None:
                joiners.remove(me)

            if deadline == NEVER:
                self.park(f"join({task.name!r})", abort)
            else:
                from ._timeout import TimeoutScope

                with TimeoutScope(deadline, f"join({task.name!r})"):
                    self.park(f"join({task.name!r})", abort)
        return task.result()

    def check_thread(self, what: str) -> None:
        """Raise unless called on this runtime's own thread, while it runs."""
        if get_thread_scheduler() is not self:
            if threading.get_ident() != self._thread_id:
                raise RuntimeError(f"{what}: the task belongs to a runtime on another thread")
            raise RuntimeError(f"{what}: the runtime of this task is not running")

    # -- timers, sleeping and I/O waits ------------------------------------------------------------

    def call_at(self, deadline: float, callback: Callable[[Any], object], arg: Any) -> Timer:
        """Schedule ``callback(arg)`` when the clock reaches ``deadline`` (+inf: never)."""
        timer: Timer = self.timers.schedule(deadline, callback, arg)
        return timer

    def sleep(self, seconds: float) -> None:
        """Block the running task for ``seconds`` (0: just yield; +inf: until cancelled).

        ``stackful.sleep`` is the fast path (all C on the real clock) and comes here for
        the rest: a virtual clock, zero, infinity, a bad argument."""
        if seconds == 0:
            self.yield_now()
            return
        self.sleep_until(deadline_after(self.clock.now(), seconds, "sleep length", none_ok=False))

    def sleep_until(self, deadline: float) -> None:
        """Block the running task until the clock reaches ``deadline`` (+inf: until cancelled)."""
        task = self.current
        if task is None:
            raise RuntimeError("sleep() must be called from a task")
        deadline = deadline_at(deadline)
        if deadline == NEVER:
            self.park("sleep", None)
            return
        timer = self.timers.schedule(deadline, wake_sleeper, task)
        self.park("sleep", timer.cancel)

    def wait_fd(self, obj: int | HasFileno, writable: bool, timeout: float | None) -> None:
        """Block the running task until ``obj`` is readable (or writable)."""
        what = "wait_writable()" if writable else "wait_readable()"
        task = get_task(what)
        deadline = NEVER if timeout is None else deadline_after(self.clock.now(), timeout)
        fd = fileno_of(obj)
        event = WRITE if writable else READ
        io = self.io
        io.add(fd, event, task, "writable" if writable else "readable")

        def abort() -> None:
            io.remove(fd, event, task)

        reason = f"{what[:-2]}(fd={fd})"
        if deadline == NEVER:
            self.park(reason, abort)
        else:
            from ._timeout import TimeoutScope

            with TimeoutScope(deadline, reason):
                self.park(reason, abort)

    def notify_closing(self, obj: int | HasFileno) -> None:
        """``obj``'s file descriptor is about to be closed: wake its waiters with an error.

        Each task waiting for it to become readable or writable gets
        :class:`ClosedResourceError`; the fd's registration is dropped, so a new file that
        gets the same number starts clean.  Call it before ``close()``.
        """
        fd = fileno_of(obj)
        for task, what in self.io.forget(fd):
            if task.state is not BLOCKED:
                # Woken already by another of the fds it waits on at once (a cooperative
                # select()): it drops this registration itself when it runs.
                continue
            self.wake_with_exception(
                task, ClosedResourceError(f"fd {fd} was closed while a task waited for it "
                                          f"to become {what}"))

    # -- other threads -------------------------------------------------------------------------

    def thread_bridge(self) -> ThreadBridge:
        """The queue through which other threads reach this runtime (made on first use, on the
        runtime's thread while it runs)."""
        bridge = self._bridge
        if bridge is None:
            self.check_thread("reaching the runtime from other threads")
            bridge = self._bridge = ThreadBridge(self)
            bridge.arm()
        return bridge

    def _after_fork_in_child(self) -> None:
        """This process is a child forked by one of this runtime's tasks, and the runtime
        goes on here: its poller and its bridge get descriptors of their own (shared ones
        would hand the parent's events to the child and the child's to the parent)."""
        for fd in self.io._after_fork():
            self.notify_closing(fd)  # closed in the child by an at-fork hook: wake its waiters
        if self._bridge is not None:
            self._bridge.after_fork_in_child()
        self._renew_signal_wakeup()

    # -- introspection ---------------------------------------------------------------------------

    def tasks(self) -> list[Task]:
        """Live tasks in spawn order."""
        return list(self._live)

    # -- Ctrl-C and other handled signals ------------------------------------------------------

    def _install_signal_handlers(self) -> list[tuple[int, Any]]:
        """Handle each of ``handle_signals`` that still has Python's default handler (one
        the user installed is left alone); returns what to restore."""
        if threading.current_thread() is not threading.main_thread():
            return []
        installed = []
        for signum in self._handled_signals:
            old = signal.getsignal(signum)
            default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            if old is default:
                signal.signal(signum, self._on_signal)
                installed.append((signum, old))
        if installed:
            self._watch_signal_wakeup()
        return installed

    def _restore_signal_handlers(self, installed: list[tuple[int, Any]]) -> None:
        self._close_signal_wakeup()
        for signum, old in installed:
            signal.signal(signum, old)

    def _watch_signal_wakeup(self) -> None:
        """Make a signal wake the hub from the poller, whichever thread the kernel hands it to.

        CPython runs a signal's Python handler in the main thread, but the kernel may deliver
        the signal to another thread (a to_thread worker): the hub, blocked in the poller,
        would see it only once something else woke it.  As asyncio does, the signal's C
        handler writes to a wake-up pipe (``signal.set_wakeup_fd``) that the poller watches;
        the hub then wakes and runs the handler.  One set by someone else is left alone."""
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        if previous != -1:
            signal.set_wakeup_fd(previous)
            os.close(r)
            os.close(w)
            return
        self._signal_wakeup = (r, w)
        # Watched, not waited on: a deadlock is still reported as one.  _on_signal drains it.
        self.io.watch(r)

    def _renew_signal_wakeup(self) -> None:
        """In a forked child: a signal wake-up pipe of its own.  The inherited one is the
        parent's too, so each process's signals would write into the other's pipe and wake
        the other's hub (bytes the parent, which drains only on its own signals, kept)."""
        if self._close_signal_wakeup():
            self._watch_signal_wakeup()

    def _close_signal_wakeup(self) -> bool:
        """Close the run's wake-up pipe, if it has one.  True if the wake-up fd was still
        ours, or cleared (asyncio, once imported, clears it in every forked child); False if
        someone replaced ours meanwhile, whose fd then stays set."""
        wakeup, self._signal_wakeup = self._signal_wakeup, None
        if wakeup is None:
            return False
        current = signal.set_wakeup_fd(-1)
        self.io.forget(wakeup[0])
        os.close(wakeup[0])
        os.close(wakeup[1])
        if current in (wakeup[1], -1):
            return True
        signal.set_wakeup_fd(current)
        return False

    def _drain_signal_wakeup(self) -> None:
        wakeup = self._signal_wakeup
        if wakeup is not None:
            try:
                while os.read(wakeup[0], 4096):
                    pass
            except OSError:  # empty (BlockingIOError), or closed
                pass

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # A signal's exception is raised where it cannot break the scheduler's bookkeeping:
        # at once while the hub idles in the poller (or outside any task), else at the next
        # blocking point of the running task -- never asynchronously in the middle of user
        # code at first, like asyncio's Ctrl-C, because CPython 3.13 and 3.14 can skip a
        # ``finally`` for an exception a signal handler raises at a loop's back edge
        # (python/cpython#130279): a handler's cleanup would be lost.  A task that does not
        # reach a blocking point within _SIGNAL_ESCALATE_AFTER (a loop that never blocks),
        # or a second signal, gets it raised where it runs.
        self._drain_signal_wakeup()
        escalation, self._escalating = self._escalating, False
        task = self.current
        deferred, self._deferred_signal = self._deferred_signal, None
        if deferred is not None and (deferred[0] is not task
                                     or task._pending_exc is not deferred[1]):
            deferred = None  # delivered at a blocking point meanwhile
        if escalation and deferred is None:
            return
        in_user_code = frame is not None and not _is_stackful_frame(frame)
        if deferred is not None:
            assert task is not None
            if in_user_code and not task._shield:
                task._pending_exc = None
                raise deferred[1]
            # In the scheduler's code on its way to a blocking point, or shielded: wait more.
            self._escalate_later(signum, deferred)
            return
        exc = signal_exception(signum)
        if self._idle or frame is None:
            raise exc
        if task is not None and task.state is FINISHED:
            # A finished task picking its successor: nothing of it is left to interrupt.
            if self._hub_interrupt_pending is None:
                self._hub_interrupt_pending = exc
            return
        if task is None:
            if in_user_code:
                raise exc  # the hub runs a callback: its caller reports what it raises
            if self._hub_interrupt_pending is None:
                self._hub_interrupt_pending = exc
            return
        self.interrupt(task, exc)
        if task._pending_exc is exc:
            self._escalate_later(signum, (task, exc))

    def _escalate_later(self, signum: int, deferred: tuple[Task, BaseException]) -> None:
        """Raise the deferred signal exception where its task runs, unless the task reaches
        a blocking point within _SIGNAL_ESCALATE_AFTER: a thread re-sends the signal."""
        self._deferred_signal = deferred
        task, exc = deferred

        def escalate() -> None:
            # A sleep that patch_all leaves alone: a held lock's second acquire times out.
            # (A fresh lock's first acquire returns at once: the signal was raised in user
            # code as soon as this thread got the GIL, not after the grace.)
            held = _thread.allocate_lock()
            held.acquire()
            held.acquire(True, _SIGNAL_ESCALATE_AFTER)
            if (not self.closed and self._deferred_signal is deferred
                    and task._pending_exc is exc):
                self._escalating = True
                _thread.interrupt_main(signal.Signals(signum))

        _thread.start_new_thread(escalate, ())


def _after_fork_in_child() -> None:
    # Only the forking thread lives on in the child: its runtime, if it has one, goes on;
    # runtimes of other threads never run again, and their bridges refuse every post.
    runtime = get_thread_scheduler()
    orphan_bridges(runtime)
    if isinstance(runtime, Runtime) and not runtime.closed:
        runtime._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def signal_exception(signum: int) -> BaseException:
    """What a signal the runtime handles raises: ``KeyboardInterrupt`` for SIGINT, else
    ``SystemExit(128 + signum)`` (the exit status of a process the signal killed)."""
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    return SystemExit(128 + signum)


def _check_signals(signals: Iterable[int]) -> tuple[int, ...]:
    valid = set(signal.valid_signals())
    out = []
    for signum in signals:
        if isinstance(signum, bool) or not isinstance(signum, int) or signum not in valid:
            raise ValueError(f"handle_signals: {signum!r} is not a signal number")
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(f"handle_signals: {signal.Signals(signum).name} cannot be caught")
        out.append(int(signum))
    return tuple(out)


_NOT_AN_INTERRUPTION = (0, 0)


def _strength(task: Task, exc: BaseException) -> tuple[int, int]:
    """Rank of an interruption by :meth:`Runtime.park`'s rule (higher wins)."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return (3, 0)
    scopes = task._scopes
    if scopes:  # a scope's (its Cancelled or its TimeoutError), ranked by nesting
        for depth, scope in enumerate(scopes):  # outermost first
            if scope.error is exc:
                return (1, -depth)
    if isinstance(exc, Cancelled):  # Task.cancel()
        return (2, 0)
    return _NOT_AN_INTERRUPTION  # e.g. an error a primitive woke the task with


def _held_by_shield(task: Task, exc: BaseException) -> bool:
    """True if a shielded cancel scope of ``task`` holds ``exc`` back (it keeps it)."""
    shield = holding_shield(task, exc)  # innermost first: the owner or a shield, whichever first
    if shield is None:
        return False
    shield.hold(exc)
    return True


def _is_stackful_frame(frame: FrameType) -> bool:
    name = frame.f_globals.get("__name__", "")
    return isinstance(name, str) and name.startswith("stackful.") and name != "stackful.__main__"
