"""cProfile across fiber switches: one profile per fiber, merged with pstats.

Why cProfile alone gets fibers wrong: it keeps one stack of open calls per profiler.  A
switch leaves fiber A inside ``switch()`` (an open builtin call) and resumes fiber B in the
middle of its own calls, so B's returns close A's calls: call counts come out wrong (a
function looks recursive through ``switch``), and inclusive times are charged to the wrong
functions.

What this does instead: every fiber that runs while profiling gets its own
``cProfile.Profile``; at each switch the core's switch hook makes the landing fiber's the
one that receives events (3.11: it becomes the thread's profile function; 3.12+: its
methods become the ``sys.monitoring`` callbacks of cProfile's tool id, which changes no
instrumentation).  The hook runs through ``_native.call_untraced``, so its own frames are in
no profile.  Each profile runs on a clock that stops while its fiber is suspended: a call's
time is the time its fiber spent running it, so the merged times add up to the wall time
the thread ran, as one thread's profile does.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
import weakref
from collections.abc import Callable
from functools import partial
from time import monotonic_ns
from types import TracebackType
from typing import Any, TypeVar

from ._native import Fiber, FiberClock, call_untraced, current, get_switch_hook, set_switch_hook

__all__ = ["Profile"]

_T = TypeVar("_T")
_MONITORING = sys.version_info >= (3, 12)
_monitoring: Any = getattr(sys, "monitoring", None)  # 3.12+


class _FiberProfile:
    """One fiber's cProfile.Profile and the clock it runs on."""

    __slots__ = ("name", "clock", "profile", "callbacks")

    def __init__(self, name: str, subcalls: bool, builtins: bool) -> None:
        self.name = name
        self.clock = FiberClock()  # stops while the fiber is suspended (the hook moves it)
        self.profile = cProfile.Profile(self.clock, 1e-9, subcalls, builtins)
        self.callbacks: list[tuple[int, Any]] = []  # 3.12+: (event, bound method) to register


class Profile:
    """A profiler for the running thread that keeps each fiber's calls apart.

    Use it like ``cProfile.Profile``::

        with stackful.debug.Profile() as prof:
            stackful.run(main)
        prof.print_stats("cumulative")

    Counts are exact per function (a call open in a fiber when profiling stops counts as
    returned then, as cProfile counts the caller's open calls), and a call's times are the
    time its own fiber spent in it: a fiber suspended inside it is not running it.  So no
    function's cumulative time exceeds the wall time profiled, and the tottimes add up to
    the time the thread ran Python.  ``stats()`` merges the fibers' profiles (one
    ``pstats.Stats``); ``per_fiber()`` gives them apart.

    Only the thread that enables it is followed; on 3.12+ cProfile's ``sys.monitoring`` tool
    id sees every thread, so another thread's calls land in whichever fiber's profile is
    current, as with cProfile itself.  Only one may be enabled at a time in a process
    (cProfile's rule on 3.12+; kept on 3.11 too).
    """

    _enabled: Profile | None = None

    def __init__(self, *, subcalls: bool = True, builtins: bool = True) -> None:
        self._subcalls = subcalls
        self._builtins = builtins
        self._profiles: list[_FiberProfile] = []
        self._by_fiber: weakref.WeakKeyDictionary[Fiber, _FiberProfile] = (
            weakref.WeakKeyDictionary())
        self._current: _FiberProfile | None = None
        self._callback_names: dict[int, str] = {}
        self._hook: Callable[[str, tuple[Fiber, Fiber]], object] | None = None
        self._previous_hook: Callable[[str, tuple[Fiber, Fiber]], object] | None = None
        self._thread = 0

    # -- enabling ------------------------------------------------------------------------------

    def enable(self) -> None:
        """Start profiling the running thread (a ``RuntimeError`` if one is already on)."""
        if Profile._enabled is not None:
            raise RuntimeError("a stackful.debug.Profile is already enabled")
        self._thread = threading.get_ident()
        call_untraced(self._start, None)

    def _start(self) -> None:
        first = self._profile_of(current())
        first.profile.enable()
        if _MONITORING:
            self._callback_names = _callback_names(first.profile)
            self._bind(first)
        self._current = first
        self._previous_hook = get_switch_hook()
        self._hook = partial(call_untraced, self._on_switch, self._previous_hook)
        set_switch_hook(self._hook)
        Profile._enabled = self

    def disable(self) -> None:
        """Stop profiling; calls still open in any fiber count as returned now."""
        if Profile._enabled is not self:
            return
        if threading.get_ident() != self._thread:
            raise RuntimeError("disable() a Profile on the thread that enabled it")
        call_untraced(self._stop, None)

    def _stop(self) -> None:
        Profile._enabled = None
        if get_switch_hook() is self._hook:
            set_switch_hook(self._previous_hook)
        else:
            self._hook = None  # another hook wraps ours: _on_switch now does nothing
        now = monotonic_ns()
        running = self._current
        self._current = None
        if running is not None:
            running.profile.disable()
        # Close the calls still open in suspended fibers, at the time they were left.
        for rec in self._profiles:
            if rec is not running:
                rec.clock.paused_ns += now - rec.clock.left_ns
                rec.clock.left_ns = now
                rec.profile.enable()
                rec.profile.disable()

    def __enter__(self) -> Profile:
        self.enable()
        return self

    def __exit__(self, typ: type[BaseException] | None, val: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.disable()

    def runcall(self, func: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        """Call ``func(*args, **kwargs)`` with profiling on; return its result."""
        self.enable()
        try:
            return func(*args, **kwargs)
        finally:
            self.disable()

    # -- the switch ----------------------------------------------------------------------------

    def _profile_of(self, fiber: Fiber) -> _FiberProfile:
        rec = self._by_fiber.get(fiber)
        if rec is None:
            rec = _FiberProfile(fiber.name, self._subcalls, self._builtins)
            self._bind(rec)
            self._by_fiber[fiber] = rec
            self._profiles.append(rec)
        return rec

    def _bind(self, rec: _FiberProfile) -> None:
        rec.callbacks = [(bit, getattr(rec.profile, name))
                         for bit, name in self._callback_names.items()]

    def _on_switch(self, event: str, fibers: tuple[Fiber | None, Fiber]) -> None:
        # Runs untraced, on the landing fiber's stack, before any of its code.
        left = self._current
        if left is None or Profile._enabled is not self:
            return
        now = monotonic_ns()
        landing = self._profile_of(fibers[1])
        if landing is left:
            return
        left.clock.left_ns = now
        clock = landing.clock
        if clock.left_ns:
            clock.paused_ns += now - clock.left_ns
        else:  # a new fiber: its clock starts now
            clock.paused_ns = now
        self._current = landing
        if _MONITORING:
            register = _monitoring.register_callback
            tool = _monitoring.PROFILER_ID
            for event_bit, callback in landing.callbacks:
                register(tool, event_bit, callback)
        else:
            landing.profile.enable(self._subcalls, self._builtins)

    # -- results -------------------------------------------------------------------------------

    def per_fiber(self) -> list[tuple[str, pstats.Stats]]:
        """Each profiled fiber's name and its own ``pstats.Stats``, in order of first run."""
        return [(rec.name, pstats.Stats(rec.profile)) for rec in self._profiles]

    def stats(self) -> pstats.Stats:
        """The fibers' profiles merged into one ``pstats.Stats`` (counts and times summed)."""
        if Profile._enabled is self:
            raise RuntimeError("disable() the profile before reading its stats")
        merged = pstats.Stats()
        for rec in self._profiles:
            merged.add(rec.profile)
        return merged

    def print_stats(self, sort: str = "stdname") -> None:
        """Print the merged stats, as ``cProfile.Profile.print_stats`` does."""
        self.stats().strip_dirs().sort_stats(sort).print_stats()

    def dump_stats(self, file: str) -> None:
        """Write the merged stats to `file`, for ``pstats`` or snakeviz."""
        self.stats().dump_stats(file)


def _callback_names(profile: cProfile.Profile) -> dict[int, str]:
    """The ``sys.monitoring`` events cProfile registered for `profile`, and the method each
    calls (read back rather than assumed: the table differs between versions)."""
    monitoring = _monitoring
    names: dict[int, str] = {}
    for name in dir(monitoring.events):
        bit = getattr(monitoring.events, name)
        if not isinstance(bit, int) or bit <= 0 or bit & (bit - 1):
            continue  # NO_EVENTS or a combination
        callback = monitoring.register_callback(monitoring.PROFILER_ID, bit, None)
        if callback is None:
            continue
        monitoring.register_callback(monitoring.PROFILER_ID, bit, callback)
        if getattr(callback, "__self__", None) is not profile:
            raise RuntimeError("cProfile registered a callback stackful does not know")
        names[bit] = callback.__name__
    return names
