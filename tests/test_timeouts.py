"""timeout(): raised at the blocking point, nested scopes, withdrawn when the body finishes."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from stackful import lowlevel
from stackful.channel import Channel, Recv, select
from stackful.queue import Queue
from stackful.runtime_api import (
    Cancelled,
    DeadlockError,
    VirtualClock,
    run,
    sleep,
    spawn,
    wait_readable,
    wait_writable,
    yield_now,
)
from stackful.sync import Condition, Event, Lock, Semaphore
from stackful.timeouts import current_time, sleep_until, timeout, timeout_at

from ._support import vrun


def test_timeout_interrupts_a_blocked_task() -> None:
    def main() -> None:
        with pytest.raises(TimeoutError, match=r"timed out in timeout\(2\)"):
            with timeout(2) as scope:
                sleep(10)
        assert scope.expired
        assert current_time() == 2

    vrun(main)


def test_body_that_finishes_in_time_is_not_interrupted() -> None:
    def main() -> None:
        with timeout(5) as scope:
            sleep(1)
        assert not scope.expired
        sleep(10)  # the cancelled timer must not fire later

    vrun(main)


def test_timeout_that_fires_after_the_wait_completed_is_withdrawn_at_exit() -> None:
    clock = VirtualClock()

    def main() -> None:
        # The helper jumps the clock past both deadlines at once: the sleep's timer (t=1)
        # fires first and makes main ready, then the scope's (t=2) fires while main is ready.
        # Main's sleep returned normally, so leaving the scope must withdraw the timeout.
        spawn(clock.advance, 5)
        with timeout(2) as scope:
            sleep(1)
        assert scope.expired
        sleep(1)  # no stale TimeoutError left behind
        assert current_time() == 6

    run(main, clock=clock)


def test_early_exit_timeouts_leave_nothing_in_the_timer_heap() -> None:
    """A scope that exits before its deadline removes its timer at once: many of them hold
    no memory until their (far) deadline, and the heap stays empty."""
    import gc
    import sys

    def main() -> tuple[int, int]:
        rt = lowlevel.current_runtime()
        for _ in range(2_000):  # warm up allocator pools
            with timeout(60):
                pass
        gc.collect()
        before = sys.getallocatedblocks()
        for _ in range(100_000):
            with timeout(60):
                pass
        gc.collect()
        return rt.timers.active, sys.getallocatedblocks() - before

    active, grown = vrun(main)
    assert active == 0
    assert grown < 1_000  # was one timer (and its scope) per exited scope


def test_nested_scopes_raise_their_own_error() -> None:
    def main() -> None:
        with pytest.raises(TimeoutError) as info:
            with timeout(10) as outer:
                with timeout(1) as inner:
                    sleep(5)
        assert inner.expired and not outer.expired
        assert inner.owns(info.value) and not outer.owns(info.value)
        with pytest.raises(TimeoutError) as info:
            with timeout(1) as outer:
                with timeout(10) as inner:
                    sleep(5)
        assert outer.expired and not inner.expired and outer.owns(info.value)

    vrun(main)


def test_timeout_none_never_fires_and_bad_values() -> None:
    def main() -> None:
        with timeout(None):
            sleep(1000)
        with pytest.raises(ValueError, match="timeout must be >= 0"):
            timeout(-1)
        with pytest.raises(ValueError, match="timeout must be >= 0"):
            timeout(float("nan"))

    vrun(main)


def test_timeout_at_and_sleep_until() -> None:
    def main() -> None:
        sleep_until(7)
        assert current_time() == 7
        with pytest.raises(TimeoutError):
            with timeout_at(9):
                sleep(100)
        assert current_time() == 9

    vrun(main)


def test_cancel_beats_a_pending_timeout() -> None:
    def victim() -> None:
        with timeout(1):
            while True:
                yield_now()

    def main() -> None:
        t = spawn(victim)
        yield_now()
        t.cancel()
        with pytest.raises(Cancelled):
            t.join()

    run(main)


def test_timeout_outside_run() -> None:
    with pytest.raises(RuntimeError, match=r"must be called inside stackful.run\(\)"):
        timeout(1)


# -- two interruptions in one tick: the rule of Runtime.park ---------------------------------------


def _held_lock() -> Lock:
    """A lock some other task holds for good (until the run winds down)."""
    lock = Lock()

    def holder() -> None:
        with lock:
            sleep(math.inf)

    spawn(holder)
    yield_now()
    assert lock.locked()
    return lock


def test_outer_timeout_wins_over_an_inner_one_firing_in_the_same_tick() -> None:
    clock = VirtualClock()

    def main() -> None:
        lock = _held_lock()
        with pytest.raises(TimeoutError) as info:
            with timeout(2) as outer:
                # Jump past both deadlines at once: the acquire's own timeout (t=1) fires
                # first, then the outer one (t=2), before main runs again.  The acquire must
                # not swallow the outer timeout by returning False.
                spawn(clock.advance, 5)
                lock.acquire(timeout=1)
        assert outer.expired and outer.owns(info.value)

    run(main, clock=clock)


def test_outer_timeout_wins_over_an_inner_scope_with_the_same_deadline() -> None:
    def main() -> None:
        with pytest.raises(TimeoutError) as info:
            with timeout(1) as outer:
                try:
                    with timeout(1) as inner:
                        sleep(5)
                except TimeoutError as exc:
                    assert not inner.owns(exc)  # never the inner one's
                    raise
        assert outer.owns(info.value) and outer.expired and inner.expired

    vrun(main)


def test_inner_timeout_alone_leaves_the_outer_scope_running() -> None:
    def main() -> None:
        with timeout(3) as outer:
            lock = _held_lock()
            assert lock.acquire(timeout=1) is False  # its own timeout: False, no exception
            assert current_time() == 1
        assert not outer.expired

    vrun(main)


def test_outer_timeout_wins_in_the_same_tick_on_the_real_clock() -> None:
    def hog() -> None:
        time.sleep(0.05)  # blocks the whole runtime past both deadlines

    def main() -> None:
        lock = _held_lock()
        with pytest.raises(TimeoutError) as info:
            with timeout(0.02) as outer:
                spawn(hog)
                lock.acquire(timeout=0.01)
        assert outer.owns(info.value)

    run(main)


@pytest.mark.parametrize(
    "cancel_at", [0.5, 1.5], ids=["cancel-then-timeout", "timeout-then-cancel"]
)
def test_cancel_landing_with_a_timeout_in_the_same_tick_wins(cancel_at: float) -> None:
    clock = VirtualClock()

    def victim() -> None:
        with timeout(1):
            sleep(10)

    def main() -> None:
        t = spawn(victim)
        yield_now()
        # Both land in one tick (the clock jumps past them), in the order given: the task is
        # woken by the first and must raise Cancelled whichever came first.
        lowlevel.call_later(cancel_at, lambda _: t.cancel())
        spawn(clock.advance, 5)
        with pytest.raises(Cancelled):
            t.join()

    run(main, clock=clock)


def test_timeout_firing_after_a_completed_wait_is_raised_at_the_next_block() -> None:
    clock = VirtualClock()

    def main() -> None:
        ev = Event()

        def setter() -> None:
            clock.advance(5)  # the scope's deadline passes after the wait is satisfied
            ev.set()

        with pytest.raises(TimeoutError) as info:
            with timeout(2) as scope:
                spawn(setter)
                assert ev.wait() is True  # the completed wait stands
                sleep(1)  # the next blocking point raises
        assert scope.owns(info.value)

    run(main, clock=clock)


# -- deadlines: one rule for every API that takes one ---------------------------------------------

# Each entry blocks the running task with the given timeout (or deadline) on something that
# never comes, so only the timeout can end it.
WAITS: dict[str, Callable[[Any], object]] = {
    "sleep": lambda t: sleep(t),
    "timeout": lambda t: _in_scope(timeout(t)),
    "join": lambda t: spawn(sleep, math.inf).join(timeout=t),
    "Lock.acquire": lambda t: _held_lock().acquire(timeout=t),
    "Semaphore.acquire": lambda t: Semaphore(0).acquire(timeout=t),
    "Condition.wait": lambda t: _cond_wait(t),
    "Event.wait": lambda t: Event().wait(timeout=t),
    "Queue.get": lambda t: Queue[int]().get(timeout=t),
    "Queue.put": lambda t: _full_queue().put(2, timeout=t),
    "Channel.recv": lambda t: Channel[int]().recv(timeout=t),
    "Channel.send": lambda t: Channel[int]().send(1, timeout=t),
    "select": lambda t: select(Recv(Channel[int]()), timeout=t),
    "wait_readable": lambda t: _on_pipe(wait_readable, t),
    "wait_writable": lambda t: _on_full_pipe(t),
}
DEADLINES: dict[str, Callable[[Any], object]] = {
    "sleep_until": lambda d: sleep_until(d),
    "timeout_at": lambda d: _in_scope(timeout_at(d)),
    "call_later": lambda d: _call_later(d),
}


def _in_scope(scope: lowlevel.TimeoutScope) -> None:
    with scope:
        sleep(math.inf)


def _cond_wait(t: Any) -> bool:
    cond = Condition()
    with cond:
        return cond.wait(timeout=t)


def _full_queue() -> Queue[int]:
    q: Queue[int] = Queue(1)
    q.put(1)
    return q


def _on_pipe(wait: Callable[..., None], t: Any) -> None:
    r, w = os.pipe()
    try:
        wait(r, timeout=t)
    finally:
        os.close(r)
        os.close(w)


def _on_full_pipe(t: Any) -> None:
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        while True:
            try:
                os.write(w, b"x" * 65536)
            except BlockingIOError:
                break
        wait_writable(w, timeout=t)
    finally:
        os.close(r)
        os.close(w)


def _call_later(deadline: Any) -> None:
    # call_later takes a delay: the deadline argument is used as one.
    ev = Event()
    lowlevel.call_later(deadline, lambda _: ev.set())
    ev.wait()


ALL = {**WAITS, **DEADLINES}


@pytest.mark.parametrize("api", sorted(ALL))
def test_nan_is_a_value_error_and_changes_nothing(api: str) -> None:
    def main() -> None:
        with pytest.raises(ValueError, match="NaN|nan"):
            ALL[api](math.nan)
        # The runtime is intact: no NaN timer stops the later ones.
        with timeout(1) as scope:
            sleep(0.5)
        sleep(1)
        assert current_time() == 1.5 and not scope.expired

    vrun(main)


@pytest.mark.parametrize("api", sorted(ALL))
def test_infinity_is_no_deadline(api: str) -> None:
    clock = VirtualClock()

    def main() -> None:
        waiter = spawn(ALL[api], math.inf)
        sleep(1000)
        assert not waiter.done() and clock.now() == 1000
        assert lowlevel.current_runtime().timers.active == 0  # nothing was scheduled for inf
        waiter.cancel()
        # A waiter on a pipe the cancel missed would leave this join nothing to wake it: fail.
        with timeout(60), pytest.raises(Cancelled):
            waiter.join()

    run(main, clock=clock)


@pytest.mark.parametrize("api", sorted(set(ALL) - {"wait_readable", "wait_writable"}))
def test_waiting_only_on_an_infinite_deadline_is_a_deadlock(api: str) -> None:
    def main() -> None:
        ALL[api](math.inf)

    with pytest.raises(DeadlockError):
        vrun(main)


@pytest.mark.parametrize("api", sorted(WAITS))
def test_negative_timeout_is_a_value_error(api: str) -> None:
    def main() -> None:
        with pytest.raises(ValueError, match=">= 0"):
            WAITS[api](-1)

    vrun(main)


@pytest.mark.parametrize("api", sorted(DEADLINES))
def test_deadline_already_past_expires_at_once(api: str) -> None:
    def main() -> None:
        sleep(10)
        if api == "timeout_at":
            with pytest.raises(TimeoutError):
                ALL[api](-5.0)
        elif api == "call_later":
            with pytest.raises(ValueError, match=">= 0"):  # a delay, not a deadline
                ALL[api](-5.0)
        else:
            ALL[api](-5.0)
        assert current_time() == 10

    vrun(main)


@pytest.mark.parametrize("api", sorted(ALL))
def test_a_deadline_must_be_a_number(api: str) -> None:
    def main() -> None:
        with pytest.raises(TypeError, match="must be a number, not str"):
            ALL[api]("1")

    vrun(main)


def test_deadlines_already_due_expire_without_a_round_of_the_hub() -> None:
    # A task that blocks with nothing else ready while its deadline is already due has the
    # timer fired where it switches away (loop.c), on the virtual clock as on the real one:
    # no round of the hub per expiry, and virtual time does not move.
    from stackful.timeouts import move_on_after

    def main() -> tuple[int, float]:
        runtime = lowlevel.current_runtime()
        start, before = current_time(), runtime.hub_resumptions
        for _ in range(100):
            with move_on_after(0) as scope:
                sleep(60)
            assert scope.cancelled_caught
        return runtime.hub_resumptions - before, current_time() - start

    rounds, moved = vrun(main)
    assert rounds < 10 and moved == 0
