"""Lock, Event, Semaphore, Condition: exclusion, FIFO hand-over, timeouts, cancellation, misuse."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from stackful.lowlevel import current_time
from stackful.runtime_api import (
    Cancelled,
    DeadlockError,
    run,
    sleep,
    spawn,
    yield_now,
)
from stackful.sync import Condition, Event, Lock, Semaphore

from ._support import vrun

LOCK_FACTORIES: list[Callable[[], Any]] = [
    Lock, lambda: Semaphore(1), lambda: Semaphore(1, max_value=1),
]
LOCK_IDS = ["Lock", "Semaphore(1)", "bounded Semaphore(1)"]


@pytest.mark.parametrize("factory", LOCK_FACTORIES, ids=LOCK_IDS)
def test_lock_like_gives_mutual_exclusion_in_fifo_order(factory: Callable[[], Any]) -> None:
    inside: list[str] = []
    order: list[str] = []

    def worker(name: str) -> None:
        with factory_lock:
            inside.append(name)
            assert len(inside) == 1, inside
            order.append(name)
            sleep(1)
            inside.remove(name)

    def main() -> None:
        ts = [spawn(worker, n) for n in "abcd"]
        for t in ts:
            t.join()

    factory_lock = factory()
    vrun(main)
    assert order == list("abcd")


@pytest.mark.parametrize("factory", LOCK_FACTORIES, ids=LOCK_IDS)
def test_lock_like_acquire_timeout_and_nonblocking(factory: Callable[[], Any]) -> None:
    def main() -> None:
        lk = factory()

        def hold() -> None:
            lk.acquire()
            sleep(10)
            lk.release()

        holder = spawn(hold)
        yield_now()
        assert lk.acquire(blocking=False) is False
        t0 = current_time()
        assert lk.acquire(timeout=2) is False
        assert current_time() - t0 == 2
        assert lk.acquire(timeout=100) is True  # handed over when the holder releases
        assert current_time() - t0 == 10
        holder.join()
        with pytest.raises(ValueError, match="non-blocking"):
            lk.acquire(blocking=False, timeout=1)
        with pytest.raises(ValueError, match="timeout must be >= 0"):
            lk.acquire(timeout=-1)

    vrun(main)


def test_release_hands_the_lock_to_the_first_waiter_not_the_releaser() -> None:
    order: list[str] = []
    lock = Lock()

    def waiter() -> None:
        with lock:
            order.append("waiter")

    def main() -> None:
        lock.acquire()
        t = spawn(waiter)
        yield_now()  # waiter is now blocked on the lock
        lock.release()
        assert lock.owner is t
        lock.acquire()  # must wait behind the waiter
        order.append("main")
        lock.release()

    run(main)
    assert order == ["waiter", "main"]


def test_releasing_an_unowned_lock_is_a_clear_error() -> None:
    def main() -> None:
        lock = Lock()
        with pytest.raises(RuntimeError, match=r"does not hold this lock \(unlocked\)"):
            lock.release()
        lock.acquire()
        t = spawn(lock.release, name="thief")
        with pytest.raises(RuntimeError, match="held by task 'main'"):
            t.join()
        with pytest.raises(RuntimeError, match="not reentrant"):
            lock.acquire()

    run(main)


def test_cancelled_lock_waiter_leaves_the_queue() -> None:
    def main() -> None:
        lock = Lock()
        lock.acquire()
        t = spawn(lock.acquire)
        yield_now()
        t.cancel()
        with pytest.raises(Cancelled):
            t.join()
        lock.release()
        assert not lock.locked()  # not handed to the cancelled task

    run(main)


def test_deadlock_report_names_the_lock() -> None:
    def main() -> None:
        lock = Lock()
        lock.acquire()
        spawn(lock.acquire, name="second").join()

    with pytest.raises(DeadlockError, match="task 'second' waiting on Lock.acquire"):
        run(main)


def test_event_wakes_all_waiters_and_wait_timeout() -> None:
    woke: list[str] = []

    def main() -> None:
        ev = Event()

        def w(name: str) -> None:
            assert ev.wait() is True
            woke.append(name)

        ts = [spawn(w, n) for n in "xyz"]
        assert ev.wait(timeout=3) is False
        assert current_time() == 3
        ev.set()
        for t in ts:
            t.join()
        assert ev.is_set() and ev.wait() is True
        ev.clear()
        assert not ev.is_set() and ev.wait(timeout=0) is False

    vrun(main)
    assert woke == ["x", "y", "z"]


def test_semaphore_counts_and_bounds() -> None:
    def main() -> None:
        sem = Semaphore(2, max_value=2)
        assert sem.acquire() and sem.acquire()
        assert sem.value == 0 and sem.acquire(blocking=False) is False
        sem.release()
        sem.release()
        with pytest.raises(ValueError, match="released too many times"):
            sem.release()

    run(main)
    with pytest.raises(ValueError, match="must be >= 0"):
        Semaphore(-1)
    with pytest.raises(ValueError, match="below the initial value"):
        Semaphore(3, max_value=2)


def test_semaphore_limits_concurrency() -> None:
    peak = [0, 0]

    def main() -> None:
        sem = Semaphore(3)

        def w() -> None:
            with sem:
                peak[0] += 1
                peak[1] = max(peak[1], peak[0])
                sleep(1)
                peak[0] -= 1

        ts = [spawn(w) for _ in range(10)]
        for t in ts:
            t.join()
        assert current_time() == 4  # ceil(10 / 3) rounds of 1 s

    vrun(main)
    assert peak[1] == 3


def test_condition_producer_consumer() -> None:
    items: list[int] = []
    got: list[int] = []

    def main() -> None:
        cond = Condition()

        def consumer() -> None:
            for _ in range(3):
                with cond:
                    assert cond.wait_for(lambda: items)
                    got.append(items.pop(0))

        c = spawn(consumer)
        for i in range(3):
            sleep(1)
            with cond:
                items.append(i)
                cond.notify()
        c.join()

    vrun(main)
    assert got == [0, 1, 2]


def test_condition_wait_timeout_reacquires_and_misuse() -> None:
    def main() -> None:
        cond = Condition()
        with pytest.raises(RuntimeError, match="does not hold the lock"):
            cond.wait()
        with pytest.raises(RuntimeError, match="does not hold the lock"):
            cond.notify()
        with cond:
            assert cond.wait(timeout=1) is False
            assert cond.lock.locked()
            assert cond.wait_for(lambda: False, timeout=2) is False
        assert current_time() == 3 and not cond.lock.locked()

    vrun(main)


def test_condition_notify_all_and_cancel_keeps_lock_consistent() -> None:
    woke: list[str] = []

    def main() -> None:
        cond = Condition()

        def w(name: str) -> None:
            with cond:
                cond.wait()
                woke.append(name)

        ts = [spawn(w, n) for n in "ab"]
        victim = spawn(w, "victim")
        yield_now()
        victim.cancel()
        with pytest.raises(Cancelled):
            victim.join()
        assert not cond.lock.locked()
        with cond:
            cond.notify_all()
        for t in ts:
            t.join()

    run(main)
    assert woke == ["a", "b"]


def test_primitive_from_another_threads_runtime_is_rejected() -> None:
    lock = Lock()
    errors: list[str] = []
    in_use = threading.Event()
    release = threading.Event()

    def holder_main() -> None:
        lock.acquire()
        in_use.set()
        while not release.is_set():
            sleep(0.001)
        lock.release()

    th = threading.Thread(target=run, args=(holder_main,))
    th.start()
    in_use.wait(5)

    def main() -> None:
        try:
            lock.acquire()
        except RuntimeError as exc:
            errors.append(str(exc))

    try:
        run(main)
    finally:
        release.set()
        th.join()
    assert errors == [
        "Lock.acquire(): this Lock belongs to another runtime "
        "(primitives cannot be shared between threads' runtimes)"
    ]


def test_primitive_used_outside_run() -> None:
    with pytest.raises(RuntimeError, match=r"Lock.acquire\(\) must be called inside stackful.run"):
        Lock().acquire()
    with pytest.raises(RuntimeError, match=r"Event.set\(\) must be called inside stackful.run"):
        Event().set()


def test_primitive_can_serve_consecutive_runs() -> None:
    lock = Lock()

    def main() -> None:
        with lock:
            yield_now()

    run(main)
    run(main)
