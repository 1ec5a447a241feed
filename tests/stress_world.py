"""The fibers' side of the stress run (tests/stress.py): what every fiber runs.

A pool of fibers all run one small interpreter (`World.serve`): whatever a fiber's
pending switch() returns is its next command, and it reports to the root what
it did.  Worker threads' fibers run `World.foreign_main` instead: they enter the
odd places of a plan and park.
"""

from __future__ import annotations

import contextvars
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Generator
from typing import Any

import stackful
from stackful import Fiber, FiberError, FiberExit

from .stress_model import ROOT, Msg, Report, Result
from .stress_places import KINDS, VAR, Marker, Places, Refused

MODES = ("one", "pair", "kw", "none")
BIG = stackful.DEFAULT_STACK_SIZE
WORKER_DEPTH = 100        # Python levels the worker's deepest nesting needs (bursts aside)
MAX_FRAMES = 5            # frames a fiber may sit in at once
MAX_DEEP = 150            # total Python levels of 'deep' frames (default-size stacks only)
MAX_CDEEP = 12            # total Python-C-Python levels of 'cdeep' frames (likewise)
JOIN_TIMEOUT = 60         # seconds a worker thread may take


def recursion_budget(stack_size: int) -> tuple[int, int]:
    """How deep Python, and Python-C-Python, code may recurse in a fiber with
    this stack: the core scales both budgets to the stack's size."""

    def depth(dive: Callable[[int, Callable[[], Any]], Any]) -> int:
        n = 1
        while True:
            try:
                dive(n, lambda: None)
            except RecursionError:
                return n - 1
            n += 1 if n < 32 else WORKER_DEPTH

    return (Fiber(lambda: depth(dive), stack_size=stack_size).switch(),
            Fiber(lambda: depth(cdive), stack_size=stack_size).switch())


def worker_fits(stack_size: int) -> bool:
    py, c = recursion_budget(stack_size)
    return py >= WORKER_DEPTH and c >= 8   # shared-generator sends nest through C


class StressError(Exception):
    def __init__(self, key: int) -> None:
        super().__init__(key)
        self.key = key


class Handled(Exception):
    """The exception an 'except' frame sits in the handler of."""

    def __init__(self, key: int) -> None:
        super().__init__(key)
        self.key = key


class StressFiber(Fiber):
    fid: int


class StressDelFiber(StressFiber):
    """A subclass with __del__: it runs, then the fiber is killed (or discarded)."""
    log: dict[int, list[Any]]

    def __del__(self) -> None:
        self.log.setdefault(self.fid, []).append("del")


class DiscardWarnings:
    """Counts the core's ResourceWarnings for discarded fibers (and shows none of them),
    process-wide, while any run is on."""

    PREFIX = "stackful: a suspended fiber was freed"
    lock = threading.Lock()
    users = 0
    count = 0
    saved: Any = None

    @classmethod
    def acquire(cls) -> None:
        with cls.lock:
            if cls.users == 0:
                cls.saved = warnings.catch_warnings()
                cls.saved.__enter__()
                warnings.filterwarnings("always", message=cls.PREFIX, category=ResourceWarning)
                show = warnings.showwarning

                def counting(message: Any, category: Any, *args: Any, **kw: Any) -> None:
                    if category is ResourceWarning and str(message).startswith(cls.PREFIX):
                        cls.count += 1
                    else:
                        show(message, category, *args, **kw)

                warnings.showwarning = counting
            cls.users += 1

    @classmethod
    def release(cls) -> None:
        with cls.lock:
            cls.users -= 1
            if cls.users == 0:
                cls.saved.__exit__(None, None, None)
                cls.saved = None


# ---------------------------------------------------------------- the fibers' side

def exc_key() -> int | None:
    exc = sys.exc_info()[1]
    if exc is None:
        return None
    return exc.key if isinstance(exc, Handled) else -1


class World:
    """The real fibers and what they logged."""

    def __init__(self, contexts: list[int], containers: list[int]) -> None:
        self.root = stackful.current()
        self.fibers: dict[int, StressFiber] = {}
        self.foreign: list[StressFiber] = []        # parked by a worker thread that exited
        self.refs: dict[int, weakref.ref[StressFiber]] = {}
        self.received: list[tuple[int, int]] = []
        self.finally_log: dict[int, list[Any]] = {}
        self.violations: list[str] = []
        self.mailbox: dict[int, Msg] = {}
        self.shared: dict[int, Any] = {}             # generators and coroutines
        self.gen_frames: dict[int, Any] = {}         # their frame objects, kept
        self.contexts = {cid: contextvars.Context() for cid in contexts}
        self.containers = {rid: [Marker(rid)] for rid in containers}
        self.places = Places(self.root, self.shared, self.contexts, self.containers)

    def name(self, fid: int) -> str:
        return "root" if fid == ROOT else f"s{fid}"

    def send(self, target: Fiber, to: int, msg: Msg) -> Any:
        """Switch to `target` carrying msg packed the way msg.mode says."""
        if msg.mode == "one":
            return target.switch(msg)
        if msg.mode == "pair":
            return target.switch(msg, msg.key)
        if msg.mode == "kw":
            return target.switch(msg, k=msg.key)
        self.mailbox[to] = msg
        return target.switch()

    def unpack(self, fid: int, raw: Any) -> Any:
        """What arrived at fid's pending switch, checked against the packing rules."""
        if isinstance(raw, Msg):
            if raw.mode != "one":
                self.violations.append(f"{fid}: {raw.mode} message arrived bare")
            return raw
        if raw == ():
            msg = self.mailbox.pop(fid, None)
            if msg is None or msg.mode != "none":
                self.violations.append(f"{fid}: () arrived with nothing in the mailbox")
            return msg
        if isinstance(raw, tuple) and len(raw) == 2:
            a, b = raw
            if isinstance(a, Msg) and b == a.key and a.mode == "pair":
                return a
            if (isinstance(a, tuple) and len(a) == 1 and isinstance(a[0], Msg)
                    and b == {"k": a[0].key} and a[0].mode == "kw"):
                return a[0]
        if isinstance(raw, (Result, FiberExit, Refused)):
            return raw
        self.violations.append(f"{fid}: unexpected arrival {raw!r}")
        return raw

    def unpack_first(self, fid: int, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        if kw:
            return self.unpack(fid, (args, kw))
        if len(args) == 1:
            return self.unpack(fid, args[0])
        return self.unpack(fid, args)

    def report(self, fid: int, key: int | None, what: str, extra: Any = None) -> Any:
        """Tell the root; return the next thing that arrives here."""
        rep = Report(fid, key, what, stackful.current().name, VAR.get(), exc_key(), extra)
        return self.unpack(fid, self.root.switch(rep))

    # -- what one fiber runs

    def main(self, fid: int, *args: Any, **kw: Any) -> Result:
        pop = self.serve(fid, self.unpack_first(fid, args, kw))
        return Result(fid, pop.key)

    def serve(self, fid: int, item: Any) -> Msg:
        """Handle arrivals at one nesting level until a 'pop' command; return it."""
        while True:
            if not isinstance(item, Msg):
                item = self.report(fid, None, "got", describe(item))
                continue
            self.received.append((fid, item.key))
            op = item.action[0]
            if op == "pop":
                return item
            item = getattr(self, "do_" + op)(fid, item)

    def do_push(self, fid: int, msg: Msg) -> Any:
        kind = msg.action[1]
        def inside() -> Msg:
            return self.serve(fid, self.report(fid, msg.key, "pushed"))

        if kind in KINDS:
            def resume(raw: Any) -> Msg:
                return self.serve(fid, self.unpack(fid, raw))

            arg = msg.action[2] if len(msg.action) > 2 else None
            outcome, pop = self.places.enter(kind, fid, arg, inside, resume)
            if outcome != "ok":
                return self.report(fid, msg.key, f"{kind}-{outcome}")
        elif kind == "catch":
            try:
                pop = inside()
            except StressError as e:
                caught = e.key
                e.__traceback__ = None  # see Stress.expect
            else:
                return self.report(fid, pop.key, "popped")
            return self.report(fid, msg.key, "caught", caught)
        elif kind == "except":
            try:
                raise Handled(msg.key)
            except Handled:
                pop = inside()
        elif kind == "guard":
            try:
                pop = inside()
            finally:
                self.finally_log.setdefault(fid, []).append(msg.key)
        elif kind == "deep":
            pop = dive(msg.action[2], inside)
        elif kind == "cdeep":
            pop = cdive(msg.action[2], inside)
        else:
            raise AssertionError(kind)
        return self.report(fid, pop.key, "popped")

    def do_report(self, fid: int, msg: Msg) -> Any:
        return self.report(fid, msg.key, "report")

    def do_look(self, fid: int, msg: Msg) -> Any:
        return self.report(fid, msg.key, "look", self.places.look())

    def do_setvar(self, fid: int, msg: Msg) -> Any:
        VAR.set(msg.action[1])
        return self.report(fid, msg.key, "set")

    def do_burst(self, fid: int, msg: Msg) -> Any:
        py_levels, c_levels = msg.action[1], msg.action[2]
        outcome = "ok"
        try:
            if dive(py_levels, lambda: 7) != 7:
                self.violations.append(f"{fid}: python burst returned wrong value")
            nested: list[Any] = []
            for _ in range(c_levels):
                nested = [nested]
            if len(repr(nested)) != 2 * c_levels + 2:
                self.violations.append(f"{fid}: C burst returned wrong value")
        except RecursionError:
            outcome = "limited"
        return self.report(fid, msg.key, "burst", outcome)

    def target_of(self, to: int) -> Fiber:
        return self.root if to == ROOT else self.fibers[to]

    def do_hop(self, fid: int, msg: Msg) -> Any:
        to, inner = msg.action[1], msg.action[2]
        target = self.target_of(to)
        try:
            raw = self.send(target, to, inner)
        except FiberError as e:
            if "finished" not in str(e):
                raise
            self.mailbox.pop(to, None)
        else:
            return self.unpack(fid, raw)
        return self.report(fid, msg.key, "hop-failed")  # outside the handler: exc_info clean

    def do_throwto(self, fid: int, msg: Msg) -> Any:
        target = self.target_of(msg.action[1])
        try:
            raw = target.throw(StressError(msg.action[2]))
        except FiberError as e:
            if "finished" not in str(e):
                raise
        else:
            return self.unpack(fid, raw)
        return self.report(fid, msg.key, "throw-failed")

    def do_killto(self, fid: int, msg: Msg) -> Any:
        target = self.target_of(msg.action[1])
        try:
            got = target.kill()
        except FiberError:
            what = "kill-failed"
        else:
            return self.report(fid, msg.key, "killed", describe(got))
        return self.report(fid, msg.key, what)

    def do_gen(self, fid: int, msg: Msg) -> Any:
        gen = self.shared[msg.action[1]]
        try:
            out = gen.send(("switch", fid, msg.key) if msg.action[2] else ("name",))
        except ValueError as e:
            if "already executing" not in str(e):
                raise
            out = ("busy",)
        except StopIteration:
            out = ("done",)
        except RuntimeError as e:
            if "cannot reuse already awaited coroutine" not in str(e):
                raise
            out = ("done",)
        if out[0] in ("busy", "done"):
            return self.report(fid, msg.key, "gen-" + out[0])
        if out[0] == "name":
            return self.report(fid, msg.key, "gen", out[1])
        return self.unpack(fid, out[1])

    # -- generators and coroutines handed between fibers

    def shared_step(self, cmd: tuple[Any, ...]) -> tuple[str, Any]:
        if cmd[0] == "name":
            return ("name", stackful.current().name)
        if cmd[0] == "serve":  # a fiber sits in here while it serves (stress_places)
            return ("served", cmd[1]())
        _, fid, key = cmd
        rep = Report(fid, key, "gen-switch", stackful.current().name, VAR.get(), exc_key())
        return ("raw", self.root.switch(rep))

    def make_generator(self) -> Generator[Any, Any, None]:
        cmd = yield None
        while True:
            cmd = yield self.shared_step(cmd)

    async def make_coroutine(self) -> None:
        cmd = await Suspend(None)
        while True:
            cmd = await Suspend(self.shared_step(cmd))


    # -- what a worker thread's fiber runs

    def foreign_main(self, places: Places, home: Fiber, fid: int,
                     plan: list[tuple[str, Any]]) -> None:
        """Enter each place of `plan` in turn (recording which it could), then park."""
        log: list[tuple[str, str]] = []

        def step(i: int) -> Any:
            if i == len(plan):
                return home.switch(tuple(log))
            kind, arg = plan[i]

            def inside() -> Any:
                log.append((kind, "in"))
                return step(i + 1)

            if kind == "guard":
                try:
                    return inside()
                finally:
                    self.finally_log.setdefault(fid, []).append(i)
            outcome, value = places.enter(kind, fid, arg, inside, lambda raw: None)
            if outcome == "ok":
                return value
            log.append((kind, outcome))
            return step(i + 1)

        step(0)


class Suspend:
    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self.value)


def describe(value: Any) -> Any:
    if isinstance(value, FiberExit):
        return "exit"
    if isinstance(value, Result):
        return ("result", value.fid, value.key)
    if isinstance(value, Refused):
        return ("refused", value.fid)
    return value


def dive(levels: int, then: Callable[[], Any]) -> Any:
    return then() if levels <= 0 else dive(levels - 1, then)


def cdive(levels: int, then: Callable[[], Any]) -> Any:
    """Recurse through C: map's __next__ calls the lambda from C code."""
    return then() if levels <= 0 else next(map(lambda _: cdive(levels - 1, then), (0,)))


# Stack sizes whose budgets hold the worker's nesting (the smallest fail on
# 3.11, where one counter limits Python and C recursion together).
STACK_SIZES = (None,) + tuple(
    size for size in (stackful.MIN_STACK_SIZE, 64 * 1024, 256 * 1024, 1024 * 1024)
    if worker_fits(size))
