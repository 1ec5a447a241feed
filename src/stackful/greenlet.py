"""greenlet's public Python API on stackful fibers.

Code written against greenlet 3.x (``from greenlet import greenlet, getcurrent``) runs
unchanged here: a ``greenlet`` *is* a :class:`stackful.Fiber` (a subclass), so it has a
real stack of its own, and the main greenlet of a thread is that thread's root fiber.
:func:`install` makes ``import greenlet`` resolve to this module.

Speed is the point of the layer, so the hot path is the core's own code:

* ``greenlet.switch`` is not overridden: it is ``Fiber.switch``, a C method.  The one
  rule of greenlet's that the core does not share, "switching to a dead greenlet goes
  to its parent", is paid for by dead greenlets only: when one dies, a small callable
  named ``switch`` goes into its instance ``__dict__``, where it shadows the method.
* Tracing (:func:`settrace`) needs a hook on every switch.  While no thread has a trace
  function the class has no such hook; setting one swaps a Python ``switch`` into the
  class, and clearing the last one takes it out again.
* ``GreenletExit`` *is* ``stackful.FiberExit`` and ``error`` *is* ``stackful.FiberError``:
  the core's own garbage-collection kill and its cross-thread refusal are then exactly
  what greenlet code expects to catch, with no translation on any path.

Everything else (``throw``, ``parent``'s checks, ``run``) is plain Python, off the hot path.

The main greenlet: the core makes each thread's root fiber a plain Fiber.  The first
time this module meets one (``getcurrent()``, or creating a greenlet) it gives it the
type ``greenlet``, which adds no C-level fields, so ``getcurrent()`` is a greenlet in
every thread, as greenlet code assumes.  A fiber started through stackful's own API
stays a Fiber; greenlet code running inside one gets it from ``getcurrent()`` as it is.
"""

from __future__ import annotations

import contextvars
import sys
import threading
import weakref
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, Final, cast

import stackful
from stackful import Fiber, FiberError, FiberExit

__all__ = [
    "GreenletExit",
    "error",
    "getcurrent",
    "gettrace",
    "greenlet",
    "install",
    "settrace",
]

GreenletExit = FiberExit
"""Raised into a greenlet to make it exit; escaping ``run`` it is returned, not raised."""

error = FiberError
"""Misuse of a greenlet, such as switching to one that belongs to another thread."""

# Feature flags that greenlet exposes and some callers read.
GREENLET_USE_GC: Final = True
GREENLET_USE_TRACING: Final = True
GREENLET_USE_CONTEXT_VARS: Final = True

TraceFunction = Callable[[str, Any], object]

_current: Final = stackful.current
_fiber_switch: Final = Fiber.switch
_fiber_throw: Final = Fiber.throw
_fiber_parent: Final = Fiber.__dict__["parent"]

# Keys this module keeps in a greenlet's instance __dict__ (names starting "gr_" are
# greenlet's own, so ours start with "_greenlet").
_RUN: Final = "_greenlet_run"  # the callable given, until the greenlet starts
_PENDING_THROW: Final = "_greenlet_pending_throw"  # throw() into an unstarted greenlet
_PARKED: Final = "_greenlet_parked"  # suspended in _switch_traced: reports its own resume


class greenlet(Fiber):  # noqa: N801 - greenlet's own spelling
    """A greenlet: a fiber with greenlet's rules.

    ``greenlet(run=None, parent=None)``; ``run`` may also be a method of a subclass.
    The first ``switch(*args, **kwargs)`` calls ``run(*args, **kwargs)`` on the
    greenlet's own stack; its return value (or a ``GreenletExit`` it raises) goes to
    the parent, and any other exception is raised in the parent.
    """

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> greenlet:
        # All of Fiber's set-up happens here, so that a subclass whose __init__ never
        # calls greenlet.__init__ still gets a working greenlet (greenlet allows that).
        here = _current()
        if not isinstance(here, greenlet):
            _adopt(here)  # so that the new greenlet's parent is a greenlet too
        self = Fiber.__new__(cls)
        Fiber.__init__(self, _bootstrap)
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

    # -- throw ----------------------------------------------------------------------------

    def throw(
        self,
        typ: type[BaseException] | BaseException = GreenletExit,
        val: object = None,
        tb: TracebackType | None = None,
    ) -> Any:
        """Switch to this greenlet and raise an exception in it at once.

        The arguments are those of ``raise``: a class and an optional value, or an
        instance; ``tb`` an optional traceback.  A greenlet that was never started
        dies without running; a dead one passes the throw on to its parent.
        """
        target: Fiber = _first_live(self)
        if _tracing_threads:
            tracer = _trace_of_thread()
            if tracer is not None:
                return _throw_traced(target, (typ, val, tb), tracer)
        # This frame stays on the thrower's stack while the thrower is suspended, and
        # what it holds is invisible to the cycle collector there: so it holds neither
        # the thrower nor the exception (whose traceback will lead back to the
        # thrower).  The core builds the exception from typ/val/tb and hands it over.
        if target is _current():
            raise _exception_from(typ, val, tb)
        if not target.started:
            target.__dict__[_PENDING_THROW] = _exception_from(typ, val, tb)
            return _fiber_switch(target)
        return _fiber_throw(target, typ, val, tb)

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
    """The greenlet running now (a thread's main greenlet outside any other)."""
    fiber = _current()
    if isinstance(fiber, greenlet):
        return fiber
    return _adopt(fiber)


def _adopt(fiber: Fiber) -> greenlet:
    """Give a thread's root fiber greenlet's face: it becomes the main greenlet.

    A plain fiber that is not a root (one started with stackful's own API) is
    returned as it is: it has switch, throw, parent and dead, which is what greenlet
    code running inside it usually needs.
    """
    if fiber.parent is None:
        _retype(fiber, greenlet)
    return cast(greenlet, fiber)


def _retype(obj: object, cls: type) -> None:
    """Make ``cls`` the type of ``obj``, which is a plain Fiber (a thread's root).

    This is ``obj.__class__ = cls`` done by hand, because CPython refuses that
    assignment for static types such as Fiber.  It is sound here for the reasons
    CPython checks in that assignment: ``cls`` is a heap subclass of Fiber that adds
    no C-level fields (``__slots__ = ()``, and Fiber already has a ``__dict__`` and
    weak references), so the object's layout does not change, and the instance owns
    one reference to its heap type, taken here and dropped by ``cls``'s dealloc.
    It stays until the core offers this itself (see the report of issue #4).
    """
    import ctypes

    managed = (1 << 3) | (1 << 4)  # Py_TPFLAGS_MANAGED_WEAKREF, _MANAGED_DICT: a pre-header
    same_layout = cls.__basicsize__ == Fiber.__basicsize__ and not cls.__flags__ & managed
    if not same_layout or type(obj) is not Fiber:
        raise TypeError(f"cannot give {obj!r} the layout of {cls.__qualname__}")
    ob_type = object.__basicsize__ - ctypes.sizeof(ctypes.c_void_p)  # PyObject's last field
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(cls))
    ctypes.c_void_p.from_address(id(obj) + ob_type).value = id(cls)
    if type(obj) is not cls:  # pragma: no cover - an object header we do not know
        raise RuntimeError("stackful.greenlet: cannot make the root fiber a greenlet")


# -- the start and the end of a greenlet's life ----------------------------------------------


def _bootstrap(*args: Any, **kwargs: Any) -> Any:
    """The target of every greenlet's fiber: runs on the greenlet's own stack.

    While ``run`` runs, this frame holds no reference to the greenlet, so that
    dropping the last outside reference frees it (and kills it) at once, as in
    greenlet, instead of waiting for the cycle collector.
    """
    self = cast(greenlet, _current())  # the fiber this function is the target of
    d = self.__dict__
    try:
        pending = d.pop(_PENDING_THROW, None)
        if _tracing_threads:
            _report_resume(self, "switch" if pending is None else "throw")
        if pending is not None:
            raise pending
        if type(self) is greenlet:  # the common case, without the property's cost
            run = d.pop(_RUN, None)
            if run is None:
                raise AttributeError("run")
        else:
            run = self.run  # a subclass's run method wins over a run argument
            d.pop(_RUN, None)
        del self, d
        result = run(*args, **kwargs)
    except GreenletExit as e:
        result = e
    except BaseException:
        _on_death(_current(), "throw")
        raise
    self = cast(greenlet, _current())
    self.__dict__["switch"] = _SwitchToDead(self)  # _on_death's first line, inlined
    if _tracing_threads:
        _on_death(self, "switch")
    return result


class _SwitchToDead:
    """What ``switch`` means on a dead greenlet: the first live ancestor gets it.

    Kept in the dead greenlet's instance __dict__, where it shadows Fiber.switch.  It
    holds the greenlet weakly so that dying does not put the greenlet in a cycle.
    """

    __slots__ = ("_ref",)

    def __init__(self, dead: Fiber) -> None:
        self._ref = weakref.ref(dead)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        dead = self._ref()
        if dead is None:  # only reachable through a copy of the bound callable
            raise error("cannot switch to a garbage collected greenlet")
        target = _first_live(dead)
        here = _current()
        if target is here:
            tracer = _trace_of_thread() if _tracing_threads else None
            if tracer is not None:
                _call(tracer, "switch", here, here)
            return _pack(args, kwargs)
        return target.switch(*args, **kwargs)


def _on_death(self: Fiber, event: str) -> None:
    """Called on a dying greenlet's stack as its run ends, however it ends."""
    if "switch" not in self.__dict__:
        self.__dict__["switch"] = _SwitchToDead(self)
    if _tracing_threads:
        tracer = _trace_of_thread()
        if tracer is not None:
            heir = self.parent
            heir = _first_live(heir) if heir is not None else self
            refused = _hand_over(self, heir, tracer, event)
            if refused is not None:
                raise refused  # the parent receives it, as if thrown into it


def _first_live(fiber: Fiber) -> Fiber:
    """The fiber itself if not dead, else its nearest ancestor that is not."""
    while fiber.dead:
        parent = fiber.parent
        if parent is None:
            break
        fiber = parent
    return fiber


def _pack(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What a resumed switch() returns for these arguments, by greenlet's rules."""
    if kwargs:
        return (args, kwargs) if args else kwargs
    if len(args) == 1:
        return args[0]
    return args


def _exception_from(typ: object, val: object, tb: object) -> BaseException:
    """Build the exception that ``raise``'s forms describe, checking them like greenlet."""
    if tb is not None and not isinstance(tb, TracebackType):
        raise TypeError("throw() third argument must be a traceback object")
    if isinstance(typ, BaseException):
        if val is not None:
            raise TypeError("instance exception may not have a separate value")
        exc = typ
    elif isinstance(typ, type) and issubclass(typ, BaseException):
        if isinstance(val, typ):
            exc = val
        elif val is None:
            exc = typ()
        elif isinstance(val, tuple):
            exc = typ(*val)
        else:
            exc = typ(val)
    else:
        raise TypeError(f"exceptions must be classes, or instances, not {type(typ).__name__}")
    if tb is not None:
        exc = exc.with_traceback(tb)
    return exc


# -- tracing ----------------------------------------------------------------------------------
#
# greenlet calls the trace function on the *target's* stack once the transfer has
# landed, and an exception from it is raised there.  The core has no hook for that
# (yet), so the Python layer reports a resume from the place it resumes in, when that
# place is ours: a greenlet starting (_bootstrap) or one parked in _traced_switch (it
# carries the _PARKED mark meanwhile).  A target parked anywhere else, e.g. in a switch
# made before the trace was set, cannot report; then the switcher calls the trace
# function itself just before the transfer and, if it raises, throws that exception
# into the target instead, which is what greenlet's rule asks for.
#
# Invariant: _tracing_threads holds the ident of every thread whose trace function is
# set; greenlet.switch is _traced_switch exactly while it is not empty.

_thread_state = threading.local()
_tracing_threads: set[int] = set()
_tracing_lock = threading.Lock()


def _trace_of_thread() -> TraceFunction | None:
    tracer: TraceFunction | None = getattr(_thread_state, "trace", None)
    return tracer


def settrace(callback: TraceFunction | None) -> TraceFunction | None:
    """Set this thread's trace function and return the previous one.

    It is called as ``callback(event, args)`` with ``event`` "switch" or "throw" and
    ``args`` the pair ``(origin, target)``, on the target's side of the transfer.
    """
    previous = _trace_of_thread()
    _thread_state.trace = callback
    with _tracing_lock:
        if callback is None:
            _tracing_threads.discard(threading.get_ident())
        else:
            _tracing_threads.add(threading.get_ident())
        if _tracing_threads:
            greenlet.switch = _traced_switch  # type: ignore[method-assign]
        elif "switch" in greenlet.__dict__:
            del greenlet.switch
    return previous


def gettrace() -> TraceFunction | None:
    """This thread's trace function, or None."""
    return _trace_of_thread()


def _traced_switch(self: Fiber, *args: Any, **kwargs: Any) -> Any:
    """greenlet.switch while some thread traces: Fiber.switch plus the 'switch' event."""
    tracer = _trace_of_thread()
    if tracer is None:
        return _fiber_switch(self, *args, **kwargs)
    here = _current()
    if self is here:
        _call(tracer, "switch", here, here)
        return _pack(args, kwargs)
    return _switch_traced(here, self, tracer, "switch", args, kwargs)


def _switch_traced(
    here: Fiber,
    target: Fiber,
    tracer: TraceFunction,
    event: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None = None,
    throw: bool = False,
) -> Any:
    """Switch to ``target`` with ``args`` (``throw``: throw, ``args`` being those of
    Fiber.throw), arranging for ``tracer`` to hear of it; then report our own resume."""
    refused = _hand_over(here, target, tracer, event)
    if refused is not None:
        # The trace function ran here and raised: greenlet throws that into the target.
        args, kwargs, throw = (refused,), None, True
    mine = here.__dict__
    mine[_PARKED] = True
    try:
        if throw:
            result = _fiber_throw(target, *args)
        else:
            result = _fiber_switch(target, *args, **(kwargs or {}))
    except BaseException:
        mine.pop(_PARKED, None)
        _report_resume(here, "throw")
        raise
    mine.pop(_PARKED, None)
    _report_resume(here, "switch")
    return result


def _throw_traced(target: Fiber, raise_args: tuple[Any, Any, Any], tracer: TraceFunction) -> Any:
    """greenlet.throw while this thread traces (``raise_args``: typ, val, tb)."""
    here = _current()
    if target is here:
        _call(tracer, "throw", here, here)
        raise _exception_from(*raise_args)
    if not target.started:
        target.__dict__[_PENDING_THROW] = _exception_from(*raise_args)
        return _switch_traced(here, target, tracer, "throw", ())
    return _switch_traced(here, target, tracer, "throw", raise_args, throw=True)


def _hand_over(
    origin: Fiber, target: Fiber, tracer: TraceFunction, event: str
) -> BaseException | None:
    """Get ``event`` (origin -> target) reported: by the target when it can, else here.

    Returns what the trace function raised when it ran here, for the caller to
    throw into the target in place of the transfer it meant.
    """
    if not target.started or target.__dict__.get(_PARKED):
        _thread_state.origin = origin
        return None
    try:
        _call(tracer, event, origin, target)
    except BaseException as e:  # noqa: B036 - greenlet delivers every kind to the target
        return e
    return None


def _report_resume(me: Fiber, event: str) -> None:
    """On the resumed side: tell the trace function who transferred to ``me``."""
    origin = _thread_state.__dict__.pop("origin", None)
    tracer = _trace_of_thread()
    if origin is not None and tracer is not None:
        _call(tracer, event, origin, me)


def _call(tracer: TraceFunction, event: str, origin: Fiber, target: Fiber) -> None:
    """Call the trace function; one that raises is removed first (as greenlet does)."""
    try:
        tracer(event, (origin, target))
    except BaseException:
        settrace(None)
        raise


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
