"""greenlet's public Python API on stackful fibers.

Code written against greenlet 3.x (``from greenlet import greenlet, getcurrent``) runs
unchanged here: a ``greenlet`` *is* a :class:`stackful.Fiber` (a subclass), so it has a
real stack of its own, and the main greenlet of a thread is that thread's root fiber.
:func:`install` makes ``import greenlet`` resolve to this module.

Speed is the point of the layer, so ``switch`` and ``throw`` are the core's own C methods,
not overridden here.  Where greenlet's rules differ from a plain fiber's, the class asks
the core for greenlet's rule instead of wrapping it:

* ``__fiber_dead_switch_to_parent__``: a switch or throw aimed at a dead greenlet goes to
  its first live ancestor (and returns, or raises, at once if that is the caller).
* ``__fiber_exit__ = GreenletExit``: ``throw()`` with no arguments, and the kill a
  suspended greenlet gets when it is collected, raise ``GreenletExit``.
* ``__fiber_inherits_asyncio__``: asyncio's running loop is per thread for greenlet but per
  fiber here, so a greenlet starts with the running loop, task and async generator hooks of
  the greenlet that starts it: one spawned inside a coroutine (SQLAlchemy's
  ``greenlet_spawn``) sees the task's loop, as with greenlet.
* :func:`settrace` installs the core's per-thread switch hook, which runs on the target's
  stack after every landing, however the switch was made; with no trace function there is
  no hook and nothing on any path pays for tracing.
* The main greenlet: the first time this module meets a thread's root fiber
  (``getcurrent()``, or creating a greenlet) it has the core adopt it as a ``greenlet``,
  so ``getcurrent()`` is a greenlet in every thread, as greenlet code assumes.  A fiber
  started through stackful's own API stays a Fiber; greenlet code running inside one gets
  it from ``getcurrent()`` as it is.

What is left in Python is greenlet's ``run`` (set after creation, gone once started) and
the checks on ``parent``, none of them on the switch path.

Known gap: greenlet traces a switch or throw whose target is the running greenlet itself
(``("switch", (g, g))``); the core completes those without a landing, so the switch hook,
and with it the trace function, does not hear them.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any, ClassVar, Final, cast

import stackful
from stackful import Fiber, FiberError, FiberExit, _native

__all__ = [
    "GreenletExit",
    "error",
    "getcurrent",
    "gettrace",
    "greenlet",
    "install",
    "settrace",
]


class GreenletExit(FiberExit):
    """Raised into a greenlet to make it exit; escaping ``run`` it is returned, not raised.

    A subclass of :class:`stackful.FiberExit`, so the core treats it as an exit too (and
    ``except FiberExit`` catches it).
    """


error = FiberError
"""Misuse of a greenlet, such as switching to one that belongs to another thread."""

# Feature flags that greenlet exposes and some callers read.
GREENLET_USE_GC: Final = True
GREENLET_USE_TRACING: Final = True
GREENLET_USE_CONTEXT_VARS: Final = True

TraceFunction = Callable[[str, Any], object]

_current: Final = stackful.current
_adopt_root: Final = _native.adopt_root
_set_switch_hook: Final = _native.set_switch_hook
_get_switch_hook: Final = _native.get_switch_hook
_fiber_new: Final = Fiber.__new__
_fiber_init: Final = Fiber.__init__
_fiber_parent: Final = Fiber.__dict__["parent"]

# The key this module keeps in a greenlet's instance __dict__ (names starting "gr_" are
# greenlet's own, so ours start with "_greenlet").  Invariant: present only while the
# greenlet has not started; _bootstrap takes it out as the greenlet starts.
_RUN: Final = "_greenlet_run"


class greenlet(Fiber):  # noqa: N801 - greenlet's own spelling
    """A greenlet: a fiber with greenlet's rules.

    ``greenlet(run=None, parent=None)``; ``run`` may also be a method of a subclass.
    The first ``switch(*args, **kwargs)`` calls ``run(*args, **kwargs)`` on the
    greenlet's own stack; its return value (or a ``GreenletExit`` it raises) goes to
    the parent, and any other exception is raised in the parent.  ``throw(typ, val, tb)``
    raises in the greenlet where it is suspended (``GreenletExit`` by default; a greenlet
    that never started dies without running).  Switching or throwing to a dead greenlet
    goes to its parent.
    """

    __slots__ = ()

    # The core's hooks for greenlet's rules (see the module docstring).
    __fiber_dead_switch_to_parent__: ClassVar[bool] = True
    __fiber_exit__: ClassVar[type[FiberExit]] = GreenletExit
    __fiber_inherits_asyncio__: ClassVar[bool] = True

    def __new__(cls, *args: Any, **kwargs: Any) -> greenlet:
        # All of Fiber's set-up happens here, so that a subclass whose __init__ never
        # calls greenlet.__init__ still gets a working greenlet (greenlet allows that),
        # and so does greenlet.__new__(cls) alone (copy, pickle): a Fiber made by
        # Fiber.__new__ without Fiber.__init__ has no target, and the core cannot run it.
        if not isinstance(_current(), greenlet):
            getcurrent()  # so that the new greenlet's parent is a greenlet too
        self = _fiber_new(cls)
        _fiber_init(self, _bootstrap)
        return self

    def __init__(self, run: Callable[..., Any] | None = None, parent: Fiber | None = None) -> None:
        if run is not None:
            # Straight into the dict, not through the ``run`` property: a subclass's
            # ``run`` method must keep winning over a ``run`` argument, as in greenlet.
            self.__dict__[_RUN] = run
        if parent is not None:
            self.parent = parent

    # -- run ------------------------------------------------------------------------------

    @property
    def run(self) -> Callable[..., Any]:
        """The callable the greenlet runs when started; gone once it has started."""
        try:
            run: Callable[..., Any] = self.__dict__[_RUN]
        except KeyError:
            raise AttributeError("run") from None
        return run

    @run.setter
    def run(self, value: Callable[..., Any]) -> None:
        if self.started:
            raise AttributeError("run cannot be set after the start of the greenlet")
        self.__dict__[_RUN] = value

    @run.deleter
    def run(self) -> None:
        if self.started:
            raise AttributeError("run cannot be set after the start of the greenlet")
        self.__dict__.pop(_RUN, None)

    # -- parent ---------------------------------------------------------------------------

    @property
    def parent(self) -> Fiber | None:
        """Where execution goes when this greenlet dies; None for a thread's main greenlet."""
        parent: Fiber | None = _fiber_parent.__get__(self, Fiber)
        return parent

    @parent.setter
    def parent(self, value: Fiber | None) -> None:
        if not isinstance(value, Fiber):
            raise TypeError(f"parent must be a greenlet, not {type(value).__name__}")
        if _fiber_parent.__get__(self, Fiber) is None:
            raise AttributeError("cannot set the parent of a main greenlet")
        # The core refuses a cycle, and a parent on another thread, with ValueError.
        _fiber_parent.__set__(self, value)

    @parent.deleter
    def parent(self) -> None:
        raise AttributeError("can't delete attribute")

    # -- the rest of greenlet's face ---------------------------------------------------------

    def __bool__(self) -> bool:
        """True while the greenlet is active: started and not yet dead."""
        return bool(self.started) and not self.dead

    @property
    def gr_frame(self) -> FrameType | None:
        """The frame a suspended greenlet resumes in; None unless suspended."""
        if self is _current():
            return None  # Fiber.frame gives the running fiber's frame too; greenlet does not
        frame: FrameType | None = self.frame
        return frame

    @property
    def gr_context(self) -> contextvars.Context | None:
        """The contextvars.Context the greenlet runs in (None: a fresh empty one)."""
        context: contextvars.Context | None = self.context
        return context

    @gr_context.setter
    def gr_context(self, value: contextvars.Context | None) -> None:
        self.context = value

    def __repr__(self) -> str:
        kind = "main" if _fiber_parent.__get__(self, Fiber) is None else self.state
        return f"<{type(self).__module__}.{type(self).__qualname__} object at {id(self):#x} {kind}>"


def getcurrent() -> greenlet:
    """The greenlet running now (a thread's main greenlet outside any other).

    A thread's root fiber becomes its main greenlet here, the first time it is met.  A
    plain fiber that is not a root (one started with stackful's own API) is returned as
    it is: it has switch, throw, parent and dead, which is what greenlet code running
    inside it usually needs.
    """
    fiber = _current()
    if isinstance(fiber, greenlet):
        return fiber
    if fiber.parent is None:
        _adopt_root(greenlet)
    return cast(greenlet, fiber)


def _bootstrap(*args: Any, **kwargs: Any) -> Any:
    """The target of every greenlet's fiber: runs ``run`` on the greenlet's own stack.

    The core does the rest of the life cycle: a ``GreenletExit`` escaping ``run`` is
    returned to the parent, a throw into a greenlet that never started kills it before
    this runs.  While ``run`` runs, this frame holds no reference to the greenlet, so that
    dropping the last outside reference frees it (and kills it) at once, as in greenlet,
    instead of waiting for the cycle collector.
    """
    self = _current()  # the fiber this function is the target of
    d = self.__dict__
    if type(self) is greenlet:  # the common case, without the property's cost
        run = d.pop(_RUN, None)
        if run is None:
            raise AttributeError("run")
    else:
        run = self.run  # a subclass's run method wins over a run argument
        d.pop(_RUN, None)
    del self, d
    return run(*args, **kwargs)


# -- tracing ----------------------------------------------------------------------------------
#
# greenlet calls the trace function on the *target's* side once a transfer has landed, and
# an exception from it is raised there in place of what the transfer carried.  That is the
# contract of the core's switch hook, so a trace function is installed as this thread's
# switch hook, wrapped only to remove it when it raises (as greenlet does).  The wrapper is
# a functools.partial of _call_trace, not an object with __call__ or a closure: the hook runs
# on every switch, and a partial is the cheapest of the three to call from C.


def _call_trace(callback: TraceFunction, event: str, args: tuple[Fiber, Fiber]) -> None:
    """The switch hook settrace() installs, with ``callback`` bound by a partial."""
    try:
        callback(event, args)
    except BaseException:
        if _callback_of(_get_switch_hook()) is callback:  # unless it replaced itself
            _set_switch_hook(None)
        raise


def _callback_of(hook: Callable[[str, tuple[Fiber, Fiber]], object] | None) -> Any:
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
