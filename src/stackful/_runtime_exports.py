"""Names the ``stackful`` package re-exports from the runtime layer."""

from .runtime_api import (
    BusyResourceError,
    Cancelled,
    ClosedResourceError,
    DeadlockError,
    Runtime,
    Task,
    TaskExceptHookArgs,
    TooManyTasksError,
    VirtualClock,
    current_task,
    notify_closing,
    run,
    sleep,
    spawn,
    tasks,
    wait_readable,
    wait_writable,
    yield_now,
)

__all__ = [
    "BusyResourceError", "Cancelled", "ClosedResourceError", "DeadlockError", "Runtime", "Task",
    "TaskExceptHookArgs", "TooManyTasksError", "VirtualClock", "current_task", "notify_closing",
    "run", "sleep", "spawn", "tasks", "wait_readable", "wait_writable", "yield_now",
]
