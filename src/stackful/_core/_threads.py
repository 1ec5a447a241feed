"""Blocking calls on worker threads: ``to_thread`` and the bounded pool it uses.

One pool per process, shared by every runtime: at most ``max_workers`` threads, started on
demand and ended after ``_IDLE_EXIT`` seconds without work.  A job is queued when all of them
are busy.  The pool is built on ``_thread`` and ``_queue`` directly, so ``patch_all()`` (which
makes ``threading`` and ``queue`` cooperative inside tasks) cannot turn its own workers into
something that parks.

A task calling ``to_thread`` parks until the job's outcome comes back through its runtime's
thread bridge.  Cancelling the task (or a timeout) stops the wait at once; the job cannot be
interrupted -- a thread runs until its function returns -- so it finishes on its own, and its
outcome is dropped.
"""

from __future__ import annotations

import _queue
import _thread
import contextvars
import os
from collections.abc import Callable
from typing import Any

from ._bridge import LOST_IN_FORK, ThreadWait
from ._run import get_task
from ._task import BLOCKED

# A worker with nothing to do for this long ends.
_IDLE_EXIT = 10.0

_DEFAULT_MAX_WORKERS = 40


class _Job(ThreadWait):
    __slots__ = ("abandoned", "abort", "args", "context", "fn", "kwargs", "task")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 task: Any) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.task = task
        self.abandoned = False
        # The task's park for this job has this abort: a task blocked in any other wait (one
        # begun before this job's park) is not this job's to wake.
        self.abort = self._abandon
        # Like asyncio.to_thread: the function sees the task's context variables.
        self.context = contextvars.copy_context()

    def _abandon(self) -> None:
        self.abandoned = True

    def run(self) -> None:
        """In a worker: call the function, post the outcome to the task's runtime."""
        try:
            value = self.context.run(self.fn, *self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001  (carried to the task)
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, value)
        task = self.task
        self.fn = self.args = self.kwargs = self.context = None  # type: ignore[assignment]
        bridge = task._runtime._bridge
        # False when the run has ended: the task is gone, and so is the outcome.
        bridge.post_if_running(_deliver, (self, outcome))


    def parked(self, task: Any) -> bool:
        """Is ``task`` parked in this job's wait (and still waiting for it)?"""
        return (not self.abandoned and task is not None and task.state is BLOCKED
                and task._abort is self.abort)

    def lost_in_fork(self) -> None:
        """In a forked child: the worker running this job is gone, the task must not wait."""
        task = self.task
        if not self.parked(task):
            return
        self.abandoned = True
        task._runtime.wake_with_exception(task, RuntimeError(f"to_thread(): {LOST_IN_FORK}"))


def _deliver(job: _Job, outcome: tuple[bool, Any]) -> None:
    """On the runtime's thread: hand the outcome to the task, unless it stopped waiting."""
    task = job.task
    job.task = None
    if not job.parked(task):
        return
    runtime = task._runtime
    ok, value = outcome
    if ok:
        runtime.wake(task, value)
    else:
        runtime.wake_with_exception(task, value)


class WorkerPool:
    """A bounded pool of daemon threads running queued jobs."""

    def __init__(self, max_workers: int = _DEFAULT_MAX_WORKERS) -> None:
        self.max_workers = max_workers
        self._jobs: Any = _queue.SimpleQueue()
        self._lock = _thread.allocate_lock()
        # Under the lock: workers alive, workers waiting for a job, and jobs queued that no
        # worker has taken yet.  A new worker starts when the backlog outgrows the waiters.
        self._threads = 0
        self._idle = 0
        self._backlog = 0

    @property
    def threads(self) -> int:
        """How many worker threads exist now."""
        return self._threads

    def submit(self, job: _Job) -> None:
        with self._lock:
            self._backlog += 1
            start = self._backlog > self._idle and self._threads < self.max_workers
            if start:
                self._threads += 1
        self._jobs.put(job)
        if not start:
            return  # a waiting worker takes it, or the next busy one to finish
        try:
            # Not threading.Thread: under patch_all() its start() waits on a hybrid Event,
            # which parks the task -- and a job that finished meanwhile (another worker's)
            # would wake it there, out of the wrong wait.
            _thread.start_new_thread(self._work, ())
        except BaseException:
            with self._lock:
                self._threads -= 1
            raise

    def _work(self) -> None:
        jobs = self._jobs
        lock = self._lock
        while True:
            with lock:
                self._idle += 1
            try:
                job = jobs.get(timeout=_IDLE_EXIT)
            except _queue.Empty:
                with lock:
                    self._idle -= 1
                    if self._backlog <= self._idle:
                        self._threads -= 1
                        return
                continue  # a job came in as the wait ended: take it
            with lock:
                self._idle -= 1
                self._backlog -= 1
            job.run()
            del job

    def _after_fork(self) -> None:
        # The child has none of the parent's threads; queued jobs belong to the parent.
        self._jobs = _queue.SimpleQueue()
        self._lock = _thread.allocate_lock()
        self._threads = 0
        self._idle = 0
        self._backlog = 0


pool = WorkerPool()
os.register_at_fork(after_in_child=pool._after_fork)


def set_thread_pool_size(n: int) -> None:
    """How many worker threads ``to_thread`` may use at once (default 40); more jobs queue."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"max workers must be a positive int, got {n!r}")
    pool.max_workers = n


def to_thread(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` on a worker thread and return its result (or raise its
    exception); the calling task parks meanwhile, and the other tasks run.

    For blocking calls that cannot be made cooperative: a C library's, ``os`` file calls, DNS.
    The pool is shared by every runtime of the process and bounded (:func:`set_thread_pool_size`);
    a job waits in line when every worker is busy.  ``fn`` runs in a copy of the task's
    ``contextvars`` context.  If the task is cancelled (or a timeout expires) while it waits,
    it stops waiting at once and the job's result or exception is dropped; the job itself runs
    to the end on its thread, since a thread cannot be interrupted.
    """
    if not callable(fn):
        raise TypeError(f"to_thread() needs a callable, got {type(fn).__name__}")
    task = get_task("to_thread()")
    runtime = task._runtime
    bridge = runtime.thread_bridge()
    job = _Job(fn, args, kwargs, task)
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    pool.submit(job)
    bridge.waits.add(job)
    try:
        return runtime.park(f"to_thread({name})", job.abort)
    finally:
        bridge.waits.discard(job)
