"""Lock, Event, Semaphore, Condition: exclusion, FIFO hand-over, timeouts, cancellation, misuse."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from stackful import lowlevel
from stackful.lowlevel import current_time
from stackful.runtime_api import (
    Cancelled,
    DeadlockError,
    VirtualClock,
    run,
    sleep,
    spawn,
    yield_now,
)
from stackful.sync import Condition, Event, Lock, Semaphore
from stackful.timeouts import timeout

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

    # A daemon, joined with a bound: a holder that never ends fails the test, not the exit.
    th = threading.Thread(target=run, args=(holder_main,), daemon=True)
    th.start()

    def main() -> None:
        try:
            lock.acquire()
        except RuntimeError as exc:
            errors.append(str(exc))

    try:
        assert in_use.wait(5), "the holder's runtime never took the lock"
        run(main)
    finally:
        release.set()
        th.join(10)
    assert not th.is_alive(), "the holder's runtime did not end"
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


# -- cancellation and timeouts landing next to a wake-up -----------------------------------------


@pytest.mark.parametrize("factory", LOCK_FACTORIES, ids=LOCK_IDS)
def test_hand_over_stands_when_a_cancel_lands_before_the_waiter_runs(
    factory: Callable[[], Any],
) -> None:
    log: list[str] = []

    def waiter() -> None:
        with lock:
            log.append("got it")
            sleep(1)  # the pending cancellation is raised here, inside the with
            log.append("unreachable")

    def main() -> None:
        lock.acquire()
        w = spawn(waiter)
        yield_now()
        lock.release()  # hands the lock (unit) to w, which is ready but has not run
        w.cancel()
        with pytest.raises(Cancelled):
            w.join()
        assert log == ["got it"]
        assert lock.acquire(blocking=False)  # w's with-block gave it back
        lock.release()

    lock = factory()
    vrun(main)


def _two_waiters(cond: Condition, woke: list[str]) -> tuple[Any, Any]:
    def waiter(name: str) -> None:
        with cond:
            cond.wait()
            woke.append(name)

    a = spawn(waiter, "a")
    b = spawn(waiter, "b")
    yield_now()
    return a, b


@pytest.mark.parametrize("when", ["before-it-runs", "while-it-reacquires"])
def test_notified_waiter_cancelled_passes_the_notification_on(when: str) -> None:
    woke: list[str] = []

    def main() -> None:
        cond = Condition()
        a, b = _two_waiters(cond, woke)
        with cond:
            cond.notify(1)  # a is notified...
            if when == "before-it-runs":
                a.cancel()  # ...and cancelled before it runs again
            else:
                yield_now()  # ...a now waits for the lock we hold
                assert a.waiting_on == "Lock.acquire"
                a.cancel()
        with pytest.raises(Cancelled):
            a.join()
        b.join(timeout=10)  # b got the notification a could not use
        assert woke == ["b"]
        assert not cond.lock.locked()

    vrun(main)


def test_notified_waiter_timed_out_passes_the_notification_on() -> None:
    woke: list[str] = []

    def main() -> None:
        cond = Condition()

        def impatient() -> None:
            with timeout(1), cond:
                cond.wait()
                woke.append("impatient")

        def patient() -> None:
            with cond:
                cond.wait()
                woke.append("patient")

        a = spawn(impatient)
        b = spawn(patient)
        yield_now()
        with cond:
            cond.notify(1)
            sleep(2)  # a's scope expires while a waits for the lock we hold
        with pytest.raises(TimeoutError):
            a.join()
        b.join(timeout=10)
        assert woke == ["patient"]

    vrun(main)


def test_cancel_during_reacquire_under_an_expiring_timeout_is_cancelled() -> None:
    log: list[str] = []

    def waiter() -> None:
        try:
            with timeout(1), cond:
                cond.wait()
        except TimeoutError:
            log.append("caught TimeoutError and carried on")  # must not happen
        log.append("after")

    def main() -> None:
        w = spawn(waiter)
        yield_now()
        with cond:
            cond.notify()
            sleep(2)  # w's timeout expires while it waits to re-take the lock we hold
            w.cancel()
        with pytest.raises(Cancelled):
            w.join()
        assert log == []

    cond = Condition()
    vrun(main)


def test_cancel_in_the_same_tick_as_the_waits_own_timeout_is_cancelled() -> None:
    clock = VirtualClock()
    log: list[object] = []

    def waiter() -> None:
        with cond:
            log.append(cond.wait(timeout=1))  # must raise, not return False

    def main() -> None:
        w = spawn(waiter)
        yield_now()
        lowlevel.call_later(1.5, lambda _: w.cancel())
        spawn(clock.advance, 5)  # the wait's timeout (t=1), then the cancel, in one tick
        with pytest.raises(Cancelled):
            w.join()
        assert log == [] and not cond.lock.locked()

    cond = Condition()
    run(main, clock=clock)


def test_reacquiring_waiter_keeps_its_place_in_the_lock_queue() -> None:
    order: list[str] = []

    def waiter() -> None:
        with cond:
            cond.wait()
            order.append("waiter")

    def latecomer() -> None:
        with cond:
            order.append("latecomer")

    def main() -> None:
        w = spawn(waiter)
        yield_now()
        with cond:
            cond.notify()
            yield_now()  # w queues for the lock
            late = spawn(latecomer)
            yield_now()  # the latecomer queues behind it
            w.cancel()  # does not send w to the back of the queue
        assert cond.lock.owner is w  # the lock went to w first
        with pytest.raises(Cancelled):
            w.join()
        late.join()
        assert order == ["latecomer"]
        assert not cond.lock.locked()

    cond = Condition()
    vrun(main)
