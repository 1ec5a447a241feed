"""Interpreter state while a fiber is suspended inside it (interp_state.c).

Per piece of state, the rule this file checks on both sides -- for the fiber suspended inside
and for the others meanwhile:

* the trace/profile/monitoring re-entrance guard: per fiber;
* the repr() recursion guard: per fiber;
* a running garbage collection: per interpreter (as with threads: while one is suspended in a
  finalizer, gc.collect() elsewhere returns 0; it finishes when that fiber resumes);
* a context entered with Context.run: per context object (as with threads);
* recursion limits: sized from the fiber's own stack (3.14+: its bounds, not a budget);
* the trash can's deferred deallocations: freed where there is room, nothing left behind;
* asyncio's running loop (and on 3.14+ its running task), the async generator hooks and the
  coroutine origin tracking depth: per fiber; a fiber class that asks inherits them from
  the fiber that starts it;
* 3.14+: context watchers see a switch that changes the context; switching inside
  JIT-compiled code changes nothing but speed.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import gc
import re
import subprocess
import sys
import types
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import stackful
from stackful import Fiber

from ._support import child_env

PY314 = sys.version_info >= (3, 14)
needs_314 = pytest.mark.skipif(not PY314, reason="new in CPython 3.14")


def test_trace_guard_is_per_fiber() -> None:
    root = stackful.current()
    seen: list[tuple[str, str]] = []

    def tracer(frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return None
        name = frame.f_code.co_name
        seen.append((stackful.current().name, name))
        if name == "victim":
            root.switch("inside tracer")  # suspended with its guard up
            helper()                       # called from the tracer: not traced
        return None

    def helper() -> None:
        pass

    def victim() -> None:
        pass

    def body() -> str:
        sys.settrace(tracer)
        victim()
        sys.settrace(None)
        return "done"

    def probe() -> None:
        pass

    f = Fiber(body, name="A")
    assert f.switch() == "inside tracer"
    sys.settrace(tracer)  # the root traces meanwhile
    probe()
    sys.settrace(None)
    assert ("root", "probe") in seen
    seen.clear()
    sys.settrace(tracer)
    assert f.switch() == "done"
    sys.settrace(None)
    assert ("A", "helper") not in seen


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")
def test_monitoring_callback_guard_is_per_fiber() -> None:
    mon = sys.monitoring  # type: ignore[attr-defined]
    tool = mon.PROFILER_ID
    root = stackful.current()
    starts: list[str] = []

    def on_start(code: Any, offset: int) -> None:
        starts.append(code.co_name)
        if code.co_name == "victim":
            root.switch("inside callback")

    def victim() -> None:
        pass

    def probe() -> None:
        pass

    mon.use_tool_id(tool, "stackful-test")
    try:
        mon.register_callback(tool, mon.events.PY_START, on_start)
        mon.set_events(tool, mon.events.PY_START)
        f = Fiber(lambda: victim() or "done")
        assert f.switch() == "inside callback"
        probe()  # delivered although another fiber sits inside the callback
        assert "probe" in starts
        assert f.switch() == "done"
    finally:
        mon.set_events(tool, 0)
        mon.register_callback(tool, mon.events.PY_START, None)
        mon.free_tool_id(tool)


def lines_seen_after_resume(turn_on_while_suspended: bool, held: tuple[int, ...] = ()
                            ) -> list[int]:
    """Line events from a fiber's function resumed mid-call after LINE monitoring was
    switched on (or off) while it was suspended there; the tool ids `held` are in use by
    others meanwhile."""
    mon = sys.monitoring  # type: ignore[attr-defined]
    tool = mon.DEBUGGER_ID
    for other in held:
        mon.use_tool_id(other, f"held {other}")
    root = stackful.current()
    lines: list[int] = []

    def parked() -> int:
        root.switch("parked")
        a = 1
        b = a + 1
        return b

    first = parked.__code__.co_firstlineno

    def on_line(code: Any, line: int) -> None:
        if code is parked.__code__:
            lines.append(line - first)

    mon.use_tool_id(tool, "stackful-test")
    try:
        mon.register_callback(tool, mon.events.LINE, on_line)
        if not turn_on_while_suspended:
            mon.set_events(tool, mon.events.LINE)
        f = Fiber(parked)
        assert f.switch() == "parked"
        mon.set_events(tool, mon.events.LINE if turn_on_while_suspended else 0)
        lines.clear()
        assert f.switch() == 2
        assert [mon.get_tool(other) for other in held] == [f"held {other}" for other in held]
        return lines
    finally:
        mon.set_events(tool, 0)
        mon.register_callback(tool, mon.events.LINE, None)
        mon.free_tool_id(tool)
        for other in held:
            mon.free_tool_id(other)


needs_monitoring = pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")


@needs_monitoring
def test_monitoring_turned_on_while_suspended_sees_the_resumed_lines() -> None:
    """As a thread's running frames do when a tool turns LINE events on: the code of the
    fiber's frames is instrumented when it lands."""
    assert lines_seen_after_resume(turn_on_while_suspended=True) == [2, 3, 4]


@needs_monitoring
def test_monitoring_turned_off_while_suspended_sees_no_more_lines() -> None:
    assert lines_seen_after_resume(turn_on_while_suspended=False) == []


@pytest.mark.skipif(sys.version_info < (3, 12) or sys.version_info >= (3, 15),
                    reason="3.12-3.14 instrument a code object through a free tool id")
def test_instrumenting_a_resumed_fibers_code_takes_only_a_free_tool_id() -> None:
    """3.12-3.14 borrow a tool id nobody holds: with one free the lines are seen and the
    users' tools are left as they were; with none, the resumed frame's code keeps its old
    instrumentation until it returns (no events, no error)."""
    mon = sys.monitoring  # type: ignore[attr-defined]
    assert lines_seen_after_resume(turn_on_while_suspended=True, held=(1, 2, 3, 4)) == [2, 3, 4]
    assert mon.get_tool(5) is None  # given back
    assert lines_seen_after_resume(turn_on_while_suspended=True, held=(1, 2, 3, 4, 5)) == []


@needs_monitoring
def test_fibers_suspended_in_the_same_function_resume_it_instrumented() -> None:
    """Two fibers suspended mid-call in one function when LINE events come on: the first to
    land instruments the code in place, under the other's suspended frame; each then runs
    the rest of its own call, with its lines seen, and gets its own result."""
    mon = sys.monitoring  # type: ignore[attr-defined]
    tool = mon.DEBUGGER_ID
    root = stackful.current()
    lines: list[tuple[str, int]] = []

    def shared(label: str, first: Any, second: Any) -> str:
        first.switch("parked")
        x = label
        second.switch("parked again")
        x += "!"
        return x

    start = shared.__code__.co_firstlineno

    def on_line(code: Any, line: int) -> None:
        if code is shared.__code__:
            lines.append((stackful.current().name, line - start))

    a: Fiber = Fiber(lambda: shared("a", root, b), name="a")
    b: Fiber = Fiber(lambda: shared("b", root, a), name="b")
    assert a.switch() == "parked"
    assert b.switch() == "parked"
    mon.use_tool_id(tool, "stackful-test")
    try:
        mon.register_callback(tool, mon.events.LINE, on_line)
        mon.set_events(tool, mon.events.LINE)
        # a lands (instruments shared, b suspended in it), switches to b mid-call; b lands,
        # switches to a (b's second.switch()), which finishes to root
        assert a.switch() == "a!"
        assert b.switch() == "b!"
    finally:
        mon.set_events(tool, 0)
        mon.register_callback(tool, mon.events.LINE, None)
        mon.free_tool_id(tool)
    assert lines == [("a", 2), ("a", 3), ("b", 2), ("b", 3), ("a", 4), ("a", 5),
                     ("b", 4), ("b", 5)]


@needs_monitoring
def test_a_fiber_suspended_inside_a_line_callback_lands_in_code_reinstrumented_under_it(
        ) -> None:
    """A fiber suspended inside a LINE callback is mid-instruction in its code; another
    fiber landing instruments that code in place (a hook came on), then LINE goes off and
    the first one's own landing instruments it again, under its own running frame.  It
    returns from the callback into the instruction it was in and runs on unmonitored."""
    mon = sys.monitoring  # type: ignore[attr-defined]
    tool = mon.DEBUGGER_ID
    root = stackful.current()
    lines: list[tuple[str, int]] = []

    def shared(label: str) -> str:
        a = 1
        b = a + 1
        root.switch("parked " + label)
        c = b + 1
        return label + str(c)

    start = shared.__code__.co_firstlineno

    def on_line(code: Any, line: int) -> None:
        if code is shared.__code__:
            lines.append((stackful.current().name, line - start))
            if stackful.current().name == "a" and line - start == 1:
                root.switch("in callback")

    mon.use_tool_id(tool, "stackful-test")
    try:
        mon.register_callback(tool, mon.events.LINE, on_line)
        b = Fiber(lambda: shared("b"), name="b")
        assert b.switch() == "parked b"
        mon.set_events(tool, mon.events.LINE)
        a = Fiber(lambda: shared("a"), name="a")
        assert a.switch() == "in callback"
        sys.setprofile(lambda *args: None)
        try:
            assert b.switch() == "b3"
            mon.set_events(tool, 0)
            assert a.switch() == "parked a"
        finally:
            sys.setprofile(None)
        assert a.switch() == "a3"
    finally:
        mon.set_events(tool, 0)
        mon.register_callback(tool, mon.events.LINE, None)
        mon.free_tool_id(tool)
    assert lines == [("a", 1), ("b", 4), ("b", 5)]


@pytest.mark.skipif(sys.version_info < (3, 12) or sys.version_info >= (3, 15),
                    reason="3.12-3.14 instrument a code object through sys.monitoring")
def test_a_resumed_fibers_code_is_instrumented_once_per_change() -> None:
    """Instrumenting one fiber's code must not make the others' stale again (3.14's
    free_tool_id bumps the interpreter's instrumentation version: were it used, each
    landing would re-instrument every fiber, forever).  Counted at the call that does it:
    each stale code object once, then nothing while fibers only switch."""
    real = sys.monitoring  # type: ignore[attr-defined]
    calls: list[tuple[str, int]] = []

    def set_local_events(tool: int, code: Any, events: int) -> None:
        calls.append((code.co_name, events))
        real.set_local_events(tool, code, events)

    proxy = types.ModuleType("monitoring")
    proxy.__dict__.update(vars(real))
    proxy.set_local_events = set_local_events  # type: ignore[attr-defined]
    root = stackful.current()

    def ping() -> None:
        while True:
            root.switch()

    def pong() -> None:
        while True:
            root.switch()

    fibers = [Fiber(ping), Fiber(pong)]
    for f in fibers:
        f.switch()
    sys.monitoring = proxy  # type: ignore[attr-defined]
    sys.setprofile(lambda *args: None)
    try:
        for _ in range(3):
            for f in fibers:
                f.switch()
    finally:
        sys.setprofile(None)
        sys.monitoring = real  # type: ignore[attr-defined]
    seen = list(calls)
    for f in fibers:
        f.kill()
    assert sorted(name for name, events in seen if events) == ["ping", "pong"]
    assert len(seen) == 4  # each set, then cleared


def test_repr_guard_is_per_fiber() -> None:
    root = stackful.current()
    shared: list[Any] = []

    class Parks:
        def __repr__(self) -> str:
            if stackful.current() is not root:
                root.switch("inside repr")
                # still inside our repr of `shared`: the list shows as [...] to us
                return "Parks" + repr(shared)
            return "Parks"

    shared.append(Parks())
    f = Fiber(lambda: repr(shared))
    assert f.switch() == "inside repr"
    assert repr(shared) == "[Parks]"  # not [...]: the guard entry is the other fiber's
    assert f.switch() == "[Parks[...]]"
    assert repr(shared) == "[Parks]"


def test_a_collection_is_per_interpreter_and_finishes_when_its_fiber_resumes() -> None:
    root = stackful.current()
    gc.collect()
    freed: list[str] = []

    class Finalized:
        def __init__(self, name: str, parks: bool) -> None:
            self.name, self.parks = name, parks

        def __del__(self) -> None:
            freed.append(self.name)
            if self.parks:
                self.parks = False
                root.switch("inside collection")

    def body() -> int:
        a, b = Finalized("a", True), Finalized("b", False)
        a.other, b.other = b, a  # type: ignore[attr-defined]
        del a, b
        return gc.collect()

    f = Fiber(body)
    assert f.switch() == "inside collection"
    assert gc.collect() == 0  # one collection at a time, per interpreter
    assert f.switch() >= 2    # it finishes, freeing the cycle
    assert sorted(freed) == ["a", "b"]

    class Cycle:
        pass

    c = Cycle()
    c.me = c  # type: ignore[attr-defined]
    del c
    assert gc.collect() >= 1


def test_a_gc_callback_that_switches_away_delays_only_the_collection() -> None:
    root = stackful.current()
    phases: list[str] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        phases.append(phase)
        if phase == "start" and stackful.current() is not root and len(phases) == 1:
            root.switch("inside callback")

    gc.callbacks.append(callback)
    try:
        f = Fiber(gc.collect)
        assert f.switch() == "inside callback"
        assert gc.collect() == 0
        f.switch()
        assert f.dead
    finally:
        gc.callbacks.remove(callback)
    assert phases[:2] == ["start", "stop"]


def test_an_entered_context_is_per_object() -> None:
    root = stackful.current()
    ctx = contextvars.copy_context()
    f = Fiber(lambda: ctx.run(lambda: root.switch("inside run")) or "left")
    assert f.switch() == "inside run"
    with pytest.raises(RuntimeError, match="already entered"):
        ctx.run(lambda: None)
    assert f.switch() == "left"
    assert ctx.run(lambda: 5) == 5


def test_the_context_of_a_fiber_inside_context_run_cannot_be_replaced() -> None:
    """Replacing it would leave the entered context entered for good (the run() could never
    exit: the thread state would reference another context): refused, for a suspended
    fiber and for the running one, and the context stays usable."""
    root = stackful.current()
    ctx = contextvars.Context()
    f = Fiber(lambda: ctx.run(lambda: root.switch("inside run")) or "left")
    assert f.switch() == "inside run"
    with pytest.raises(RuntimeError, match=r"inside Context\.run"):
        f.context = contextvars.Context()
    with pytest.raises(RuntimeError, match=r"inside Context\.run"):
        f.context = None
    assert f.context is ctx
    assert f.switch() == "left"
    assert ctx.run(lambda: 5) == 5

    def replace_own() -> str:
        with pytest.raises(RuntimeError, match=r"inside Context\.run"):
            stackful.current().context = contextvars.Context()
        return "refused"

    assert Fiber(lambda: ctx.run(replace_own)).switch() == "refused"
    assert ctx.run(lambda: 6) == 6
    g = Fiber(lambda: root.switch("outside run") or "done")
    assert g.switch() == "outside run"
    g.context = ctx  # not inside run(): allowed
    assert g.context is ctx
    assert g.switch() == "done"


def test_exception_state_and_recursion_depth_stay_per_fiber() -> None:
    root = stackful.current()

    def body() -> str:
        try:
            raise KeyError("in fiber")
        except KeyError:
            root.switch("handling")
            return repr(sys.exc_info()[1])

    f = Fiber(body)
    assert f.switch() == "handling"
    assert sys.exc_info() == (None, None, None)
    assert f.switch() == "KeyError('in fiber')"


@pytest.fixture
def deep_python_recursion() -> Iterator[None]:
    """Lift the Python-level limit, so that only the C stack stops a recursion."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    yield
    sys.setrecursionlimit(before)


def deepest_c_recursion(stack_size: int) -> tuple[int, str]:
    """Levels of Python -> C -> Python recursion a fresh fiber reaches, and the error."""
    reached = [0]

    def dive(n: int) -> Any:
        reached[0] = n
        return sorted([1], key=lambda _: dive(n + 1))

    def body() -> tuple[int, str]:
        try:
            dive(0)
        except RecursionError as e:
            return reached[0], str(e)
        raise AssertionError("no RecursionError")

    result: tuple[int, str] = Fiber(body, stack_size=stack_size).switch()
    return result


def test_c_recursion_is_limited_by_the_fibers_own_stack(deep_python_recursion: None) -> None:
    small, small_error = deepest_c_recursion(256 * 1024)
    large, large_error = deepest_c_recursion(1024 * 1024)
    assert 0 < small and 2 * small < large  # four times the stack: about four times as deep
    if PY314:
        # 3.14+ measure the stack pointer against the running fiber's own bounds.
        for size, error in ((256, small_error), (1024, large_error)):
            used = int(re.search(r"used (\d+) kB", error).group(1))  # type: ignore[union-attr]
            assert size * 3 // 4 < used <= size, error


SMALL_STACKS = r"""
import sys
import stackful

sys.setrecursionlimit(100_000)
nested = []
for _ in range(100_000):
    nested = [nested]
dives = {
    "sorted": lambda n, again: sorted([1], key=lambda _: again(n + 1)),
    "map": lambda n, again: next(map(lambda _: again(n + 1), (0,))),
    "repr": lambda n, again: repr(nested),
}
for size in (stackful.MIN_STACK_SIZE, 48 * 1024, 64 * 1024, 96 * 1024):
    for name, step in dives.items():
        def dive(n, step=step):
            return step(n, dive)
        def body():
            try:
                dive(0)
            except RecursionError:
                return "RecursionError"
        assert stackful.Fiber(body, stack_size=size).switch() == "RecursionError", (size, name)
print("all stopped")
"""


@pytest.mark.no_leak_check  # the work is in a child process
def test_small_stacks_stop_c_recursion_with_an_error_not_a_crash() -> None:
    # In a child: a failure here would be a fatal error or a guard-page abort.
    result = subprocess.run([sys.executable, "-c", SMALL_STACKS], capture_output=True,
                            text=True, timeout=120, env=child_env())
    assert result.returncode == 0, result.stderr
    assert "all stopped" in result.stdout


class Sentinel:
    def __init__(self, freed: list[bool]) -> None:
        self.freed = freed

    def __del__(self) -> None:
        self.freed.append(True)


def deep_graph(freed: list[bool], depth: int = 100_000) -> list[Any]:
    """Nested lists with a Sentinel at the bottom: freeing it recurses `depth` deep."""
    graph: list[Any] = [Sentinel(freed)]
    for _ in range(depth):
        graph = [graph]
    return graph


def frees_inside(stack_size: int) -> bool:
    """Whether a fiber with this stack is big enough to free a deep graph by itself."""
    if stack_size >= stackful.DEFAULT_STACK_SIZE:
        return True
    return PY314 and stack_size >= 256 * 1024  # 3.13 defers below ~320 KiB (README)


@pytest.mark.parametrize("stack_size", [stackful.MIN_STACK_SIZE, 64 * 1024, 256 * 1024,
                                        stackful.DEFAULT_STACK_SIZE])
def test_deep_object_graphs_freed_in_a_fiber_leave_nothing_deferred(stack_size: int) -> None:
    freed: list[bool] = []

    def body() -> bool:
        graph = deep_graph(freed)
        del graph  # the trash can defers what the stack cannot free recursively...
        return bool(freed)

    freed_inside = Fiber(body, stack_size=stack_size).switch()
    if frees_inside(stack_size):
        assert freed_inside  # ...and frees it again on the way back up
    assert freed == [True]  # a small fiber's leftovers are freed where it lands


class SwitchesWhenFreed:
    """Garbage whose finalizer switches to another fiber and back."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def __del__(self) -> None:
        self.log.append(Fiber(lambda: "helper ran").switch())


def test_deferred_garbage_freed_on_landing_may_switch_without_leaking_the_fiber_left() -> None:
    """A small fiber's leftovers are freed where it lands; a finalizer among them that
    switches fibers used to run before the landing had taken over its reference to the
    fiber it came from, and the inner switch overwrote it: that fiber was never freed."""
    log: list[str] = []

    def body() -> None:
        graph: list[Any] = [SwitchesWhenFreed(log)]
        for _ in range(100_000):
            graph = [graph]
        del graph

    small = Fiber(body, stack_size=stackful.MIN_STACK_SIZE)
    small.switch()
    assert log == ["helper ran"]
    left = weakref.ref(small)
    del small
    gc.collect()
    assert left() is None


def test_a_fibers_c_recursion_room_does_not_depend_on_its_thread(
        deep_python_recursion: None) -> None:
    # A root that recursed deep through C before starting a fiber leaves the fiber's
    # room as it is: the fiber's limits describe its own stack, not the thread's.
    def after_root_dive(levels: int) -> int:
        got: list[int] = []

        def dive(n: int) -> None:
            if n:
                sorted([1], key=lambda _: dive(n - 1))
            else:
                got.append(deepest_c_recursion(256 * 1024)[0])

        dive(levels)
        return got[0]

    after_root_dive(0)  # warm-up: specialised code may take a little less stack
    alone = after_root_dive(0)
    assert abs(after_root_dive(60) - alone) <= 2, alone


def context_watcher() -> tuple[list[tuple[int, Any]], Callable[[], None]]:
    """Register a context watcher through the C API; returns its log and its remover."""
    log: list[tuple[int, Any]] = []
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.py_object)

    @callback_type
    def watcher(event: int, ctx: Any) -> int:
        log.append((event, ctx))
        return 0

    add = ctypes.pythonapi.PyContext_AddWatcher
    add.argtypes, add.restype = [callback_type], ctypes.c_int
    clear = ctypes.pythonapi.PyContext_ClearWatcher
    clear.argtypes, clear.restype = [ctypes.c_int], ctypes.c_int
    watcher_id = add(watcher)
    assert watcher_id >= 0

    def remove() -> None:
        assert clear(watcher_id) == 0 and watcher  # the callback lives until here

    return log, remove


CONTEXT_SWITCHED = 1


@needs_314
def test_context_watchers_see_switches_that_change_the_context() -> None:
    root = stackful.current()
    own, shared = contextvars.Context(), contextvars.Context()
    root_context = contextvars.Context()

    def in_own() -> None:
        root.switch()
        stackful.current().context = shared  # like Context.run: the watchers see it

    def in_shared() -> None:
        root.switch()

    f, g = Fiber(in_own), Fiber(in_shared)
    f.context, g.context = own, shared

    def scenario() -> list[tuple[int, Any]]:
        log, remove = context_watcher()
        try:
            f.switch()          # root -> own, and back
            f.switch()          # root -> own, which sets shared; f ends: -> root
            g.switch()          # root -> shared, and back
            same = Fiber(root.switch)
            same.context = root_context
            same.switch()       # the same context on both sides: no event
            same.switch()
            g.switch()          # g ends
        finally:
            remove()
        return log

    log = root_context.run(scenario)
    expected = [own, root_context, own, shared, root_context, shared, root_context,
                shared, root_context]
    assert log == [(CONTEXT_SWITCHED, ctx) for ctx in expected]


class Box:
    f: Fiber


@needs_314
def test_the_gc_sees_operands_of_frames_suspended_in_a_c_call() -> None:
    # 3.14+ frames record their stack pointer before a call that can escape, so a cycle
    # through an operand of a frame that is in the middle of a C call is collected (before
    # 3.14 only the innermost frame's switch() operands are known: see README).
    root = stackful.current()
    holder: dict[str, Box] = {}

    def body() -> Any:
        return (holder.pop("box"), next(map(lambda _: root.switch(), [0])))

    box = Box()
    box.f = f = Fiber(body)
    holder["box"] = box
    f.switch()  # suspended: body's frame is inside next(), the box only on its value stack
    ref = weakref.ref(f)
    del f, box
    gc.collect()
    assert ref() is None


def test_each_fiber_has_its_own_running_asyncio_loop() -> None:
    async def other_loops_work() -> str:
        await asyncio.sleep(0)
        return "other loop done"

    def on_other_fiber() -> tuple[Any, str]:
        loop_here = asyncio._get_running_loop()  # none: nothing runs on this fiber yet
        return loop_here, asyncio.run(other_loops_work())

    async def main() -> tuple[Any, ...]:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        # In the middle of this task's step, a whole other event loop runs to the end
        # on another fiber, then this loop carries on.
        loop_there, result = Fiber(on_other_fiber).switch()
        await asyncio.sleep(0)
        return (loop_there, result,
                asyncio.get_running_loop() is loop, asyncio.current_task() is task)

    outcome = Fiber(lambda: asyncio.run(main())).switch()
    assert outcome == (None, "other loop done", True, True)
    assert asyncio._get_running_loop() is None  # and none leaked to the root


def test_a_suspended_fibers_loop_is_not_running_elsewhere() -> None:
    root = stackful.current()

    async def main() -> None:
        root.switch("suspended inside the loop")
        await asyncio.sleep(0)

    f = Fiber(lambda: asyncio.run(main()))
    assert f.switch() == "suspended inside the loop"
    assert asyncio._get_running_loop() is None
    asyncio.run(asyncio.sleep(0))  # the root may run a loop of its own meanwhile
    f.switch()
    assert f.dead


def test_two_fibers_interleave_their_own_event_loops() -> None:
    # Each fiber is suspended in the middle of its own loop while the other runs its loop.
    root = stackful.current()

    async def main(label: str) -> tuple[str, bool, bool]:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        for _ in range(3):
            root.switch(label)  # suspended inside a task step
            await asyncio.sleep(0)
        return label, asyncio.get_running_loop() is loop, asyncio.current_task() is task

    a = Fiber(lambda: asyncio.run(main("a")))
    b = Fiber(lambda: asyncio.run(main("b")))
    seen = []
    while not (a.dead and b.dead):
        for f in (a, b):
            if not f.dead:
                seen.append(f.switch())
    assert seen[:2] == ["a", "b"]
    assert ("a", True, True) in seen and ("b", True, True) in seen
    assert asyncio._get_running_loop() is None


def test_async_generator_hooks_and_origin_tracking_are_per_fiber() -> None:
    root = stackful.current()

    def firstiter(agen: Any) -> None:
        pass

    def in_fiber() -> tuple[Any, int]:
        sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=None)
        sys.set_coroutine_origin_tracking_depth(7)
        root.switch()
        return sys.get_asyncgen_hooks().firstiter, sys.get_coroutine_origin_tracking_depth()

    before = sys.get_asyncgen_hooks(), sys.get_coroutine_origin_tracking_depth()
    f = Fiber(in_fiber)
    f.switch()
    assert (sys.get_asyncgen_hooks(), sys.get_coroutine_origin_tracking_depth()) == before
    fresh = Fiber(lambda: (sys.get_asyncgen_hooks(), sys.get_coroutine_origin_tracking_depth()))
    assert fresh.switch() == ((None, None), 0)  # a new fiber starts with none, like a thread
    assert f.switch() == (firstiter, 7)


class Inheriting(Fiber):
    __fiber_inherits_asyncio__ = True


def test_a_fiber_class_may_inherit_the_asyncio_state_of_its_starter() -> None:
    async def main() -> tuple[Any, ...]:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        hooks = sys.get_asyncgen_hooks()

        def inside() -> tuple[bool, ...]:
            return (asyncio.get_running_loop() is loop, asyncio.current_task() is task,
                    sys.get_asyncgen_hooks() == hooks)

        inherited = Inheriting(inside).switch()
        plain = Fiber(asyncio._get_running_loop).switch()
        await asyncio.sleep(0)
        return inherited, plain, asyncio.get_running_loop() is loop

    assert asyncio.run(main()) == ((True, True, True), None, True)
    # Started outside any loop, it inherits none.
    assert Inheriting(asyncio._get_running_loop).switch() is None


def test_a_loop_stopped_while_another_fiber_holds_its_own_stays_right() -> None:
    # Fiber a starts a loop, b runs a whole loop from start to end while a is suspended in
    # its own (the thread's entry is replaced twice under a), then a finishes.
    root = stackful.current()

    async def suspended_inside() -> bool:
        loop = asyncio.get_running_loop()
        root.switch()
        return asyncio.get_running_loop() is loop

    a = Fiber(lambda: asyncio.run(suspended_inside()))
    a.switch()
    b = Fiber(lambda: asyncio.run(asyncio.sleep(0, "b done")))
    assert b.switch() == "b done"
    assert a.switch() is True
    assert asyncio._get_running_loop() is None


JIT_WORKLOAD = r"""
import sys
import stackful

root = stackful.current()


def worker(k):
    # A hot loop, compiled by the JIT, that switches away from inside its trace on
    # two iterations out of three and changes type (a side exit) on one out of seven.
    total = 0
    for i in range(40_000):
        v = i if i % 7 else float(i)
        total += root.switch(v) if i % 3 else int(v) * k
    return total


# 3.14's trace optimizer alone takes ~120 KiB of C stack (3.15's ~26 KiB).
fibers = [stackful.Fiber(worker, stack_size=512 * 1024) for _ in range(3)]
values = [f.switch(k + 1) for k, f in enumerate(fibers)]
while not all(f.dead for f in fibers):
    for k, f in enumerate(fibers):
        if not f.dead:
            values[k] = f.switch(1)
print(values)
"""


@pytest.mark.no_leak_check  # the work is in child processes
@pytest.mark.skipif(not getattr(getattr(sys, "_jit", None), "is_available", lambda: False)(),
                    reason="this CPython has no JIT")
def test_fibers_switch_inside_jit_compiled_loops() -> None:
    runs = [subprocess.run([sys.executable, "-c", JIT_WORKLOAD], capture_output=True, text=True,
                           timeout=120, env=child_env(PYTHON_JIT=jit))
            for jit in ("0", "1")]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert runs[1].stdout == runs[0].stdout  # the JIT changes nothing but speed
