"""stackful.monkey's hybrid threading and queue: one object shared by tasks (of one or more
runtimes) and plain threads; a task parks where a thread blocks, and each wakes the other."""

from __future__ import annotations

import _thread
import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import stackful
import stackful.lowlevel
from stackful import _hybrid_locks
from stackful._core import BLOCKED

from ._monkey import Gate, patched_fixture
from ._net import BOUND, run_bounded, thread

__all__ = ["patched_fixture"]


class Signal:
    """A one-shot signal between threads on a raw ``_thread`` lock (no patch reaches it):
    the tests' own orchestration, which must block the thread even in a task."""

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()

    def set(self) -> None:
        self._lock.release()

    def wait(self) -> None:
        assert self._lock.acquire(True, BOUND), "a signal never came"


def ticker(ticks: list[int], stop: Callable[[], bool]) -> None:
    """A task that counts its turns: it only advances while no task holds the thread."""
    while not stop():
        ticks.append(1)
        stackful.sleep(0.001)


@pytest.fixture(name="lock_factory", params=["Lock", "RLock"])
def lock_factory_fixture(request: pytest.FixtureRequest, patched: None) -> Callable[[], Any]:
    """threading.Lock or threading.RLock, patched: every lock test runs on both."""
    factory: Callable[[], Any] = getattr(threading, request.param)
    return factory


def test_patched_names_make_hybrid_objects(patched: None) -> None:
    assert isinstance(threading.Lock(), _hybrid_locks.Lock)
    assert isinstance(threading.RLock(), _hybrid_locks.RLock)
    assert isinstance(threading.Condition()._lock, _hybrid_locks.RLock)  # type: ignore[attr-defined]
    assert isinstance(threading.Event()._cond._lock, _hybrid_locks.Lock)  # type: ignore[attr-defined]
    assert isinstance(queue.Queue().mutex, _hybrid_locks.Lock)
    assert isinstance(queue.SimpleQueue(), _hybrid_locks.SimpleQueue)


# -- a lock shared by a task and a plain thread, both ways ---------------------------------------


def test_a_thread_waits_for_a_lock_a_task_holds(lock_factory: Callable[[], Any]) -> None:
    lock = lock_factory()
    taken = Signal()
    order: list[str] = []

    def in_thread() -> None:
        taken.wait()
        assert lock.acquire(timeout=BOUND)  # blocks this thread until the task releases
        order.append("thread has it")
        lock.release()

    def main() -> None:
        with lock:
            taken.set()
            order.append("task holds it")
            stackful.sleep(0.05)  # the thread is blocked meanwhile
            order.append("task releases")

    with thread(in_thread):
        run_bounded(main)
    assert order == ["task holds it", "task releases", "thread has it"]
    assert not lock.locked()


def test_a_task_parks_for_a_lock_a_thread_holds(lock_factory: Callable[[], Any]) -> None:
    lock = lock_factory()
    held, go = Signal(), Signal()
    ticks: list[int] = []

    def in_thread() -> None:
        with lock:
            held.set()
            go.wait()

    def main() -> None:
        held.wait()
        done = False
        t = stackful.spawn(ticker, ticks, lambda: done)

        def waiter() -> bool:
            got = bool(lock.acquire(timeout=BOUND))
            lock.release()
            return got

        w = stackful.spawn(waiter)
        stackful.sleep(0.05)
        assert w.state is BLOCKED and ticks  # the others ran while w waited
        go.set()  # the thread releases: the wake crosses into this runtime
        assert w.join() is True
        done = True
        t.join()

    with thread(in_thread):
        run_bounded(main)
    assert not lock.locked()


def test_a_lock_between_tasks_of_two_runtimes(lock_factory: Callable[[], Any]) -> None:
    lock = lock_factory()
    held = Signal()
    events: list[str] = []

    def other_runtime() -> None:
        def main() -> None:
            with lock:
                held.set()
                stackful.sleep(0.05)
                events.append("other released")

        run_bounded(main)

    def main() -> None:
        held.wait()
        with lock:  # parks until the other runtime's task releases
            events.append("this has it")

    with thread(other_runtime):
        run_bounded(main)
    assert events == ["other released", "this has it"]


def test_mutual_exclusion_across_runtimes_and_threads(lock_factory: Callable[[], Any]) -> None:
    lock = lock_factory()
    counter = [0]
    per_worker = 100

    def critical() -> None:
        with lock:
            value = counter[0]
            time.sleep(0)  # a task yields here: another must still not get in
            counter[0] = value + 1

    def runtime_of_tasks() -> None:
        def main() -> None:
            tasks = [stackful.spawn(lambda: [critical() for _ in range(per_worker)])
                     for _ in range(5)]
            for t in tasks:
                t.join()

        run_bounded(main)

    def plain() -> None:
        for _ in range(per_worker):
            critical()

    with thread(runtime_of_tasks), thread(runtime_of_tasks), thread(plain), thread(plain):
        runtime_of_tasks()
    assert counter[0] == per_worker * (5 * 3 + 2)


def test_timeouts_both_ways(lock_factory: Callable[[], Any]) -> None:
    lock = lock_factory()
    held, go = Signal(), Signal()

    def in_thread() -> None:
        with lock:
            held.set()
            go.wait()

    def main() -> bool:
        held.wait()
        got = lock.acquire(timeout=0.02)
        assert not lock.acquire(blocking=False)
        go.set()
        return bool(got)

    with thread(in_thread):
        assert run_bounded(main) is False

    # A thread times out on a lock a task holds.
    results: list[bool] = []

    def main2() -> None:
        with lock:
            t = threading.Thread(target=lambda: results.append(lock.acquire(timeout=0.02)))
            t.start()
            t.join()  # in a task: waits on a worker thread, the lock stays held meanwhile

    run_bounded(main2)
    assert results == [False]
    assert not lock.locked()


def test_cancelled_waiter_leaves_the_line(lock_factory: Callable[[], Any]) -> None:
    lock = lock_factory()

    def main() -> list[str]:
        got: list[str] = []
        lock.acquire()
        a = stackful.spawn(lambda: (lock.acquire(), got.append("a"), lock.release()))
        b = stackful.spawn(lambda: (lock.acquire(), got.append("b"), lock.release()))
        stackful.sleep(0.01)
        a.cancel()
        with pytest.raises(stackful.Cancelled):
            a.join()
        lock.release()  # goes to b, not to the cancelled a
        b.join()
        return got

    assert run_bounded(main) == ["b"]
    assert not lock.locked()


def test_a_grant_from_a_thread_to_a_task_cancelled_before_the_wake_is_passed_on(
        lock_factory: Callable[[], Any]) -> None:
    # The thread releases to the parked task (the wake is posted), but the task is cancelled
    # before its runtime delivers that wake: the lock must go on, not stay with nobody.
    lock = lock_factory()
    held, released = Signal(), Signal()
    proceed = Signal()

    def in_thread() -> None:
        with lock:
            held.set()
            proceed.wait()
        released.set()

    def main() -> None:
        held.wait()
        w = stackful.spawn(lock.acquire)
        stackful.sleep(0.01)  # w parks
        proceed.set()
        released.wait()  # blocks this thread: the posted wake cannot be delivered yet
        assert lock.locked()  # granted to w
        w.cancel()  # its abort passes the lock on: nobody else waits, so it is free
        assert not lock.locked()
        with pytest.raises(stackful.Cancelled):
            w.join()

    with thread(in_thread):
        run_bounded(main)
    assert not lock.locked()


def test_no_deadlock_report_while_a_thread_holds_the_lock(lock_factory: Callable[[], Any]) -> None:
    # Every task is parked on the lock and nothing else is pending: only the thread can wake
    # them, which is no deadlock.
    lock = lock_factory()
    held = Signal()

    def in_thread() -> None:
        with lock:
            held.set()
            time.sleep(0.1)

    def main() -> None:
        held.wait()
        with lock:
            pass

    with thread(in_thread):
        # No timeout scope: its timer would keep the runtime waiting anyway.  The run is
        # bounded by running it on a thread of its own, joined with a bound.
        with thread(lambda: stackful.run(main)):
            pass


def test_hybrid_locks_outside_runtimes_keep_the_stdlib_contract(
        lock_factory: Callable[[], Any]) -> None:
    lock = lock_factory()
    with pytest.raises(RuntimeError):
        lock.release()
    with pytest.raises(ValueError, match="non-blocking"):
        lock.acquire(False, 1)
    with pytest.raises(ValueError):
        lock.acquire(timeout=-2)
    with pytest.raises(OverflowError):
        lock.acquire(timeout=1e300)
    assert lock.acquire() and lock.locked()
    assert repr(lock).startswith("<locked stackful hybrid")
    lock.release()
    assert not lock.locked()


def test_rlock_owner_is_the_task(patched: None) -> None:
    rlock = threading.RLock()

    def main() -> None:
        def other() -> tuple[bool, bool]:
            try:
                rlock.release()
                released = True
            except RuntimeError:
                released = False
            return rlock.acquire(blocking=False), released

        with rlock, rlock:  # reentrant for its owner
            assert rlock._recursion_count() == 2  # type: ignore[attr-defined]
            # Another task of the same thread is another owner.
            assert stackful.spawn(other).join() == (False, False)
        assert not rlock.locked()

    run_bounded(main)


# -- what the stdlib builds on the locks ----------------------------------------------------------


def test_condition_between_a_task_and_a_thread_both_ways(patched: None) -> None:
    cond = threading.Condition()
    state: list[str] = []

    def in_thread() -> None:
        with cond:
            assert cond.wait_for(lambda: "task" in state, BOUND)
            state.append("thread")
            cond.notify_all()

    def main() -> None:
        stackful.sleep(0.01)
        with cond:
            state.append("task")
            cond.notify_all()
            assert cond.wait_for(lambda: "thread" in state, BOUND)

    with thread(in_thread):
        run_bounded(main)
    assert state == ["task", "thread"]


def test_cancelled_condition_wait_leaves_holding_the_lock(patched: None) -> None:
    cond = threading.Condition()

    def main() -> None:
        def waiter() -> None:
            with cond:
                try:
                    cond.wait()
                finally:
                    assert cond._is_owned()  # type: ignore[attr-defined]

        w = stackful.spawn(waiter)
        stackful.sleep(0.01)
        with cond:  # hold it while w is cancelled: its re-acquire must wait for us
            w.cancel()
            stackful.sleep(0.01)
        with pytest.raises(stackful.Cancelled):
            w.join()
        assert not cond._lock.locked()  # type: ignore[attr-defined]

    run_bounded(main)


def test_event_set_by_a_thread_wakes_many_tasks(patched: None) -> None:
    event = threading.Event()
    ticks: list[int] = []

    def main() -> None:
        done = False
        t = stackful.spawn(ticker, ticks, lambda: done)
        waiters = [stackful.spawn(event.wait, BOUND) for _ in range(20)]
        stackful.sleep(0.02)
        assert ticks  # the ticker ran while twenty tasks waited
        threading.Timer(0.01, event.set).start()
        assert [w.join() for w in waiters] == [True] * 20
        done = True
        t.join()

    run_bounded(main)


def test_semaphores_between_tasks_and_threads(patched: None) -> None:
    sem = threading.BoundedSemaphore(2)
    inside = [0]
    most = [0]
    guard = _thread.allocate_lock()

    def use() -> None:
        with sem:
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.005)
            with guard:
                inside[0] -= 1

    def main() -> None:
        tasks = [stackful.spawn(use) for _ in range(10)]
        for t in tasks:
            t.join()

    with thread(lambda: [use() for _ in range(10)]):
        run_bounded(main)
    assert most[0] == 2
    with pytest.raises(ValueError):
        sem.release()


def test_barrier_of_tasks_and_a_thread(patched: None) -> None:
    barrier = threading.Barrier(3, timeout=BOUND)
    passed: list[str] = []

    def cross(who: str) -> None:
        barrier.wait()
        passed.append(who)

    def main() -> None:
        tasks = [stackful.spawn(cross, f"task{i}") for i in range(2)]
        for t in tasks:
            t.join()

    with thread(lambda: cross("thread")):
        run_bounded(main)
    assert sorted(passed) == ["task0", "task1", "thread"]


def test_queue_from_a_producer_thread_to_consumer_tasks(patched: None) -> None:
    q: queue.Queue[int | None] = queue.Queue(maxsize=5)
    n, consumers = 1000, 10

    def producer() -> None:
        for i in range(n):
            q.put(i, timeout=BOUND)
        for _ in range(consumers):
            q.put(None, timeout=BOUND)

    def consume() -> list[int]:
        got = []
        while (item := q.get(timeout=BOUND)) is not None:
            got.append(item)
            q.task_done()
        q.task_done()
        return got

    def main() -> list[int]:
        tasks = [stackful.spawn(consume) for _ in range(consumers)]
        return sorted(x for t in tasks for x in t.join())

    with thread(producer):
        assert run_bounded(main) == list(range(n))
    assert q.unfinished_tasks == 0  # so join() returns at once: a miscount fails, not hangs
    q.join()


def test_bounded_queue_from_producer_tasks_to_a_consumer_thread(patched: None) -> None:
    q: queue.LifoQueue[int] = queue.LifoQueue(maxsize=1)  # every put past one parks a task
    got: list[int] = []

    def consumer() -> None:
        for _ in range(100):
            got.append(q.get(timeout=BOUND))

    def main() -> None:
        tasks = [stackful.spawn(lambda i=i: [q.put(10 * i + j) for j in range(10)])
                 for i in range(10)]
        for t in tasks:
            t.join()

    with thread(consumer):
        run_bounded(main)
    assert sorted(got) == list(range(100))


def test_simple_queue_both_ways_and_timeouts(patched: None) -> None:
    to_tasks: queue.SimpleQueue[int] = queue.SimpleQueue()
    to_thread: queue.SimpleQueue[int] = queue.SimpleQueue()

    def in_thread() -> None:
        for i in range(50):
            to_tasks.put(i)
            assert to_thread.get(timeout=BOUND) == i + 1000

    def main() -> None:
        with pytest.raises(queue.Empty):
            queue.SimpleQueue().get_nowait()
        for _ in range(50):
            to_thread.put(to_tasks.get(timeout=BOUND) + 1000)
        with pytest.raises(queue.Empty):
            to_tasks.get(timeout=0.01)
        with pytest.raises(ValueError):
            to_tasks.get(timeout=-1)

    with thread(in_thread):
        run_bounded(main)
    assert to_tasks.empty() and to_thread.qsize() == 0


def test_an_item_handed_to_a_cancelled_task_goes_back_first(patched: None) -> None:
    q: queue.SimpleQueue[str] = queue.SimpleQueue()
    go, handed = Signal(), Signal()

    def main() -> list[str]:
        w = stackful.spawn(q.get)
        stackful.sleep(0.01)  # w parks
        t = threading.Thread(target=lambda: (go.wait(), q.put("first"), handed.set()))
        t.start()
        go.set()
        handed.wait()  # blocks this thread: the posted wake waits
        w.cancel()
        with pytest.raises(stackful.Cancelled):
            w.join()
        q.put("second")
        t.join()
        return [q.get_nowait(), q.get_nowait()]

    assert run_bounded(main) == ["first", "second"]


# -- threads themselves -------------------------------------------------------------------


def test_thread_start_and_join_park_the_task(patched: None) -> None:
    event = threading.Event()

    def main() -> list[str]:
        order: list[str] = []
        t = threading.Thread(target=lambda: order.append(f"thread saw {event.wait(BOUND)}"))
        t.start()

        def setter() -> None:
            stackful.sleep(0.02)
            order.append("set")
            event.set()

        s = stackful.spawn(setter)
        t.join()  # a blocked thread here would never let setter run: the wait would time out
        s.join()
        return order

    assert run_bounded(main) == ["set", "thread saw True"]

    def errors() -> None:
        with pytest.raises(RuntimeError, match="before it is started"):
            threading.Thread(target=lambda: None).join()
        with pytest.raises(RuntimeError, match="current thread"):
            threading.current_thread().join()

    run_bounded(errors)


def test_futures_of_a_thread_pool_from_concurrent_tasks(patched: None) -> None:
    n = 20
    gate = Gate(n)

    def main() -> list[bool]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
            def one() -> bool:
                return pool.submit(gate.wait).result(timeout=BOUND)

            tasks = [stackful.spawn(one) for _ in range(n)]
            return [t.join() for t in tasks]

    # Each task parks in result(); the next one submits meanwhile, so all n are in the gate.
    assert run_bounded(main) == [True] * n


@pytest.fixture(autouse=True)
def _no_threads_left_behind() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        left = [t for t in threading.enumerate() if t not in before and not t.daemon]
        if not left:
            return
        time.sleep(0.01)
    raise AssertionError(f"threads left running: {left}")


def test_randomized_lock_traffic_with_cancels_and_timeouts(
        lock_factory: Callable[[], Any]) -> None:
    # Tasks of two runtimes and two plain threads hammer one lock with random timeouts while a
    # task cancels its neighbours at random: never two holders, the lock free at the end.
    import random

    lock = lock_factory()
    guard = _thread.allocate_lock()
    holders = [0]
    taken = [0]
    rounds = 60

    def hold() -> None:
        with guard:
            holders[0] += 1
            assert holders[0] == 1, "two holders at once"
            taken[0] += 1
        try:
            time.sleep(0)  # tasks yield here (and may be cancelled), threads give up the GIL
        finally:
            with guard:
                holders[0] -= 1

    def worker(rng: random.Random) -> None:
        for _ in range(rounds):
            timeout = rng.choice([-1, 0, 0.0005, 0.002])
            if lock.acquire(timeout=timeout):
                try:
                    hold()
                finally:
                    lock.release()

    def runtime_of_tasks(seed: int) -> None:
        rng = random.Random(seed)

        def main() -> None:
            tasks = [stackful.spawn(worker, random.Random(rng.random())) for _ in range(8)]

            def canceller() -> None:
                while any(t.state != "finished" for t in tasks):
                    stackful.sleep(rng.choice([0.0005, 0.001]))
                    rng.choice(tasks).cancel()

            stackful.spawn(canceller).join()
            for t in tasks:
                try:
                    t.join()
                except stackful.Cancelled:
                    pass

        run_bounded(main)

    with (thread(lambda: runtime_of_tasks(1)), thread(lambda: worker(random.Random(2))),
          thread(lambda: worker(random.Random(3)))):
        runtime_of_tasks(4)
    assert taken[0] > 0 and holders[0] == 0
    assert not lock.locked()
