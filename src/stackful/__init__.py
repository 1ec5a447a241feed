"""stackful: real stackful coroutines (fibers) for CPython.

Layers: the native core (``Fiber``, ``current``), the runtime (``run``, ``spawn``,
``sleep``, ``wait_readable``, ...), structured concurrency (``TaskGroup``, cancel scopes:
``move_on_after``, ``fail_after``), user primitives on top of it (``Lock``, ``Queue``,
``Channel``, ``select``, ``timeout``), ``stackful.lowlevel`` for writing new
primitives, the network (``stackful.socket``, ``stackful.ssl``, ``stackful.server``) and
``stackful.subprocess`` (imported on demand), ``stackful.monkey`` (``patch_all()``: unmodified
blocking libraries run in tasks), ``stackful.greenlet``, a greenlet-compatible face, and
``stackful.debug`` for seeing inside (``dump``, ``dump_on``, ``stats``; a coverage.py plugin,
``stackful.coverage_plugin``, and a gdb command, ``stackful/gdb_fibers.py``).

Every fiber runs Python code on its own mmap'ed C stack with a guard page;
one assembly routine switches between them, and the interpreter's per-thread
state is swapped with it so CPython never notices.

    >>> import stackful
    >>> root = stackful.current()
    >>> def child(a, b=0):
    ...     got = root.switch(a + b)
    ...     return got * 2
    >>> f = stackful.Fiber(child, name="child")
    >>> f.switch(1, b=2)
    3
    >>> f.switch(10)
    20
    >>> f.dead
    True
"""

import os as _os
import sys as _sys

if not ((3, 11) <= _sys.version_info[:2] <= (3, 15)):
    raise ImportError(
        "stackful supports CPython 3.11 to 3.15; this is "
        f"{_sys.implementation.name} {_sys.version.split()[0]}"
    )
if _sys.implementation.name != "cpython":
    raise ImportError(f"stackful needs CPython, not {_sys.implementation.name}")

from ._discard import on_discard as _on_discard  # noqa: E402
from ._native import (  # noqa: E402
    DEFAULT_STACK_SIZE,
    MIN_STACK_SIZE,
    Fiber,
    FiberError,
    FiberExit,
    StackInfo,
    clear_stack_pool,
    current,
    discarded_fibers,
    get_default_stack_size,
    set_default_stack_size,
    stack_pool,
)
from ._native import set_discard_hook as _set_discard_hook  # noqa: E402

_set_discard_hook(_on_discard)

from ._runtime_exports import *  # noqa: E402, F403  (run, spawn, Task, sleep, ...)
from ._runtime_exports import __all__ as _runtime_names  # noqa: E402
from .channel import Channel, ChannelClosed, Recv, Send, select  # noqa: E402
from .debug import _install_from_environment as _dump_from_environment  # noqa: E402
from .debug import dump, dump_on  # noqa: E402
from .queue import Empty, Full, Queue  # noqa: E402
from .sync import Condition, Event, Lock, Semaphore  # noqa: E402
from .timeouts import (  # noqa: E402
    fail_after,
    fail_at,
    move_on_after,
    move_on_at,
    timeout,
    timeout_at,
)

__all__ = [
    "DEFAULT_STACK_SIZE",
    "MIN_STACK_SIZE",
    "Fiber",
    "FiberError",
    "FiberExit",
    "StackInfo",
    "clear_stack_pool",
    "current",
    "discarded_fibers",
    "get_default_stack_size",
    "set_default_stack_size",
    "stack_pool",
    "dump",
    "dump_on",
    # user primitives
    "Channel", "ChannelClosed", "Condition", "Empty", "Event", "Full", "Lock", "Queue", "Recv",
    "Semaphore", "Send", "fail_after", "fail_at", "move_on_after", "move_on_at", "select",
    "timeout", "timeout_at",
    *_runtime_names,
]

if _os.environ.get("STACKFUL_DUMP_ON"):
    _dump_from_environment()  # like PYTHONFAULTHANDLER: dump on that signal

__version__ = "0.1.0"
