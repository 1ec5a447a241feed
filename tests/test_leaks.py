"""Memory, threads, fork and signals: the core under volume and interference."""

from __future__ import annotations

import _thread
import gc
import signal
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import stackful
from stackful import Fiber, FiberExit

from ._support import run_crash_script

CRASH = Path(__file__).parent / "crash"


run_script = run_crash_script


def memory() -> tuple[int, int]:
    gc.collect()
    gc.collect()
    return sys.getallocatedblocks(), len(gc.get_objects())


def churn(count: int) -> None:
    """Create, switch, kill, finish and drop `count` fibers in every way there is."""
    root = stackful.current()
    parked: list[Fiber] = []

    def body(i: int) -> int:
        try:
            got = root.switch(i)
            return got + 1
        finally:
            pass

    for i in range(count):
        f = Fiber(body, stack_size=64 * 1024)
        assert f.switch(i) == i
        how = i % 5
        if how == 0:
            assert f.switch(i) == i + 1       # finishes
        elif how == 1:
            assert f.kill() is None           # killed
        elif how == 2:
            assert isinstance(f.throw(), FiberExit)
        elif how == 3:
            parked.append(f)                  # dropped suspended: collected below
        # how == 4: dropped suspended right here (last reference)
        if len(parked) > 100:
            parked.clear()
            gc.collect()
    parked.clear()


def test_100k_fibers_leave_memory_where_it_started() -> None:
    churn(2000)  # warm-up: pools, caches, interned names
    stackful.clear_stack_pool()
    blocks, objects = memory()
    pool_before = stackful.stack_pool()
    churn(100_000)
    pool = stackful.stack_pool()
    assert pool["pooled"] <= pool["limit"]
    stackful.clear_stack_pool()
    assert stackful.stack_pool()["mapped_bytes"] == pool_before["mapped_bytes"]
    blocks_after, objects_after = memory()
    # A leak of one block or object per fiber would be 100,000.
    assert objects_after - objects < 100, objects_after - objects
    assert blocks_after - blocks < 500, blocks_after - blocks


def test_pool_stays_bounded_with_many_fibers_alive() -> None:
    root = stackful.current()
    limit = stackful.stack_pool()["limit"]
    fibers = [Fiber(lambda: root.switch(), stack_size=64 * 1024) for _ in range(limit + 500)]
    for f in fibers:
        f.switch()
    for f in fibers:
        f.switch()
    assert stackful.stack_pool()["pooled"] <= limit
    fibers.clear()
    stackful.clear_stack_pool()
    assert stackful.stack_pool()["pooled"] == 0


def test_100_threads_exit_with_suspended_fibers() -> None:
    """Each thread finishes three fibers and leaves seven suspended; those outlive
    their thread and are freed without running (no finally, no FiberExit)."""
    ran_finally: list[str] = []
    kept: list[Fiber] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def thread_body(n: int) -> None:
        root = stackful.current()

        def body(i: int) -> None:
            try:
                root.switch(i)
                root.switch(i)
            finally:
                ran_finally.append(f"{n}-{i}")

        if n < 20:
            start.wait(60)  # the first twenty create fibers at the same time (a Barrier)
        fibers = [Fiber(body, stack_size=64 * 1024) for _ in range(10)]
        for i, f in enumerate(fibers):
            assert f.switch(i) == i
        for f in fibers[:3]:
            f.switch()
            f.switch()  # finished: its finally runs here
        with lock:
            kept.extend(fibers)

    blocks, objects = memory()
    threads = [threading.Thread(target=thread_body, args=(n,)) for n in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), f"{t.name} did not finish in 60 s"
    threads.clear()
    finished = sorted(f"{n}-{i}" for n in range(100) for i in range(3))
    assert sorted(ran_finally) == finished
    assert sum(f.state == "suspended" for f in kept) == 700
    refs = [weakref.ref(f) for f in kept]
    kept.clear()
    gc.collect()
    assert sorted(ran_finally) == finished
    assert all(r() is None for r in refs)
    # Freed without running, the fibers leave nothing behind: their locals and the
    # operands of the switch() they were suspended in are released.
    held_here = len(refs) + len(ran_finally) + len(finished)  # weakrefs, strings
    blocks_after, objects_after = memory()
    assert objects_after - objects < held_here + 100, objects_after - objects
    assert blocks_after - blocks < 2 * held_here + 200, blocks_after - blocks


def test_dead_threads_suspended_fibers_leak_nothing() -> None:
    kept: list[Fiber] = []

    def thread_body() -> None:
        root = stackful.current()
        f = Fiber(lambda: root.switch(), stack_size=64 * 1024)
        f.switch()
        kept.append(f)

    def fibers_alive() -> int:
        gc.collect()
        return sum(isinstance(o, Fiber) for o in gc.get_objects())

    before = fibers_alive()
    for _ in range(20):
        t = threading.Thread(target=thread_body)
        t.start()
        t.join(60)
        assert not t.is_alive(), "the thread did not finish in 60 s"
    kept.clear()
    assert fibers_alive() == before  # 20 more: every thread's root fiber


def test_fork_inside_a_fiber() -> None:
    result = run_script("fork_in_fiber.py")
    assert result.returncode == 0, result.stderr
    assert "child ok" in result.stdout
    assert "parent ok 0" in result.stdout


def test_interpreter_exit_in_the_middle_of_stress_is_clean() -> None:
    result = run_script("shutdown_mid_stress.py")
    assert result.returncode == 0, result.stderr
    assert "atexit ran" in result.stdout
    assert "suspended in 4 threads" in result.stdout
    assert "Fatal" not in result.stderr


def test_signal_handler_runs_on_the_fiber_that_is_running() -> None:
    """SIGALRM every 50 µs of CPU while two fibers ping-pong: the handler sees the
    running fiber and its frame; no switch loses or duplicates a value."""
    root = stackful.current()
    seen: list[tuple[str, str]] = []

    def handler(signum: int, frame: Any) -> None:
        name = stackful.current().name
        seen.append((name, frame.f_code.co_name if frame else "-"))

    def ping(n: int) -> int:
        total = 0
        for i in range(n):
            total += pong.switch(i)
        return total

    def pong_body(i: int) -> None:
        while True:
            i = ping_fiber.switch(i * 2)

    ping_fiber = Fiber(ping, name="ping")
    pong = Fiber(pong_body, name="pong", parent=ping_fiber)
    old = signal.signal(signal.SIGPROF, handler)
    signal.setitimer(signal.ITIMER_PROF, 0.00005, 0.00005)
    try:
        n = 200_000
        total = ping_fiber.switch(n)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, old)
    assert total == n * (n - 1)
    assert seen, "no signal arrived"
    # A signal that lands while the handler itself runs (likely when everything is
    # slow, as under AddressSanitizer) interrupts the handler's own frame.
    where = {"ping": {"ping", "handler"}, "pong": {"pong_body", "handler"}, "root": None}
    for name, code in seen:
        assert name in where, name
        if where[name]:
            assert code in where[name], (name, code)
    assert any(code != "handler" for _, code in seen)
    pong.kill()
    assert stackful.current() is root


def test_keyboard_interrupt_during_rapid_switching() -> None:
    """Ctrl-C lands in whichever fiber runs; it propagates to the root like any
    exception, and every other fiber can still be resumed and killed."""
    root = stackful.current()
    stop = threading.Event()

    def spinner(k: int) -> None:
        x = 0
        while True:
            x = root.switch(x + k)

    fibers = [Fiber(spinner, name=f"spin{k}", stack_size=64 * 1024) for k in range(4)]
    for k, f in enumerate(fibers):
        f.switch(k)

    sent = 0

    def interrupter() -> None:
        nonlocal sent
        while not stop.wait(0.01):
            _thread.interrupt_main()
            sent += 1

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    t = threading.Thread(target=interrupter)
    t.start()
    got = None
    deadline = time.monotonic() + 60  # bounded: a lost interrupt fails, never hangs
    try:
        i = 0
        while time.monotonic() < deadline:
            for _ in range(1000):
                i += 1
                f = fibers[i % 4]
                if not f.dead:
                    f.switch(i)
    except KeyboardInterrupt as e:
        got = e
    finally:
        stop.set()
        t.join(60)
        assert not t.is_alive(), "the interrupter thread did not stop in 60 s"
        try:  # a late interrupt may still be pending
            for _ in range(1000):
                pass
        except KeyboardInterrupt:
            pass
    assert got is not None, (f"no KeyboardInterrupt in 60 s from {sent} interrupts; SIGINT "
                             f"handler: {signal.getsignal(signal.SIGINT)!r}")
    assert isinstance(got, KeyboardInterrupt)
    assert stackful.current() is root
    dead = [f for f in fibers if f.dead]
    assert len(dead) <= 1  # the one it was raised in, if not the root
    for k, f in enumerate(fibers):
        if not f.dead:
            assert f.switch(0) == k
            assert f.kill() is None
        assert f.dead


def test_kill_of_an_ancestor_then_return() -> None:
    result = run_script("kill_ancestor.py")
    assert result.returncode == 0, result.stderr
    assert "kill -> None True" in result.stdout
    assert "root got f done" in result.stdout


def test_cycle_through_a_pending_switch_argument_is_collected() -> None:
    root = stackful.current()

    class Box:
        pass

    def boxed(fiber: Fiber) -> Box:
        box = Box()
        box.fiber = fiber  # type: ignore[attr-defined]
        return box

    def body() -> None:
        root.switch(boxed(stackful.current()))  # the box lives on as this call's argument

    f = Fiber(body)
    box = f.switch()
    ref = weakref.ref(f)
    del f, box  # fiber -> (pending argument) box -> fiber
    gc.collect()
    assert ref() is None


def test_cycle_through_the_locals_of_a_generator_suspended_in_a_switch_is_collected() -> None:
    """A generator frame that switched away is running, so before 3.14 its generator
    visits none of its locals: the fiber must, or a generator holding its own fiber is
    never freed (3.11-3.13 leaked it, finally blocks never ran)."""
    log: list[str] = []

    def gen() -> Iterator[None]:
        me = stackful.current()  # the generator's frame holds its fiber
        try:
            yield me.parent.switch("parked")  # type: ignore[union-attr]
        finally:
            log.append("generator")

    def body() -> None:
        g = gen()
        try:
            next(g)
        finally:
            log.append("body")

    f = Fiber(body)
    assert f.switch() == "parked"
    ref = weakref.ref(f)
    del f  # fiber -> body's frame -> g -> g's frame -> me -> fiber
    gc.collect()
    assert ref() is None
    assert log == ["generator", "body"]  # killed, not discarded: both finally blocks ran


def test_c_recursion_error_in_a_small_fiber_leaks_nothing() -> None:
    # 3.13 once leaked here: its trash can defers deallocations in a fiber with little C
    # budget left, and the deferred list was saved with the dying fiber.
    def burst() -> str:
        nested: list[Any] = []
        for _ in range(5000):
            nested = [nested]
        try:
            repr(nested)
        except RecursionError:
            return "limited"
        return "ok"

    Fiber(burst, stack_size=256 * 1024).switch()  # warm-up
    gc.collect()
    before = len(gc.get_objects())
    assert [Fiber(burst, stack_size=256 * 1024).switch() for _ in range(3)] == ["limited"] * 3
    gc.collect()
    assert len(gc.get_objects()) - before < 100  # 15,000 lists on 3.13


def test_an_instance_of_a_python_subclass_visits_its_type_once() -> None:
    """The core's types are static, so a Python subclass's own traverse visits the (heap)
    type; the core's must not visit it again: counted twice per instance, the type's count in
    a collection goes below zero (a debug CPython aborts: "refcount is too small")."""
    import stackful.greenlet as sg

    class F(Fiber):
        pass

    class G(sg.greenlet):
        pass

    found: dict[str, object] = {"Fiber subclass": F(lambda: None),
                                "greenlet subclass": G(run=lambda: None)}

    def main() -> None:
        with stackful.TaskGroup() as tg, stackful.CancelScope() as scope:
            found["TaskGroup"] = tg
            found["CancelScope"] = scope
            found["Task"] = tg.spawn(lambda: None)

    stackful.run(main)
    for name, obj in found.items():
        assert sum(r is type(obj) for r in gc.get_referents(obj)) == 1, name
