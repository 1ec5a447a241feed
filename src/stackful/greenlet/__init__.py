"""greenlet's API, Python and C, on stackful fibers.

Code written against greenlet 3.x (``from greenlet import greenlet, getcurrent``) runs
unchanged here, and so do C extensions built against greenlet's ``greenlet.h`` (gevent's
compiled modules): :func:`install` makes ``import greenlet`` resolve to this module, whose
``_C_API`` capsule is greenlet's function table, and whose ``greenlet`` type has greenlet's
instance layout, so that C subclasses of it put their fields where they expect.

A ``greenlet`` is a small object that stands for a :class:`stackful.Fiber` (its ``fiber``
attribute) of a private subclass that asks the core for greenlet's rules: a switch or
throw aimed at a dead greenlet goes to its parent, ``GreenletExit`` is what a kill and a
collected suspended greenlet get, and a greenlet starts with the asyncio state of the one
that starts it (SQLAlchemy's ``greenlet_spawn`` inside a coroutine sees the task's loop).
Why a greenlet wraps a fiber rather than being one is in ``_native/greenlet_type.c``.

Any fiber has a greenlet standing for it once asked: a thread's root fiber is its main
greenlet, and ``getcurrent()`` inside a fiber started through stackful's own API gives a
greenlet for that fiber, so greenlet code runs inside stackful tasks too.

Tracing: :func:`settrace` installs the core's per-thread switch hook, which runs on the
target's stack after every landing, however the switch was made; with no trace function
there is no hook and nothing on any path pays for tracing.

Run a program on it unchanged: ``python -m stackful.greenlet script.py [args]`` or
``python -m stackful.greenlet -m module [args]`` (see ``__main__``).

Known gap: greenlet traces a switch or throw whose target is the running greenlet itself
(``("switch", (g, g))``) only where the core's switch hook sees it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from typing import Any, Final

from stackful import FiberError, _native

__all__ = [
    "GreenletExit",
    "error",
    "getcurrent",
    "gettrace",
    "greenlet",
    "install",
    "settrace",
]

greenlet = _native.greenlet
GreenletExit = _native.GreenletExit

error: Final = FiberError
"""Misuse of a greenlet, such as switching to one that belongs to another thread."""

getcurrent: Final = _native.getcurrent

_C_API: Final = _native._greenlet_C_API
"""greenlet's C API (greenlet.h's PyGreenlet_Import() reads it)."""

# Feature flags that greenlet exposes and some callers read.
GREENLET_USE_GC: Final = True
GREENLET_USE_TRACING: Final = True
GREENLET_USE_CONTEXT_VARS: Final = True
GREENLET_USE_STANDARD_THREADING: Final = True

TraceFunction = Callable[[str, Any], object]

_set_switch_hook: Final = _native.set_switch_hook
_get_switch_hook: Final = _native.get_switch_hook
_greenlet_of: Final = _native.greenlet_of


# -- tracing ----------------------------------------------------------------------------------
#
# greenlet calls the trace function on the *target's* side once a transfer has landed, and
# an exception from it is raised there in place of what the transfer carried.  That is the
# contract of the core's switch hook, so a trace function is installed as this thread's
# switch hook, wrapped to report the greenlets of the fibers it is told about and to remove
# it when it raises (as greenlet does).  The wrapper is a functools.partial of
# _call_trace: the hook runs on every switch, and a partial is the cheapest to call from C.


def _call_trace(callback: TraceFunction, event: str, args: tuple[Any, Any]) -> None:
    """The switch hook settrace() installs, with ``callback`` bound by a partial."""
    origin, target = args  # the core reports fibers: greenlet code sees their greenlets
    try:
        callback(event, (None if origin is None else _greenlet_of(origin), _greenlet_of(target)))
    except BaseException:
        if _callback_of(_get_switch_hook()) is callback:  # unless it replaced itself
            _set_switch_hook(None)
        raise


def _callback_of(hook: Callable[[str, tuple[Any, Any]], object] | None) -> Any:
    """The trace function inside a hook from settrace(), or any other hook as it is."""
    if isinstance(hook, partial) and hook.func is _call_trace:
        return hook.args[0]
    return hook


def settrace(callback: TraceFunction | None) -> TraceFunction | None:
    """Set this thread's trace function and return the previous one.

    It is called as ``callback(event, args)`` with ``event`` "switch" or "throw" and
    ``args`` the pair ``(origin, target)``, on the target's side of every transfer: the
    start and the end of a greenlet, a collected greenlet's kill, and switches made
    through ``stackful.Fiber`` directly included.  If it raises, it is removed and its
    exception is raised in the target instead of what the transfer carried.  Anything
    but a callable or None is a TypeError here (greenlet takes it and fails later).
    """
    if callback is not None and not callable(callback):
        raise TypeError(f"the trace function must be callable or None, not {callback!r}")
    previous = _set_switch_hook(None if callback is None else partial(_call_trace, callback))
    result: TraceFunction | None = _callback_of(previous)
    return result


def gettrace() -> TraceFunction | None:
    """This thread's trace function, or None."""
    result: TraceFunction | None = _callback_of(_get_switch_hook())
    return result


# greenlet publishes these on its class too.
_native._greenlet_set_class_attr("settrace", settrace)
_native._greenlet_set_class_attr("gettrace", gettrace)


# -- install() -----------------------------------------------------------------------------------


def install() -> None:
    """Make ``import greenlet`` give this module, for code that cannot change its imports.

    Call it before anything imports greenlet.  Refuses (RuntimeError) if the real
    greenlet is already imported: two greenlet worlds in one process cannot switch
    into each other.  Calling it again is harmless.
    """
    this = sys.modules[__name__]
    existing = sys.modules.get("greenlet")
    if existing is this:
        return
    if existing is not None:
        raise RuntimeError(
            "stackful.greenlet.install(): the real greenlet module is already imported "
            f"({existing!r}); call install() before anything imports greenlet"
        )
    sys.modules["greenlet"] = this
