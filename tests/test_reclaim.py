"""Fibers nobody can reach (reclaim.c): killed when collected, discarded when they cannot be.

A suspended fiber that cannot be unwound -- its thread exited, or it caught FiberExit and
switched away -- is freed without running. Each test parks a fiber at an odd place (inside a
generator, a collection, a trace function, repr(), Context.run, asyncio.run), discards it both
ways, and checks that the thread is exactly as usable as before: no pointer into the freed stack
(the stack is then reused by other fibers before anything is touched), nothing left "entered".

Only the tests that unwind are leak-checked: a discarded fiber leaks what its frames held on
their value stacks in the middle of a call (CPython keeps those stack pointers in C locals of
the eval loop, so they cannot be known), which is one reason discarding is loud.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import stackful
from stackful import Fiber, FiberExit

from ._support import run_crash_script

Place = Callable[[Callable[[], None]], Any]


def park_refusing_exit(home: Fiber) -> None:
    """Switch to `home`; if killed, refuse: switch back there instead of exiting."""
    while True:
        try:
            home.switch("parked")
            return
        except FiberExit:
            continue


def reuse_stacks(n: int = 8) -> None:
    """Run fibers over the pooled stacks, so that a stale pointer would read live garbage."""
    def deep(k: int) -> int:
        return deep(k - 1) + 1 if k else len([object() for _ in range(50)])

    for _ in range(n):
        assert Fiber(deep, stack_size=64 * 1024).switch(10) == 60


def discard_on_this_thread(place: Place, context: contextvars.Context | None = None) -> None:
    """Park a fiber inside `place`, then drop it: it refuses FiberExit and is discarded.
    `context`: the fiber's context, set before it starts."""
    root = stackful.current()
    f = Fiber(lambda: place(lambda: park_refusing_exit(root)), stack_size=64 * 1024)
    f.context = context
    assert f.switch() == "parked"
    before = stackful.discarded_fibers()["ignored_exit"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del f
        gc.collect()
    assert stackful.discarded_fibers()["ignored_exit"] == before + 1


def discard_after_thread_exit(place: Place, context: contextvars.Context | None = None
                              ) -> None:
    """Park a fiber inside `place` on another thread, let the thread exit, drop the fiber."""
    kept: list[Fiber] = []

    def thread_body() -> None:
        root = stackful.current()
        f = Fiber(lambda: place(lambda: root.switch("parked")), stack_size=64 * 1024)
        f.context = context
        assert f.switch() == "parked"
        kept.append(f)

    t = threading.Thread(target=thread_body)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive() and len(kept) == 1
    before = stackful.discarded_fibers()["thread_exited"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        kept.clear()
        gc.collect()
    assert stackful.discarded_fibers()["thread_exited"] == before + 1


DISCARDS = [discard_on_this_thread, discard_after_thread_exit]


@pytest.fixture(params=DISCARDS, ids=["ignored-exit", "thread-exit"])
def discard(request: pytest.FixtureRequest) -> Callable[[Place], None]:
    return request.param  # type: ignore[no-any-return]


# -- class 1: subclasses with __del__ ---------------------------------------------------------


class LoggingFiber(Fiber):
    log: list[str] = []

    def __del__(self) -> None:
        LoggingFiber.log.append("del")


def suspended_logging_fiber() -> LoggingFiber:
    root = stackful.current()

    def body() -> None:
        try:
            root.switch()
        except FiberExit:
            LoggingFiber.log.append("exit")
            raise
        finally:
            LoggingFiber.log.append("finally")

    f = LoggingFiber(body)
    f.switch()
    return f


@pytest.mark.leak_check
def test_subclass_with_del_is_still_unwound_when_dropped() -> None:
    LoggingFiber.log = []
    f = suspended_logging_fiber()
    del f
    assert LoggingFiber.log == ["del", "exit", "finally"]


@pytest.mark.leak_check
def test_subclass_with_del_is_still_unwound_when_collected_in_a_cycle() -> None:
    LoggingFiber.log = []
    f = suspended_logging_fiber()
    f.me = f  # type: ignore[attr-defined]
    del f
    gc.collect()
    assert LoggingFiber.log == ["del", "exit", "finally"]


@pytest.mark.leak_check
def test_subclass_with_del_inside_a_generator_is_unwound() -> None:
    root = stackful.current()
    log: list[str] = []

    class F(Fiber):
        def __del__(self) -> None:
            log.append("del")

    def gen() -> Iterator[int]:
        try:
            yield root.switch()
        finally:
            log.append("generator finally")

    def body() -> None:
        for _ in gen():
            pass

    f = F(body)
    f.switch()
    del f
    gc.collect()
    assert log == ["del", "generator finally"]
    reuse_stacks()


def test_del_assigned_after_start_still_frees_loudly() -> None:
    """A __del__ set on the class after a fiber started replaces the finalizer: the fiber
    is then discarded (counted, warned), never left dangling."""
    root = stackful.current()

    class F(Fiber):
        pass

    f = F(lambda: root.switch())
    f.switch()
    F.__del__ = lambda self: None  # type: ignore[attr-defined]
    before = stackful.discarded_fibers()["finalizer_skipped"]
    with pytest.warns(ResourceWarning, match="finalizer did not run"):
        del f
        gc.collect()
    assert stackful.discarded_fibers()["finalizer_skipped"] == before + 1
    reuse_stacks()


# -- class 2: freed without unwinding, pointers left behind ---------------------------------


def test_generator_it_was_running_is_closed(discard: Callable[[Place], None]) -> None:
    kept: list[Any] = []

    def inside_generator(park: Callable[[], None]) -> None:
        def gen() -> Iterator[int]:
            park()
            yield 1

        g = gen()
        kept.append(g)
        next(g)

    discard(inside_generator)
    reuse_stacks()
    g = kept[0]
    assert not g.gi_running
    assert g.gi_frame is None
    with pytest.raises(StopIteration):
        next(g)
    g.close()


def test_frame_object_of_a_running_generator_stays_readable(
        discard: Callable[[Place], None]) -> None:
    kept: list[Any] = []

    def inside_generator(park: Callable[[], None]) -> None:
        def gen() -> Iterator[int]:
            kept.append(sys._getframe())
            park()
            yield 1

        next(gen())

    discard(inside_generator)
    reuse_stacks()
    frame = kept[0]
    assert frame.f_code.co_name == "gen"
    assert frame.f_back is None
    assert "park" in frame.f_locals


def test_coroutine_it_was_running_is_closed(discard: Callable[[Place], None]) -> None:
    kept: list[Any] = []

    class Yield:
        def __await__(self) -> Iterator[None]:
            yield None

    def inside_coroutine(park: Callable[[], None]) -> None:
        async def inner() -> None:
            park()
            await Yield()

        async def outer() -> None:
            await inner()

        c = outer()
        kept.append(c)
        c.send(None)

    discard(inside_coroutine)
    reuse_stacks()
    c = kept[0]
    assert not c.cr_running
    assert c.cr_frame is None
    with pytest.raises(RuntimeError, match="cannot reuse"):
        c.send(None)


def test_async_generator_it_was_running_is_closed(discard: Callable[[Place], None]) -> None:
    kept: list[Any] = []

    def inside_async_generator(park: Callable[[], None]) -> None:
        async def agen() -> Any:
            park()
            yield 1

        a = agen()
        kept.append(a)
        a.asend(None).send(None)

    discard(inside_async_generator)
    reuse_stacks()
    a = kept[0]
    assert not a.ag_running
    assert a.ag_frame is None
    with pytest.raises(StopAsyncIteration):
        a.asend(None).send(None)  # finished, not "already running"


def test_dead_threads_fiber_in_a_reference_cycle_is_discarded() -> None:
    kept: list[Fiber] = []

    def thread_body() -> None:
        root = stackful.current()

        def body() -> None:
            me = stackful.current()  # noqa: F841  (the frame holds the fiber: a cycle)
            root.switch()

        f = Fiber(body)
        f.switch()
        kept.append(f)

    t = threading.Thread(target=thread_body)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the thread did not finish in 60 s"
    before = stackful.discarded_fibers()["thread_exited"]
    ref = __import__("weakref").ref(kept.pop())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert ref() is None
    assert stackful.discarded_fibers()["thread_exited"] == before + 1


def test_collection_on_a_discarded_fiber_with_gc_callbacks_cleared() -> None:
    """Without its gc.callbacks entry the core cannot tell which fiber a running collection
    is on: a fiber discarded during one keeps its stack (quarantined) and the collection is
    not abandoned; the entry is put back for the collections to come."""
    result = run_crash_script("collection_without_callbacks.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["quarantined=1", "callback_back=True"]


def test_collection_on_a_discarded_fiber_parked_in_a_gc_callback_ahead_of_the_cores() -> None:
    """A gc.callbacks entry put ahead of the core's parks a fiber at the start of a
    collection (the core's entry has not seen it start); the fiber is discarded: the
    collection is abandoned, its stack quarantined, and collecting works again.  A fiber
    discarded before it, parked outside any entry, is not the collection's: freed as usual."""
    result = run_crash_script("collection_callback_ahead.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["other_quarantined=0", "still_collecting=True",
                                     "collected=True", "quarantined=1"]


def suspended_fiber_of_an_exited_thread() -> Fiber:
    """A fiber parked on a thread that has exited: dropping it discards it."""
    kept: list[Fiber] = []

    def thread_body() -> None:
        root = stackful.current()
        f = Fiber(lambda: root.switch("parked"), stack_size=64 * 1024)
        assert f.switch() == "parked"
        kept.append(f)

    t = threading.Thread(target=thread_body)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the thread did not finish in 60 s"
    return kept.pop()


@pytest.mark.parametrize("dropped_by", ["entry", "thread"])
@pytest.mark.parametrize("where", ["after the core's entry, at 'stop'",
                                   "ahead of the core's entry, at 'start'"])
def test_fiber_discarded_while_gc_callbacks_run_is_not_the_collections(where: str,
                                                                      dropped_by: str) -> None:
    """While a collection runs a gc.callbacks entry other than the core's -- one after it at
    'stop', or one ahead of it at 'start' (hypothesis inserts one at the front) -- a fiber is
    dropped: by that entry, or by another thread (the entry is Python code: the GIL changes
    hands; the case the stress model found on four threads).  The collection runs on another
    fiber: the dropped one's stack is freed, not quarantined, and the collection is not
    abandoned (a gc.collect() meanwhile still finds one running)."""
    victim = [suspended_fiber_of_an_exited_thread()]
    seen: dict[str, int] = {}
    ahead = where.startswith("ahead")

    def drop() -> None:
        before = stackful.discarded_fibers()
        victim.clear()
        after = stackful.discarded_fibers()
        seen["discarded"] = after["thread_exited"] - before["thread_exited"]
        seen["quarantined"] = after["quarantined_stacks"] - before["quarantined_stacks"]
        seen["nested"] = gc.collect()

    def entry(phase: str, info: dict[str, int]) -> None:
        if phase != ("start" if ahead else "stop") or not victim:
            return
        if dropped_by == "entry":
            drop()
        else:
            t = threading.Thread(target=drop)
            t.start()
            t.join(60)  # the collection waits here, still running
            assert not t.is_alive()

    if ahead:
        gc.callbacks.insert(0, entry)
    else:
        gc.callbacks.append(entry)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    finally:
        gc.callbacks.remove(entry)
    assert seen == {"discarded": 1, "quarantined": 0, "nested": 0}
    reuse_stacks()


def test_collection_it_was_suspended_in_is_forgotten(discard: Callable[[Place], None]) -> None:
    """A finalizer run by the collector switched away: while the fiber is suspended there, no
    collection can run (per interpreter, as with threads); once it is discarded, collection
    works again and its stack is quarantined, never reused."""
    gc.collect()
    observed: dict[str, int] = {}

    def inside_collection(park: Callable[[], None]) -> None:
        class Finalized:
            def __del__(self) -> None:
                park()

        a, b = Finalized(), Finalized()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        del a, b
        gc.collect()

    root = stackful.current()
    quarantined = stackful.discarded_fibers()["quarantined_stacks"]
    if discard is discard_on_this_thread:
        f = Fiber(lambda: inside_collection(lambda: park_refusing_exit(root)),
                  stack_size=64 * 1024)
        assert f.switch() == "parked"
        observed["while_suspended"] = gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            del f
    else:
        discard(inside_collection)
    assert observed.get("while_suspended", 0) == 0
    assert stackful.discarded_fibers()["quarantined_stacks"] == quarantined + 1

    class Cycle:
        pass

    c = Cycle()
    c.me = c  # type: ignore[attr-defined]
    del c
    assert gc.collect() >= 1
    reuse_stacks()


def test_trace_function_it_was_suspended_in(discard: Callable[[Place], None]) -> None:
    calls: list[str] = []

    def inside_tracer(park: Callable[[], None]) -> None:
        def tracer(frame: Any, event: str, arg: Any) -> None:
            if event == "call" and frame.f_code.co_name == "traced_once":
                sys.settrace(None)
                park()
            return None

        def traced_once() -> None:
            pass

        sys.settrace(tracer)
        traced_once()

    discard(inside_tracer)

    def probe() -> None:
        pass

    def recorder(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            calls.append(frame.f_code.co_name)

    sys.settrace(recorder)
    try:
        probe()
    finally:
        sys.settrace(None)
    assert "probe" in calls


def test_repr_it_was_suspended_in(discard: Callable[[Place], None]) -> None:
    shared: list[Any] = []

    class Parks:
        def __init__(self, park: Callable[[], None]) -> None:
            self.park = park

        def __repr__(self) -> str:
            self.park()
            return "Parks"

    def inside_repr(park: Callable[[], None]) -> None:
        shared.append(Parks(park))
        repr(shared)

    discard(inside_repr)
    shared[0].park = lambda: None
    assert repr(shared) == "[Parks]"


def test_context_it_had_entered_is_exited(discard: Callable[[Place], None]) -> None:
    ctx = contextvars.copy_context()

    def inside_context(park: Callable[[], None]) -> None:
        ctx.run(park)

    discard(inside_context)
    assert ctx.run(lambda: 42) == 42


def test_its_own_context_entered_with_run_is_exited(discard: Callable[..., None]) -> None:
    """Its context (set before it started) is `ctx`, and it entered ctx itself with ctx.run
    (directly, or inside another context's run): the discard exits it."""
    ctx, other = contextvars.Context(), contextvars.Context()
    discard(lambda park: ctx.run(park), context=ctx)
    assert ctx.run(lambda: 1) == 1
    discard(lambda park: other.run(ctx.run, park), context=ctx)
    assert ctx.run(lambda: 2) == 2
    assert other.run(lambda: 3) == 3


def test_a_context_it_shares_with_a_fiber_inside_its_run_stays_entered() -> None:
    """Its context is `ctx` while another fiber sits inside ctx.run(): that run is not the
    discarded fiber's to end, whether ctx was given before it started or later."""
    root = stackful.current()
    ctx = contextvars.Context()
    holder = Fiber(lambda: ctx.run(lambda: root.switch("inside")) or "left")
    assert holder.switch() == "inside"
    discard_on_this_thread(lambda park: park(), context=ctx)
    f = Fiber(lambda: park_refusing_exit(root), stack_size=64 * 1024)
    assert f.switch() == "parked"
    f.context = ctx  # given while suspended (not inside a run of its own)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del f
        gc.collect()
    with pytest.raises(RuntimeError, match="already entered"):
        ctx.run(lambda: None)
    assert holder.switch() == "left"  # its run() exits cleanly
    assert ctx.run(lambda: 4) == 4


def test_asyncio_loop_it_was_running_is_stopped(discard: Callable[[Place], None]) -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    def inside_asyncio(park: Callable[[], None]) -> None:
        async def main() -> None:
            loops.append(asyncio.get_running_loop())
            park()

        asyncio.run(main())

    discard(inside_asyncio)
    assert not loops[0].is_running()

    async def fine() -> int:
        return 7

    assert asyncio.run(fine()) == 7


def test_discarding_a_fiber_in_a_loop_leaves_the_running_loop_and_hooks_alone() -> None:
    # The root runs a loop of its own while a fiber parked inside another loop is discarded:
    # the root's running loop and async generator hooks are its own, untouched.
    def inside_asyncio(park: Callable[[], None]) -> None:
        async def main() -> None:
            park()

        asyncio.run(main())

    async def root_main() -> tuple[bool, bool]:
        loop, hooks = asyncio.get_running_loop(), sys.get_asyncgen_hooks()
        discard_on_this_thread(inside_asyncio)
        await asyncio.sleep(0)
        return asyncio.get_running_loop() is loop, sys.get_asyncgen_hooks() == hooks

    assert asyncio.run(root_main()) == (True, True)


def suspended_in_a_call_to(call: str, root: Fiber, log: list[str], box: list[Fiber]
                           ) -> tuple[Any, Any]:
    """k is suspended inside t.throw(ValueError) or t.kill(): t caught what came and parked
    at `root`.  Only k's frame holds t (a local, and the call's operand on its value stack);
    t's frame holds `box`, where k is put.  Weak references to k and t."""
    import weakref

    def t_body() -> None:
        try:
            root.switch("t started")
        except (ValueError, FiberExit):
            try:
                root.switch("t parked", box)
            finally:
                log.append("t finally")

    def k_body(other: Fiber) -> None:
        try:
            other.throw(ValueError) if call == "throw" else other.kill()
        finally:
            log.append("k finally")

    t = Fiber(t_body, stack_size=64 * 1024)
    assert t.switch() == "t started"
    k = Fiber(k_body, stack_size=64 * 1024)
    box.append(k)
    assert k.switch(t)[0] == "t parked"
    return weakref.ref(k), weakref.ref(t)


@pytest.mark.parametrize("call", ["throw", "kill"])
def test_the_operand_of_a_throw_or_kill_it_was_suspended_in_is_released(call: str) -> None:
    """A fiber whose thread exited while it was inside other.throw() or other.kill() is
    discarded: the operands of that call are released, so `other` is freed (and discarded in
    turn) instead of leaking with its stack."""
    kept: list[Fiber] = []
    refs: list[Any] = []

    def thread_body() -> None:
        box: list[Fiber] = []
        refs.extend(suspended_in_a_call_to(call, stackful.current(), [], box))
        kept.append(box.pop())

    t = threading.Thread(target=thread_body)
    t.start()
    t.join(60)
    assert not t.is_alive() and len(kept) == 1
    before = stackful.discarded_fibers()["thread_exited"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        kept.clear()
        gc.collect()
    assert [r() for r in refs] == [None, None]
    assert stackful.discarded_fibers()["thread_exited"] == before + 2  # k, then t


@pytest.mark.parametrize("call", ["throw", "kill"])
def test_a_cycle_through_the_operand_of_a_throw_or_kill_is_collected(call: str) -> None:
    """The collector sees the operand of a throw() or kill() a fiber is suspended in (as it
    does a switch()'s): a cycle through it is collected, both fibers killed."""
    log: list[str] = []
    refs = suspended_in_a_call_to(call, stackful.current(), log, [])  # t's box holds k
    gc.collect()
    assert [r() for r in refs] == [None, None]
    assert sorted(log) == ["k finally", "t finally"]


# -- class 7: no unbounded growth, one warning text per cause --------------------------------


def test_discard_warnings_do_not_grow_the_registry() -> None:
    """Each discard warns, with one text per cause: the warnings registry (keyed by text)
    holds one entry however many fibers are discarded, not one per fiber."""
    root = stackful.current()
    registry = globals().setdefault("__warningregistry__", {})
    registry.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default", ResourceWarning)
        for _ in range(200):
            g = Fiber(lambda: park_refusing_exit(root))
            g.switch()
            del g
    assert len(caught) == 1
    assert len([k for k in registry if k != "version"]) == 1


def test_killing_for_collection_does_not_swallow_ctrl_c() -> None:
    """Ctrl-C raised while a collected fiber unwinds has no caller to go to: it is raised
    again in the code that runs next instead of being lost as unraisable."""
    import _thread

    root = stackful.current()

    def body() -> None:
        try:
            root.switch()
        finally:
            _thread.interrupt_main()
            for _ in range(10_000):
                pass

    f = Fiber(body)
    f.switch()
    with pytest.raises(KeyboardInterrupt):
        del f
        for _ in range(1_000_000):
            pass


def test_thread_exit_discard_is_counted() -> None:
    before = stackful.discarded_fibers()
    discard_after_thread_exit(lambda park: park())
    after = stackful.discarded_fibers()
    assert after["thread_exited"] == before["thread_exited"] + 1
    assert set(after) == {"thread_exited", "ignored_exit", "at_shutdown", "finalizer_skipped",
                          "quarantined_stacks"}
