"""The odd places a stress fiber can sit in (tests/stress.py).

A fiber enters one and, from inside it, runs `inside()` (in the stress run: it
serves commands until told to leave):

    sgen     inside a generator or coroutine shared by all fibers
    ctx      inside Context.run of a shared context
    repr     inside repr() of a shared list
    trace    inside a sys.settrace function       } a fiber inside one of these
    profile  inside a sys.setprofile function     } has its hooks off (per fiber);
    monitor  inside a sys.monitoring callback     } the others are still seen
    del      inside a __del__ the collector runs  } a collection is per
    gccb     inside a gc.callbacks callback       } interpreter: one at a time
    refuse   inside a frame that refuses FiberExit: it catches it, sends
             Refused to its first live ancestor, and carries on from there

How a hook is made to run our code *there*: the fiber files a park request on
its thread, then does what fires the hook (calls `marker`, reprs the list,
collects a cycle of `Finalized`); the hook takes the request if it is the one
filed by this fiber, and runs it.  Where the interpreter would swallow an
exception the request raised (a finalizer, a gc callback) or react to it (a
trace function that raises is removed), the exception is carried out and raised
again once the hook has returned, so a throw or a kill passes through every
place alike.  Places that cannot be entered say why instead: 'busy' (the
generator runs, the context is entered, a collection is under way, this fiber
is already inside that repr), 'done' (the generator finished) or 'off' (this
fiber is inside a hook, so hooks do not fire for it).
"""

from __future__ import annotations

import collections
import contextvars
import functools
import gc
import itertools
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import stackful
from stackful import Fiber, FiberExit

HAS_MONITORING = sys.version_info >= (3, 12)
HOOKS = ("trace", "profile", "monitor") if HAS_MONITORING else ("trace", "profile")
COLLECTING = ("del", "gccb")
KINDS = ("sgen", "ctx", "repr", *HOOKS, *COLLECTING, "refuse")
MONITOR_TOOL = 3          # no name of its own in sys.monitoring: free for us

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("stress_var", default="unset")
PARK = threading.local()  # .request: the one pending park request; .seen: hooks a probe met
TOKENS = itertools.count()


@dataclass(frozen=True)
class Refused:
    """What a fiber that refused FiberExit sends to its first live ancestor."""
    fid: int


@dataclass(eq=False)
class Request:
    kind: str
    fid: int
    token: Any
    inside: Callable[[], Any] | None
    carry: bool                          # catch what inside() raises, raise it later
    out: tuple[str, Any] | None = None

    def run(self) -> None:
        inside, self.inside = self.inside, None
        assert inside is not None
        if not self.carry:
            self.out = ("ok", inside())
            return
        try:
            self.out = ("ok", inside())
        except BaseException as e:  # carried out of the hook, raised again in outcome()
            self.out = ("exc", e)

    def outcome(self, idle: str) -> tuple[str, Any]:
        """('ok', what inside() returned), or (idle, None) if it never ran."""
        out, self.out = self.out, None
        if out is None:
            return (idle, None)
        if out[0] == "exc":
            exc = out[1]
            del out
            try:
                raise exc
            finally:
                del exc
        return out


def file(req: Request) -> Request:
    PARK.request = req
    return req


def unfile(req: Request) -> None:
    if getattr(PARK, "request", None) is req:
        PARK.request = None


def take(kind: str, token: Any = None) -> Request | None:
    """The pending request if it is for `kind` (and `token`) and filed by the running fiber."""
    req: Request | None = getattr(PARK, "request", None)
    if req is None or req.kind != kind or req.token != token:
        return None
    if getattr(stackful.current(), "fid", None) != req.fid:
        return None
    PARK.request = None
    return req


# ---------------------------------------------------------------- the hooks

def marker() -> None:
    """Calling this is what a trace, profile or monitoring hook parks on."""


def probe() -> None:
    """Calling this records, in PARK.seen, which hooks see the calling fiber."""


MARKER_CODE, PROBE_CODE = marker.__code__, probe.__code__


def hook(kind: str, code: Any) -> None:
    if code is PROBE_CODE:
        seen = getattr(PARK, "seen", None)
        if seen is not None:
            seen.add(kind)
    elif code is MARKER_CODE:
        req = take(kind)
        if req is not None:
            req.run()


def tracer(frame: Any, event: str, arg: Any) -> None:
    if event == "call":
        hook("trace", frame.f_code)


def profiler(frame: Any, event: str, arg: Any) -> None:
    if event == "call":
        hook("profile", frame.f_code)


def on_py_start(code: Any, offset: int) -> None:
    hook("monitor", code)


def on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        req = take("gccb")
        if req is not None:
            req.run()


class Finalized:
    """Half of a cycle whose collection runs a parked fiber's request."""

    def __init__(self, token: int) -> None:
        self.token = token
        self.other: Finalized | None = None

    def __del__(self) -> None:
        req = take("del", self.token)
        if req is not None:
            req.run()


class Marker:
    """The one item of a shared list: its repr runs a parked fiber's request."""

    def __init__(self, rid: int) -> None:
        self.rid = rid

    def __repr__(self) -> str:
        req = take("repr", self.rid)
        if req is not None:
            req.run()
        return "M"


class Registration:
    """The process-wide hooks (a sys.monitoring tool, a gc callback), held while any run uses
    them."""

    lock = threading.Lock()
    users = 0

    @classmethod
    def acquire(cls) -> None:
        with cls.lock:
            if cls.users == 0:
                if HAS_MONITORING:
                    mon = sys.monitoring  # type: ignore[attr-defined]
                    if mon.get_tool(MONITOR_TOOL) is None:
                        mon.use_tool_id(MONITOR_TOOL, "stackful-stress")
                    mon.register_callback(MONITOR_TOOL, mon.events.PY_START, on_py_start)
                    for code in (MARKER_CODE, PROBE_CODE):
                        mon.set_local_events(MONITOR_TOOL, code, mon.events.PY_START)
                if on_gc not in gc.callbacks:
                    gc.callbacks.append(on_gc)
            cls.users += 1

    @classmethod
    def release(cls) -> None:
        with cls.lock:
            cls.users -= 1
            if cls.users == 0:
                if HAS_MONITORING:
                    mon = sys.monitoring  # type: ignore[attr-defined]
                    for code in (MARKER_CODE, PROBE_CODE):
                        mon.set_local_events(MONITOR_TOOL, code, 0)
                    mon.register_callback(MONITOR_TOOL, mon.events.PY_START, None)
                    mon.free_tool_id(MONITOR_TOOL)
                while on_gc in gc.callbacks:
                    gc.callbacks.remove(on_gc)


# ---------------------------------------------------------------- entering a place

class Places:
    """The odd places of one thread, over objects shared by every thread's fibers."""

    def __init__(self, root: Fiber, gens: dict[int, Any], contexts: dict[int, Any],
                 containers: dict[int, list[Marker]]) -> None:
        self.root = root
        self.gens = gens
        self.contexts = contexts
        self.containers = containers
        # Trace and profile functions are per thread: installed while any fiber sits in one.
        self.hook_users: dict[str, collections.Counter[int]] = {
            "trace": collections.Counter(), "profile": collections.Counter()}

    def enter(self, kind: str, fid: int, arg: Any, inside: Callable[[], Any],
              resume: Callable[[Any], Any]) -> tuple[str, Any]:
        """Run inside() from within the place: ('ok', its result), or (why not, None).
        `resume(arrival)` carries on a refuse frame after it refused FiberExit."""
        if kind == "sgen":
            return self.enter_generator(arg, inside)
        if kind == "ctx":
            return self.enter_context(arg, inside)
        if kind == "repr":
            return self.enter_repr(fid, arg, inside)
        if kind in HOOKS:
            return self.enter_hook(kind, fid, inside)
        if kind in COLLECTING:
            return self.enter_collection(kind, fid, inside)
        assert kind == "refuse", kind
        return self.enter_refusal(fid, inside, resume)

    def enter_generator(self, gid: int, inside: Callable[[], Any]) -> tuple[str, Any]:
        gen = self.gens[gid]
        try:
            out = gen.send(("serve", inside))
        except ValueError as e:
            if "already executing" not in str(e):
                raise
            return ("busy", None)
        except StopIteration:
            return ("done", None)
        except RuntimeError as e:
            if "cannot reuse already awaited coroutine" not in str(e):
                raise
            return ("done", None)
        return ("ok", out[1])

    def enter_context(self, cid: int, inside: Callable[[], Any]) -> tuple[str, Any]:
        entered = False

        def run() -> Any:
            nonlocal entered
            entered = True
            return inside()

        try:
            return ("ok", self.contexts[cid].run(run))
        except RuntimeError as e:
            if entered or "already entered" not in str(e):
                raise
            return ("busy", None)

    def enter_repr(self, fid: int, rid: int, inside: Callable[[], Any]) -> tuple[str, Any]:
        req = file(Request("repr", fid, rid, inside, carry=False))
        try:
            text = repr(self.containers[rid])
        finally:
            unfile(req)
        if req.out is None:
            assert text == "[...]", text   # this fiber is inside that repr already
        return req.outcome("busy")

    def enter_hook(self, kind: str, fid: int, inside: Callable[[], Any]) -> tuple[str, Any]:
        if kind != "monitor":
            self.hold(kind, fid, 1)
        req = file(Request(kind, fid, None, inside, carry=True))
        try:
            marker()
        finally:
            unfile(req)
            if kind != "monitor":
                self.hold(kind, fid, -1)
        return req.outcome("off")

    def enter_collection(self, kind: str, fid: int, inside: Callable[[], Any]
                         ) -> tuple[str, Any]:
        token = next(TOKENS)
        req = file(Request(kind, fid, token if kind == "del" else None, inside, carry=True))
        try:
            if kind == "del":
                # Filed first: an automatic collection may find the cycle first (it parks
                # there then).  None may run while the cycle is still reachable, though:
                # it would move it to an older generation than the one collected here.
                enabled = gc.isenabled()
                gc.disable()
                try:
                    a, b = Finalized(token), Finalized(token)
                    a.other, b.other = b, a
                    del a, b
                finally:
                    if enabled:
                        gc.enable()
            gc.collect(0)  # the youngest generation holds the cycle, and is quick
        finally:
            unfile(req)
        return req.outcome("busy")

    def enter_refusal(self, fid: int, inside: Callable[[], Any],
                      resume: Callable[[Any], Any]) -> tuple[str, Any]:
        call = inside
        while True:
            try:
                return ("ok", call())
            except FiberExit:  # refused: tell the first live ancestor, carry on from there
                call = functools.partial(self.refused, fid, resume)

    def refused(self, fid: int, resume: Callable[[Any], Any]) -> Any:
        return resume(self.live_parent().switch(Refused(fid)))

    def live_parent(self) -> Fiber:
        """The first ancestor not dead, or the root when the chain loops back without one
        (the core's rule for where a fiber's end goes)."""
        fiber = stackful.current()
        seen = {id(fiber)}
        parent = fiber.parent
        del fiber  # no reference to ourselves from our own frame
        while parent is not None and id(parent) not in seen:
            if not parent.dead:
                return parent
            seen.add(id(parent))
            parent = parent.parent
        return self.root

    # -- trace and profile functions, installed while used

    def hold(self, kind: str, fid: int, delta: int) -> None:
        users = self.hook_users[kind]
        users[fid] += delta
        if users[fid] <= 0:
            del users[fid]
        self.apply(kind)

    def forget(self, fid: int) -> None:
        """A fiber freed without unwinding never leaves its hooks: stop counting it."""
        for kind, users in self.hook_users.items():
            if users.pop(fid, None) is not None:
                self.apply(kind)

    def apply(self, kind: str) -> None:
        want = (tracer if kind == "trace" else profiler) if self.hook_users[kind] else None
        get, put = (sys.gettrace, sys.settrace) if kind == "trace" else (
            sys.getprofile, sys.setprofile)
        if get() is not want:
            put(want)

    # -- what a fiber sees from where it is

    def look(self) -> tuple[Any, ...]:
        """(traced, profiled, monitored, repr of each list, each context's value or 'busy')."""
        PARK.seen = set()
        try:
            probe()
        finally:
            seen, PARK.seen = PARK.seen, None
        reprs = tuple(repr(self.containers[r]) for r in sorted(self.containers))
        ctxs = tuple(self.context_value(self.contexts[c]) for c in sorted(self.contexts))
        return ("trace" in seen, "profile" in seen,
                ("monitor" in seen) if HAS_MONITORING else None, reprs, ctxs)

    @staticmethod
    def context_value(ctx: Any) -> str:
        try:
            return ctx.run(VAR.get)  # type: ignore[no-any-return]
        except RuntimeError as e:
            if "already entered" not in str(e):
                raise
            return "busy"
