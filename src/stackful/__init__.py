"""stackful: real stackful coroutines (fibers) for CPython.

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

import sys as _sys

if not ((3, 11) <= _sys.version_info[:2] <= (3, 13)):
    raise ImportError(
        "stackful supports CPython 3.11, 3.12 and 3.13; this is "
        f"{_sys.implementation.name} {_sys.version.split()[0]}"
    )
if _sys.implementation.name != "cpython":
    raise ImportError(f"stackful needs CPython, not {_sys.implementation.name}")

from ._native import (  # noqa: E402
    DEFAULT_STACK_SIZE,
    MIN_STACK_SIZE,
    Fiber,
    FiberError,
    FiberExit,
    StackInfo,
    clear_stack_pool,
    current,
    get_default_stack_size,
    set_default_stack_size,
    stack_pool,
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
    "get_default_stack_size",
    "set_default_stack_size",
    "stack_pool",
]

__version__ = "0.1.0"
