"""Names the ``stackful`` package re-exports from the runtime layer."""

from .runtime_api import (
    BlockingReport,
    BusyResourceError,
    Cancelled,
    CancelScope,
    ClosedResourceError,
    DeadlockError,
    Runtime,
    Task,
    TaskExceptHookArgs,
    TaskGroup,
    TaskStatus,
    TooManyTasksError,
    VirtualClock,
    current_task,
    notify_closing,
    run,
    set_thread_pool_size,
    sleep,
    spawn,
    tasks,
    to_thread,
    wait_readable,
    wait_writable,
    yield_now,
)

__all__ = [
    "BlockingReport", "BusyResourceError", "CancelScope", "Cancelled", "ClosedResourceError",
    "DeadlockError", "Runtime", "Task", "TaskExceptHookArgs", "TaskGroup", "TaskStatus",
    "TooManyTasksError", "VirtualClock", "current_task", "notify_closing", "run",
    "set_thread_pool_size", "sleep", "spawn", "tasks", "to_thread", "wait_readable",
    "wait_writable", "yield_now",
]
