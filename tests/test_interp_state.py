"""Interpreter state while a fiber is suspended inside it (interp_state.c).

Per piece of state, the rule this file checks on both sides -- for the fiber suspended inside
and for the others meanwhile:

* the trace/profile/monitoring re-entrance guard: per fiber;
* the repr() recursion guard: per fiber;
* a running garbage collection: per interpreter (as with threads: while one is suspended in a
  finalizer, gc.collect() elsewhere returns 0; it finishes when that fiber resumes);
* a context entered with Context.run: per context object (as with threads).
"""

from __future__ import annotations

import contextvars
import gc
import sys
from typing import Any

import pytest

import stackful
from stackful import Fiber


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
