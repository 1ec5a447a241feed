"""The watchdog: a thread that notices when a task holds the runtime's thread too long.

A task that calls something blocking -- ``time.sleep``, a plain socket, a C library --
without yielding stops every other task of its runtime until it returns.  The watchdog finds
those calls: ``Runtime(watchdog=0.1)`` starts a thread with the run which, four times per
threshold and without the GIL (``_native.Watcher``, watchdog.c), samples a progress counter
that the C scheduler bumps each time a task yields or parks, plus which task is current.  When
nothing has moved for the threshold while a task (or the hub, outside its wait for events) is
running, it takes that thread's Python stack (a fiber switch swaps the thread state's frames,
so it is the running task's stack) and hands a :class:`BlockingReport` to the hook -- once per
stall.  The hub waiting for timers and I/O is idle, not stalled.

Why a thread that samples, rather than a check in the scheduler: the scheduler does not run
while a task holds the thread, which is the whole problem; and a clock read on every switch
would cost the hot path more than the one increment the counter does.  Why the sampling is in
C: watchdog.c says.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from .._native import Watcher

if TYPE_CHECKING:
    from ._run import Runtime

# Samples per threshold: a stall is reported after between 1 and 1.25 thresholds.
_SAMPLES_PER_THRESHOLD = 4
# Bounds on the sampling period: no busy thread for a tiny threshold, no long lag for a big one.
_MIN_PERIOD = 0.001
_MAX_PERIOD = 1.0


@dataclass(frozen=True)
class BlockingReport:
    """What the watchdog saw: a task that has held its runtime's thread without yielding.

    ``task_name`` and ``task_id`` name the task (``"hub"`` and None when it is the runtime's
    own loop, e.g. running a ``call_later`` callback).  ``blocked_for`` is how long, in
    seconds of real time, it had not yielded when the report was made: at least that long,
    and the stall may go on.  ``stack`` is its Python stack when the report was made, most
    recent call last; ``thread_id`` the runtime's thread.  :meth:`format` makes the message
    the default hook prints.
    """

    task_name: str
    task_id: int | None
    blocked_for: float
    stack: traceback.StackSummary
    thread_id: int

    def format(self) -> str:
        """The report as text: one line naming the task, then its stack."""
        who = "the hub" if self.task_id is None else \
            f"task {self.task_name!r} (id {self.task_id})"
        head = (f"stackful watchdog: {who} has not yielded for {self.blocked_for:.3f} s, "
                "blocking every other task; its stack (most recent call last):\n")
        return head + "".join(self.stack.format())

    def __str__(self) -> str:
        return self.format()


def default_watchdog_hook(report: BlockingReport) -> None:
    """Print the report on stderr (the watchdog's default hook)."""
    if sys.stderr is not None:
        sys.stderr.write(report.format())
        sys.stderr.flush()


def check_watchdog(
    threshold: float | None, hook: Callable[[BlockingReport], object] | None
) -> float | None:
    """Validate ``Runtime``'s ``watchdog`` and ``watchdog_hook`` arguments."""
    if threshold is None:
        if hook is not None:
            raise ValueError("watchdog_hook needs watchdog (a threshold in seconds): "
                             "without one nothing would call it")
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"watchdog must be a number of seconds or None, got {threshold!r}")
    if not (threshold > 0 and math.isfinite(threshold)):
        raise ValueError(f"watchdog must be a positive, finite number of seconds, "
                         f"got {threshold!r}")
    if hook is not None and not callable(hook):
        raise TypeError(f"watchdog_hook must be callable, got {type(hook).__name__}")
    return float(threshold)


class Watchdog:
    """The monitor thread of one run: started by ``Runtime.run``, stopped at its end.

    The hook runs on the monitor thread, while the task it reports may still hold the
    runtime's thread: it must not touch the runtime, nor wait for it.  An exception it raises
    goes to ``threading.excepthook`` (which prints it, as for any thread), and watching goes
    on: the run is not affected.

    Fork: the thread is not copied into a child process, and nothing restarts it there; the
    child's run ends without touching it.
    """

    def __init__(
        self, threshold: float, hook: Callable[[BlockingReport], object] | None
    ) -> None:
        self.threshold = threshold
        self.hook: Callable[[BlockingReport], object] = (
            hook if hook is not None else default_watchdog_hook)
        self._period = min(max(threshold / _SAMPLES_PER_THRESHOLD, _MIN_PERIOD), _MAX_PERIOD)
        self._thread: threading.Thread | None = None
        self._watcher: Watcher | None = None
        self._pid = 0

    def start(self, runtime: Runtime) -> None:
        """Start watching ``runtime``, which runs on the calling thread."""
        watched = threading.get_ident()
        watcher = Watcher(runtime, watched, self.threshold, self._period)
        name = f"stackful-watchdog ({threading.current_thread().name})"
        thread = threading.Thread(target=self._watch, args=(watcher, watched),
                                  name=name, daemon=True)
        thread.start()
        self._pid = os.getpid()
        self._thread, self._watcher = thread, watcher

    def stop(self) -> None:
        """Stop the thread and wait for it (a report being made is finished first)."""
        thread, watcher = self._thread, self._watcher
        self._thread = self._watcher = None
        if thread is None or watcher is None or os.getpid() != self._pid:
            return  # never started, or a forked child, where the thread does not exist
        watcher.stop()  # if the join is interrupted, the thread still ends at once
        thread.join()

    # -- the monitor thread --------------------------------------------------------------------

    def _watch(self, watcher: Watcher, watched: int) -> None:
        while True:
            stall = watcher.wait()  # without the GIL until there is something to report
            if stall is None:
                return
            blocked_for, task_id, task_name, frame = stall
            del stall
            report = BlockingReport(
                task_name=task_name if task_name is not None else "hub",
                task_id=task_id,
                blocked_for=blocked_for,
                stack=_stack_of(frame),
                thread_id=watched,
            )
            del frame  # its thread's frames are not ours to keep
            self._call_hook(report)

    def _call_hook(self, report: BlockingReport) -> None:
        try:
            self.hook(report)
        except BaseException:
            # Reported like an exception ending a thread, but watching goes on.
            exc_type, exc, tb = sys.exc_info()
            try:
                threading.excepthook(threading.ExceptHookArgs(
                    [exc_type, exc, tb, threading.current_thread()]))
            except BaseException:
                sys.excepthook(*sys.exc_info())  # as threading does when its hook fails
            finally:
                del exc, tb


def _stack_of(frame: FrameType | None) -> traceback.StackSummary:
    """``frame``'s stack, most recent call last (a task's starts at its function: the
    runtime's task entry is C)."""
    if frame is None:
        return traceback.StackSummary()  # the thread has gone
    frames = list(traceback.walk_stack(frame))
    frames.reverse()
    return traceback.StackSummary.extract(iter(frames), lookup_lines=False)
