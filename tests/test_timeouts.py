"""timeout(): raised at the blocking point, nested scopes, withdrawn when the body finishes."""

from __future__ import annotations

import pytest

from stackful.runtime_api import Cancelled, VirtualClock, run, sleep, spawn, yield_now
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
