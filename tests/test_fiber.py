"""The Fiber type: switching, values, exceptions, lifecycle, introspection, misuse."""

from __future__ import annotations

import contextvars
import gc
import sys
import threading
import time
import weakref
from typing import Any

import pytest

import stackful
from stackful import Fiber, FiberError, FiberExit


def test_issue_example() -> None:
    root = stackful.current()

    def child(a: int, b: int = 0) -> int:
        got = root.switch(a + b)
        return got * 2

    f = Fiber(child, name="child", stack_size=256 * 1024)
    assert f.switch(1, b=2) == 3
    assert f.switch(10) == 20
    assert f.dead


def test_current_is_root_outside_fibers() -> None:
    root = stackful.current()
    assert root is stackful.current()
    assert root.parent is None
    assert root.state == "running"
    assert root.stack_size == 0
    assert root.name == "root"


def test_current_inside_fiber() -> None:
    seen = []
    f = Fiber(lambda: seen.append(stackful.current()))
    f.switch()
    assert seen == [f]


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        ((), {}, ()),
        ((1,), {}, 1),
        ((1, 2), {}, (1, 2)),
        ((None,), {}, None),
        ((), {"a": 1}, {"a": 1}),
        ((1,), {"a": 1}, ((1,), {"a": 1})),
    ],
)
def test_switch_packs_values_like_greenlet(args: tuple[Any, ...], kwargs: dict[str, Any],
                                          expected: Any) -> None:
    root = stackful.current()
    received = []

    def body() -> None:
        received.append(root.switch("ready"))

    f = Fiber(body)
    assert f.switch() == "ready"
    f.switch(*args, **kwargs)
    assert received == [expected]


def test_first_switch_passes_arguments_to_target() -> None:
    f = Fiber(lambda *a, **k: (a, k))
    assert f.switch(1, 2, x=3) == ((1, 2), {"x": 3})


def test_return_value_goes_to_parent_not_switcher() -> None:
    root = stackful.current()
    log = []

    def parent_body() -> str:
        child = Fiber(lambda: "from child")  # parent: this fiber
        log.append(child.switch())
        return "parent done"

    p = Fiber(parent_body)
    assert p.switch() == "parent done"
    assert log == ["from child"]
    assert stackful.current() is root


def test_exception_propagates_to_parent_with_traceback() -> None:
    def fails() -> None:
        raise KeyError("inside")

    f = Fiber(fails)
    with pytest.raises(KeyError, match="inside") as info:
        f.switch()
    names = [entry.name for entry in info.traceback]
    assert "fails" in names
    assert f.dead


def test_exception_goes_to_first_live_ancestor() -> None:
    root = stackful.current()

    def middle() -> None:
        inner = Fiber(lambda: 1 / 0)
        root.switch(inner)  # middle suspends; inner's parent is middle

    m = Fiber(middle)
    inner = m.switch()
    m.kill()
    assert m.dead
    with pytest.raises(ZeroDivisionError):
        inner.switch()  # middle is dead: the error goes to root


def test_switch_to_self_returns_the_arguments() -> None:
    me = stackful.current()
    assert me.switch(5) == 5
    assert me.switch() == ()


def test_states() -> None:
    root = stackful.current()
    states = []

    def body() -> None:
        states.append(stackful.current().state)
        root.switch()

    f = Fiber(body)
    assert (f.state, f.started, f.dead) == ("new", False, False)
    f.switch()
    assert states == ["running"]
    assert (f.state, f.started, f.dead) == ("suspended", True, False)
    f.switch()
    assert (f.state, f.started, f.dead) == ("dead", True, True)


def test_throw_into_suspended_fiber() -> None:
    root = stackful.current()

    def body() -> str:
        try:
            root.switch()
        except ValueError as e:
            return f"caught {e}"
        return "nothing"

    f = Fiber(body)
    f.switch()
    assert f.throw(ValueError, "boom") == "caught boom"


def test_throw_instance_and_traceback() -> None:
    root = stackful.current()
    f = Fiber(lambda: root.switch())
    f.switch()
    try:
        raise RuntimeError("with tb")
    except RuntimeError as e:
        tb = e.__traceback__
        err = e
    with pytest.raises(RuntimeError) as info:
        f.throw(err, None, tb)
    assert info.value is err


def test_throw_into_new_fiber_kills_it_before_it_runs() -> None:
    ran = []
    f = Fiber(lambda: ran.append(1))
    with pytest.raises(ValueError):
        f.throw(ValueError)
    assert ran == []
    assert f.dead


def test_throw_default_is_fiber_exit_which_ends_normally() -> None:
    root = stackful.current()
    f = Fiber(lambda: root.switch())
    f.switch()
    result = f.throw()
    assert isinstance(result, FiberExit)
    assert f.dead


def test_throw_rejects_non_exceptions() -> None:
    f = Fiber(lambda: None)
    with pytest.raises(TypeError, match="exceptions must be classes, or instances"):
        f.throw(42)
    with pytest.raises(TypeError, match="separate value"):
        f.throw(ValueError("x"), "y")
    with pytest.raises(TypeError, match="traceback"):
        f.throw(ValueError, None, "not a traceback")


def test_kill_runs_finally_and_returns_here() -> None:
    root = stackful.current()
    log = []

    def body() -> None:
        try:
            root.switch()
        finally:
            log.append("finally")

    f = Fiber(body)
    f.switch()
    assert f.kill() is None
    assert log == ["finally"]
    assert f.dead
    assert f.kill() is None  # idempotent


def test_kill_new_fiber_never_runs_it() -> None:
    ran = []
    f = Fiber(lambda: ran.append(1))
    f.kill()
    assert f.dead and ran == []
    with pytest.raises(FiberError, match="finished"):
        f.switch()


def test_kill_propagates_other_exceptions() -> None:
    root = stackful.current()

    def body() -> None:
        try:
            root.switch()
        finally:
            raise OSError("cleanup failed")

    f = Fiber(body)
    f.switch()
    with pytest.raises(OSError, match="cleanup failed"):
        f.kill()


def test_kill_root_is_an_error() -> None:
    with pytest.raises(FiberError, match="root"):
        stackful.current().kill()


def test_switch_to_dead_fiber_is_an_error() -> None:
    f = Fiber(lambda: None)
    f.switch()
    with pytest.raises(FiberError, match="finished"):
        f.switch()
    with pytest.raises(FiberError, match="finished"):
        f.throw(ValueError)


def test_non_callable_target() -> None:
    with pytest.raises(TypeError, match="callable"):
        Fiber(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable target"):
        Fiber()


def test_subclass_with_run_method() -> None:
    class Worker(Fiber):
        def run(self, x: int) -> int:
            return x + 1

    w = Worker()
    assert w.switch(1) == 2
    assert isinstance(w, Fiber)


def test_subclasses_take_fibers_arguments_and_their_own_init() -> None:
    class Plain(Fiber):
        __slots__ = ()

    class WithInit(Fiber):
        def __init__(self, tag: str) -> None:
            super().__init__(lambda: tag, name=tag)

    p = Plain(lambda x: x * 2, name="plain", stack_size=stackful.MIN_STACK_SIZE)
    assert (p.name, p.stack_size, p.switch(4)) == ("plain", stackful.MIN_STACK_SIZE, 8)
    with pytest.raises(TypeError, match="unexpected"):
        Plain(lambda: None, colour="red")  # type: ignore[call-arg]
    w = WithInit("tagged")
    assert (w.name, w.switch()) == ("tagged", "tagged")

    # An __init__ given after the class was made still runs.
    def late_init(self: Fiber, tag: str) -> None:
        Fiber.__init__(self, lambda: f"late {tag}")

    Plain.__init__ = late_init  # type: ignore[method-assign, assignment]
    try:
        assert Plain("x").switch() == "late x"  # type: ignore[arg-type]
    finally:
        del Plain.__init__  # type: ignore[misc]


def test_init_subclass_reaches_the_next_class_in_the_mro() -> None:
    seen: list[tuple[str, Any]] = []

    class Registry:
        def __init_subclass__(cls, tag: str = "", **kwargs: Any) -> None:
            super().__init_subclass__(**kwargs)
            seen.append((cls.__name__, tag))

    class Tagged(Fiber, Registry, tag="t"):  # type: ignore[call-arg]
        pass

    assert seen == [("Tagged", "t")]
    assert Tagged(lambda: 5).switch() == 5
    with pytest.raises(TypeError):
        class Bad(Fiber, colour="red"):  # type: ignore[call-arg]
            pass


def test_a_fiber_class_may_start_in_its_starters_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    class Sharing(Fiber):
        __fiber_inherits_context__ = True

    def body() -> str:
        seen = var.get()
        var.set("set inside")
        return seen

    ctx = contextvars.copy_context()

    def starter() -> tuple[str, str, str]:
        var.set("starter's")
        shared = Sharing(body).switch()  # runs in this very context object
        after = var.get()
        own = Fiber(body).switch()  # a plain fiber starts in a context of its own
        return shared, after, own

    assert ctx.run(starter) == ("starter's", "set inside", "unset")
    given = contextvars.Context()
    f = Sharing(body)
    f.context = given  # one given before the start wins
    assert f.switch() == "unset" and given[var] == "set inside"


@pytest.mark.parametrize("size", [-1, 0, 100, stackful.MIN_STACK_SIZE - 1])
def test_too_small_stack_size(size: int) -> None:
    with pytest.raises(ValueError, match="at least"):
        Fiber(lambda: None, stack_size=size)


def test_stack_size_is_rounded_to_pages() -> None:
    f = Fiber(lambda: None, stack_size=stackful.MIN_STACK_SIZE + 1)
    assert f.stack_size > stackful.MIN_STACK_SIZE
    assert f.stack_size % 4096 == 0


def test_default_stack_size_can_change() -> None:
    old = stackful.get_default_stack_size()
    assert old == stackful.DEFAULT_STACK_SIZE == 2 * 1024 * 1024
    try:
        stackful.set_default_stack_size(128 * 1024)
        assert Fiber(lambda: None).stack_size == 128 * 1024
        with pytest.raises(ValueError):
            stackful.set_default_stack_size(10)
    finally:
        stackful.set_default_stack_size(old)


def test_name() -> None:
    f = Fiber(lambda: None, name="worker")
    assert f.name == "worker"
    assert "worker" in repr(f) and "new" in repr(f)
    f.name = "renamed"
    assert f.name == "renamed"
    assert Fiber(lambda: None).name.startswith("Fiber-")
    with pytest.raises(TypeError):
        Fiber(lambda: None, name=3)  # type: ignore[arg-type]


def test_parent_rules() -> None:
    root = stackful.current()
    a = Fiber(lambda: None)
    b = Fiber(lambda: None, parent=a)
    assert a.parent is root and b.parent is a
    with pytest.raises(ValueError, match="cyclic"):
        a.parent = b
    with pytest.raises(ValueError, match="cyclic"):
        a.parent = a
    with pytest.raises(ValueError):
        a.parent = None
    with pytest.raises(TypeError):
        a.parent = 3  # type: ignore[assignment]
    b.parent = root
    assert b.parent is root
    with pytest.raises(ValueError, match="root"):
        root.parent = a


def test_reparenting_changes_where_the_result_goes() -> None:
    root = stackful.current()
    other_log = []

    def other_body() -> None:
        other_log.append(root.switch("other started"))

    other = Fiber(other_body)
    assert other.switch() == "other started"
    f = Fiber(lambda: "result")
    f.parent = other
    f.switch()  # f ends, its result goes to `other`, which then ends -> root
    assert other_log == ["result"]


def test_frame_of_suspended_fiber() -> None:
    root = stackful.current()

    def deep_body() -> None:
        marker = "here"  # noqa: F841
        root.switch()

    f = Fiber(deep_body)
    assert f.frame is None
    f.switch()
    frame = f.frame
    assert frame is not None
    assert frame.f_code.co_name == "deep_body"
    assert frame.f_locals["marker"] == "here"
    assert frame.f_back is None  # a fiber's frames end at its own base
    f.switch()
    assert f.frame is None


def test_frame_of_running_fiber_is_the_callers() -> None:
    def body() -> bool:
        return stackful.current().frame is sys._getframe()

    assert Fiber(body).switch() is True


def test_getframe_and_traceback_inside_fiber() -> None:
    def inner() -> list[str]:
        names = []
        frame = sys._getframe()
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        return names

    def outer() -> list[str]:
        return inner()

    assert Fiber(outer).switch() == ["inner", "outer"]


def test_stack_info() -> None:
    root = stackful.current()
    inside = []

    def body() -> None:
        inside.append(stackful._native.stack_pointer())
        root.switch()

    f = Fiber(body, stack_size=128 * 1024)
    assert f.stack_info() is None
    f.switch()
    info = f.stack_info()
    assert info is not None
    assert info.size == 128 * 1024
    assert info.top - info.base == info.size
    assert info.guard_size >= 4096
    assert info.base <= inside[0] < info.top
    assert 0 < info.used <= info.size
    f.switch()
    assert f.stack_info() is None
    assert root.stack_info() is None


def test_exc_info_is_per_fiber() -> None:
    root = stackful.current()
    seen = []

    def body() -> None:
        seen.append(sys.exc_info()[1])
        try:
            raise KeyError("in fiber")
        except KeyError:
            root.switch()
            seen.append(sys.exc_info()[1])

    f = Fiber(body)
    try:
        raise ValueError("in root")
    except ValueError as e:
        f.switch()
        assert sys.exc_info()[1] is e
        f.switch()
    assert seen[0] is None
    assert isinstance(seen[1], KeyError)
    assert sys.exc_info() == (None, None, None)


def test_contextvars_are_per_fiber() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    root = stackful.current()
    var.set("root")
    log = []

    def body(value: str) -> None:
        log.append(var.get())
        var.set(value)
        root.switch()
        log.append(var.get())

    a, b = Fiber(body), Fiber(body)
    a.switch("a")
    b.switch("b")
    assert var.get() == "root"
    a.switch()
    b.switch()
    assert log == ["unset", "unset", "a", "b"]
    assert var.get() == "root"


def test_context_property() -> None:
    var: contextvars.ContextVar[int] = contextvars.ContextVar("n")
    ctx = contextvars.copy_context()
    ctx.run(var.set, 42)
    f = Fiber(lambda: var.get())
    assert f.context is None
    f.context = ctx
    assert f.context is ctx
    assert f.switch() == 42
    with pytest.raises(TypeError):
        f.context = {}  # type: ignore[assignment]


def test_generator_resumed_from_another_fiber() -> None:
    root = stackful.current()

    def gen() -> Any:
        x = yield stackful.current()
        yield (x, stackful.current())

    g = gen()
    first = next(g)
    f = Fiber(lambda: g.send("hi"))
    assert f.switch() == ("hi", f)
    assert first is root


def test_generator_suspended_in_a_fiber_switch() -> None:
    root = stackful.current()

    def gen() -> Any:
        yield root.switch("from inside generator")
        yield "second"

    f = Fiber(lambda: list(gen()))
    assert f.switch() == "from inside generator"
    assert f.switch("sent") == ["sent", "second"]


def test_coroutine_driven_across_fibers() -> None:
    async def coro() -> int:
        return 7

    c = coro()
    with pytest.raises(StopIteration) as info:
        Fiber(lambda: c.send(None)).switch()
    assert info.value.value == 7


def test_asyncio_run_inside_fiber() -> None:
    import asyncio

    async def main() -> str:
        await asyncio.sleep(0)
        return "async ok"

    assert Fiber(lambda: asyncio.run(main())).switch() == "async ok"


def test_settrace_sees_fiber_frames() -> None:
    events = []

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if event == "call":
            events.append(frame.f_code.co_name)
        return None

    def traced_body() -> None:
        pass

    sys.settrace(tracer)
    try:
        Fiber(traced_body).switch()
    finally:
        sys.settrace(None)
    assert "traced_body" in events


def test_setprofile_sees_switches() -> None:
    root = stackful.current()
    events = []

    def profiled_body() -> None:
        root.switch()

    def profiler(frame: Any, event: str, arg: Any) -> None:
        if frame.f_code.co_name == "profiled_body":
            events.append(event)

    f = Fiber(profiled_body)
    sys.setprofile(profiler)
    try:
        f.switch()
        f.switch()
    finally:
        sys.setprofile(None)
    assert events[0] == "call" and "return" in events


def test_deep_recursion_inside_fiber_raises_recursion_error() -> None:
    def recurse(n: int) -> int:
        return recurse(n + 1)

    f = Fiber(lambda: recurse(0), stack_size=64 * 1024)
    with pytest.raises(RecursionError):
        f.switch()


def test_deep_c_recursion_raises_recursion_error() -> None:
    nested: list[Any] = []
    for _ in range(200_000):
        nested = [nested]
    for size in (stackful.MIN_STACK_SIZE, 256 * 1024, stackful.DEFAULT_STACK_SIZE):
        with pytest.raises(RecursionError):
            Fiber(lambda: repr(nested), stack_size=size).switch()


def test_many_fibers_alive_at_once() -> None:
    root = stackful.current()
    fibers = [Fiber(lambda i=i: root.switch(i) * 2, stack_size=64 * 1024) for i in range(2000)]
    assert [f.switch() for f in fibers] == list(range(2000))
    assert [f.switch(i) for i, f in enumerate(fibers)] == [i * 2 for i in range(2000)]
    assert all(f.dead for f in fibers)


def test_nested_fibers() -> None:
    def level(n: int) -> int:
        if n == 0:
            return 0
        return Fiber(level).switch(n - 1) + 1

    assert Fiber(level).switch(50) == 50


def test_weakref_and_dict() -> None:
    f = Fiber(lambda: None)
    r = weakref.ref(f)
    f.custom = "attribute"
    assert f.custom == "attribute"
    assert r() is f
    del f
    gc.collect()
    assert r() is None


def test_unreachable_suspended_fiber_gets_fiber_exit() -> None:
    root = stackful.current()
    log = []

    def body() -> None:
        try:
            root.switch()
        except FiberExit:
            log.append("exit")
            raise
        finally:
            log.append("finally")

    f = Fiber(body)
    f.switch()
    del f
    assert log == ["exit", "finally"]


def test_cycle_through_suspended_frames_is_collected() -> None:
    root = stackful.current()
    log = []

    class Marker:
        pass

    def body(marker: Marker) -> None:
        me = stackful.current()  # the fiber's frame refers to the fiber: a cycle
        marker.fiber = me  # type: ignore[attr-defined]
        try:
            root.switch()
        finally:
            log.append("finally")

    marker = Marker()
    f = Fiber(body)
    f.switch(marker)
    marker_ref = weakref.ref(marker)
    fiber_ref = weakref.ref(f)
    del f, marker
    gc.collect()
    assert log == ["finally"]
    assert fiber_ref() is None
    assert marker_ref() is None


def test_fiber_refusing_to_exit_is_freed_with_a_warning() -> None:
    root = stackful.current()

    def stubborn() -> None:
        while True:
            try:
                root.switch()
            except FiberExit:
                pass

    f = Fiber(stubborn)
    f.switch()
    before = stackful.discarded_fibers()["ignored_exit"]
    with pytest.warns(ResourceWarning, match="caught FiberExit and switched away"):
        del f
        gc.collect()
    assert stackful.discarded_fibers()["ignored_exit"] == before + 1


def test_each_thread_has_its_own_root() -> None:
    main_root = stackful.current()
    results: dict[str, Any] = {}

    def thread_body() -> None:
        root = stackful.current()
        results["root"] = root
        results["value"] = Fiber(lambda: "in thread").switch()

    t = threading.Thread(target=thread_body)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the thread did not finish in 60 s"
    assert results["root"] is not main_root
    assert results["value"] == "in thread"


def test_switch_to_other_threads_fiber_is_an_error() -> None:
    made: list[Fiber] = []

    def thread_body() -> None:
        f = Fiber(lambda: None)
        made.append(f)

    t = threading.Thread(target=thread_body)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the thread did not finish in 60 s"
    with pytest.raises(FiberError, match="another thread"):
        made[0].switch()
    with pytest.raises(ValueError, match="same thread"):
        Fiber(lambda: None, parent=made[0])


def test_thread_exit_with_suspended_fibers_frees_them_without_running() -> None:
    log = []
    holder: list[Fiber] = []

    def thread_body() -> None:
        root = stackful.current()

        def body() -> None:
            try:
                root.switch()
            finally:
                log.append("ran")

        f = Fiber(body)
        f.switch()
        holder.append(f)

    t = threading.Thread(target=thread_body)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the thread did not finish in 60 s"
    f = holder.pop()
    assert f.state == "suspended"
    del f
    gc.collect()
    assert log == []


def test_dropping_other_threads_fiber_kills_it_on_its_thread() -> None:
    log = []
    handoff: list[Fiber] = []
    dropped = threading.Event()
    done = threading.Event()

    def thread_body() -> None:
        root = stackful.current()

        def body() -> None:
            try:
                root.switch()
            finally:
                log.append(threading.current_thread().name)

        f = Fiber(body)
        f.switch()
        handoff.append(f)
        del f
        assert dropped.wait(60)
        Fiber(lambda: None).switch()  # the next switch on this thread runs the deferred kill
        done.set()

    t = threading.Thread(target=thread_body, name="owner")
    t.start()
    deadline = time.monotonic() + 60
    while not handoff and time.monotonic() < deadline:
        threading.Event().wait(0.001)
    assert handoff, "the owner thread never handed its fiber over"
    handoff.clear()  # last reference dropped on the main thread
    dropped.set()
    assert done.wait(60)
    t.join(60)
    assert not t.is_alive(), "the owner thread did not finish in 60 s"
    assert log == ["owner"]


def test_keyboard_interrupt_reaches_running_fiber() -> None:
    import _thread

    def body() -> str:
        try:
            _thread.interrupt_main()
            for _ in range(1_000_000):
                pass
        except KeyboardInterrupt:
            return "interrupted inside"
        return "not interrupted"

    assert Fiber(body).switch() == "interrupted inside"


def test_fiber_exit_is_base_exception() -> None:
    assert issubclass(FiberExit, BaseException)
    assert not issubclass(FiberExit, Exception)
    assert issubclass(FiberError, Exception)


def test_stack_pool_reuses_stacks() -> None:
    stackful.clear_stack_pool()
    f = Fiber(lambda: stackful.current().stack_info().base, stack_size=96 * 1024)
    base1 = f.switch()
    assert stackful.stack_pool()["pooled"] >= 1
    g = Fiber(lambda: stackful.current().stack_info().base, stack_size=96 * 1024)
    assert g.switch() == base1
    info = stackful.stack_pool()
    assert info["guard_method"] in ("madvise", "mprotect")
    old = info["limit"]
    try:
        assert stackful.stack_pool(0)["pooled"] == 0
    finally:
        stackful.stack_pool(old)
    with pytest.raises(ValueError):
        stackful.stack_pool(-1)


# -- hooks for compatibility layers -------------------------------------------------------------


def test_switch_hook_sees_every_landing() -> None:
    root = stackful.current()
    events: list[tuple[str, str, str]] = []

    def hook(event: str, pair: tuple[Fiber, Fiber]) -> None:
        origin, target = pair
        events.append((event, origin.name, target.name))

    def body() -> None:
        try:
            root.switch()
        except ValueError:
            pass

    f = Fiber(body, name="f")
    assert stackful._native.set_switch_hook(hook) is None
    try:
        f.switch()
        f.throw(ValueError)
    finally:
        assert stackful._native.set_switch_hook(None) is hook
    assert events == [
        ("switch", "root", "f"),
        ("switch", "f", "root"),
        ("throw", "root", "f"),
        ("switch", "f", "root"),  # f ended: its result lands in root
    ]
    assert stackful._native.get_switch_hook() is None


def test_switch_hook_error_replaces_the_transfer() -> None:
    def hook(event: str, pair: tuple[Fiber, Fiber]) -> None:
        if pair[1].name == "victim":
            raise LookupError("from hook")

    f = Fiber(lambda: "ran", name="victim")
    stackful._native.set_switch_hook(hook)
    try:
        with pytest.raises(LookupError, match="from hook"):
            f.switch()  # raised inside f before its target ran, then propagated to us
    finally:
        stackful._native.set_switch_hook(None)
    assert f.dead


def test_switch_hook_must_be_callable() -> None:
    with pytest.raises(TypeError):
        stackful._native.set_switch_hook(3)


def test_dead_switch_to_parent_when_the_class_asks() -> None:
    class Forwarding(Fiber):
        __fiber_dead_switch_to_parent__ = True

    f = Forwarding(lambda: None)
    f.switch()
    assert f.dead
    assert f.switch(7) == 7  # the parent (root) is running: the value comes straight back
    with pytest.raises(KeyError):
        f.throw(KeyError)
    plain = Fiber(lambda: None)
    plain.switch()
    with pytest.raises(FiberError):
        plain.switch()


def test_class_chooses_the_exit_exception() -> None:
    class MyExit(FiberExit):
        pass

    class Custom(Fiber):
        __fiber_exit__ = MyExit

    root = stackful.current()
    seen = []

    def body() -> None:
        try:
            root.switch()
        except BaseException as e:  # noqa: BLE001
            seen.append(type(e))
            raise

    f = Custom(body)
    f.switch()
    f.kill()
    assert seen == [MyExit]
    g = Custom(body)
    g.switch()
    assert isinstance(g.throw(), MyExit)


def test_adopt_root_retypes_this_threads_root() -> None:
    class Compat(Fiber):
        pass

    class WithSlots(Fiber):
        __slots__ = ("x",)

    root = stackful.current()
    try:
        adopted = stackful._native.adopt_root(Compat)
        assert adopted is root and type(root) is Compat
        with pytest.raises(TypeError, match="without storage"):
            stackful._native.adopt_root(WithSlots)
        with pytest.raises(TypeError):
            stackful._native.adopt_root(int)
    finally:
        assert stackful._native.adopt_root(Fiber) is root
    assert type(root) is Fiber


def test_frames_of_a_dead_threads_fiber_stay_readable_after_it_is_freed() -> None:
    holder: list[Any] = []

    def thread_body() -> None:
        root = stackful.current()

        def body(token: str) -> None:
            local_list = [token]  # noqa: F841
            root.switch()

        f = Fiber(body)
        f.switch("kept")
        holder.append(f)
        holder.append(f.frame)  # a frame object that outlives the fiber

    t = threading.Thread(target=thread_body)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the thread did not finish in 60 s"
    frame = holder.pop()
    holder.pop()  # the fiber: freed without running; its frame is copied out
    gc.collect()
    assert frame.f_code.co_name == "body"
    assert frame.f_locals["token"] == "kept"
    assert frame.f_locals["local_list"] == ["kept"]
    assert frame.f_back is None


def test_stacks_past_the_warm_pool_go_cold_and_are_reused() -> None:
    stackful.clear_stack_pool()
    old = stackful.stack_pool()["limit"]
    try:
        stackful.stack_pool(2)
        root = stackful.current()
        fibers = [Fiber(lambda: root.switch(), stack_size=80 * 1024) for _ in range(5)]
        for f in fibers:
            f.switch()
        mapped = stackful.stack_pool()["mapped_bytes"]
        for f in fibers:
            f.switch()
        info = stackful.stack_pool()
        assert (info["pooled"], info["cold"]) == (2, 3)
        assert info["mapped_bytes"] == mapped  # nothing unmapped
        again = [Fiber(lambda: root.switch(), stack_size=80 * 1024) for _ in range(5)]
        for f in again:
            f.switch()
        assert stackful.stack_pool()["mapped_bytes"] == mapped  # all five reused
        for f in again:
            f.switch()
    finally:
        stackful.stack_pool(old)
        stackful.clear_stack_pool()
    assert stackful.stack_pool()["cold"] == 0
