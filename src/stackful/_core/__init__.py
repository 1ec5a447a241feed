"""The scheduler core: runtime, tasks, ready queue, timers, I/O poller, clocks, park/wake.

Nothing here imports the user-facing primitives; they are built on ``stackful.lowlevel``,
which re-exports the small part of this package they need.
"""

from ._bridge import RuntimeToken
from ._cancel import CancelScope
from ._clock import Clock, SystemClock, VirtualClock
from ._exceptions import (
    BusyResourceError,
    Cancelled,
    ClosedResourceError,
    DeadlockError,
    TooManyTasksError,
)
from ._group import TaskGroup, TaskStatus
from ._io import HasFileno, fileno_of
from ._run import Runtime, current_runtime_or_none, get_runtime, get_task
from ._task import BLOCKED, FINISHED, READY, RUNNING, Task, TaskExceptHookArgs, default_excepthook
from ._threads import set_thread_pool_size, to_thread
from ._timeout import TimeoutScope
from ._timers import NEVER, Timer, check_timeout, deadline_after, deadline_at
from ._watchdog import BlockingReport

__all__ = [
    "BLOCKED", "FINISHED", "NEVER", "READY", "RUNNING", "BlockingReport", "BusyResourceError",
    "CancelScope", "Cancelled", "ClosedResourceError", "Clock", "DeadlockError", "HasFileno",
    "Runtime", "RuntimeToken", "SystemClock", "Task", "TaskExceptHookArgs", "TaskGroup",
    "TaskStatus", "TimeoutScope", "Timer", "TooManyTasksError", "VirtualClock", "check_timeout",
    "current_runtime_or_none", "deadline_after", "deadline_at", "default_excepthook", "fileno_of",
    "get_runtime", "get_task", "set_thread_pool_size", "to_thread",
]
