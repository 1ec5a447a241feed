"""Other threads calling into a runtime through a RuntimeToken (_core/_bridge.py)."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import stackful
from stackful import Cancelled, DeadlockError
from stackful.lowlevel import RuntimeToken, current_token, in_task

from ._net import run_bounded
from ._support import child_status, in_forked_child

LIMIT = 10.0


def in_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Start ``fn`` on a new thread; the returned function joins it and returns (or raises)
    what ``fn`` did."""
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001
            out["error"] = exc

    # A daemon: a thread left hanging by a failed test must not hold up the interpreter's exit.
    thread = threading.Thread(target=body, daemon=True)
    thread.start()

    def join() -> Any:
        thread.join(LIMIT)
        assert not thread.is_alive(), "the thread did not finish"
        if "error" in out:
            raise out["error"]
        return out["value"]

    return join


def test_call_soon_runs_on_the_runtimes_thread() -> None:
    seen: list[int] = []

    def main() -> None:
        token = current_token()
        event = stackful.Event()

        def from_thread() -> None:
            token.call_soon(lambda: seen.append(threading.get_ident()))
            token.call_soon(event.set)

        join = in_thread(from_thread)
        event.wait()  # the hub blocks in the poller: only the bridge can wake it
        join()

    run_bounded(main)
    assert seen == [threading.get_ident()]


def test_run_sync_returns_and_raises_in_the_calling_thread() -> None:
    def main() -> tuple[Any, Any]:
        token = current_token()
        ok = in_thread(lambda: token.run_sync(in_task))  # runs in the hub: not a task

        def fails() -> None:
            raise KeyError("boom")

        bad = in_thread(lambda: token.run_sync(fails))
        stackful.to_thread(time.sleep, 0.02)
        value = stackful.to_thread(ok)
        with pytest.raises(KeyError, match="boom"):
            stackful.to_thread(bad)
        return value, "raised"

    assert run_bounded(main) == (False, "raised")


def test_run_runs_a_task_that_may_block() -> None:
    def main() -> list[int]:
        token = current_token()
        q: stackful.Queue[int] = stackful.Queue(maxsize=1)

        def producer() -> str:
            for i in range(5):
                token.run(q.put, i)  # blocks (as a task) while the queue is full
            return token.run(lambda: "in a task" if in_task() else "not")

        join = in_thread(producer)
        got = [q.get() for _ in range(5)]
        assert stackful.to_thread(join) == "in a task"
        return got

    assert run_bounded(main) == [0, 1, 2, 3, 4]


def test_cancel_and_wake_from_another_thread() -> None:
    def main() -> str:
        token = current_token()
        sleeper = stackful.spawn(stackful.sleep, 60)
        stackful.sleep(0)
        stackful.to_thread(lambda: token.cancel(sleeper))
        with pytest.raises(Cancelled):
            sleeper.join()

        me = stackful.current_task()
        in_thread(lambda: token.wake(me, "woken"))
        return str(stackful.lowlevel.park("waiting for a thread"))

    assert run_bounded(main) == "woken"


def test_stop_cancels_main_and_winds_the_tasks_down() -> None:
    finished: list[str] = []

    def worker() -> None:
        try:
            stackful.sleep(60)
        finally:
            finished.append("worker")

    def main() -> None:
        stackful.spawn(worker)
        token = current_token()
        in_thread(lambda: (time.sleep(0.02), token.stop()))
        try:
            stackful.sleep(60)
        finally:
            finished.append("main")

    with pytest.raises(Cancelled):
        stackful.run(main)
    assert sorted(finished) == ["main", "worker"]


def test_a_token_outlives_its_run_as_a_clear_error() -> None:
    token = stackful.run(current_token)
    assert "finished" in repr(token)
    for call in (lambda: token.call_soon(print), lambda: token.run_sync(print),
                 lambda: token.run(print), token.stop):
        with pytest.raises(RuntimeError, match="finished"):
            call()


def test_waiting_on_the_runtimes_own_thread_is_refused() -> None:
    def main() -> None:
        token = current_token()
        with pytest.raises(RuntimeError, match="own thread"):
            token.run_sync(print)
        with pytest.raises(RuntimeError, match="own thread"):
            token.run(print)

    stackful.run(main)


def test_a_live_token_holds_off_the_deadlock_report() -> None:
    # main waits for an event only another thread sets: with a token out, that is no deadlock.
    def main() -> str:
        token = current_token()
        event = stackful.Event()
        in_thread(lambda: (time.sleep(0.1), token.call_soon(event.set)))
        event.wait()
        return "set"

    # Bounded by running it on a thread of its own: a timeout scope's timer would hold off
    # the deadlock report by itself, and the test would prove nothing.
    assert in_thread(lambda: stackful.run(main))() == "set"


def test_the_deadlock_is_reported_once_the_last_token_is_dropped() -> None:
    def main() -> None:
        token: RuntimeToken | None = current_token()
        holder = [token]
        token = None

        def drop_later() -> None:
            time.sleep(0.05)
            holder.clear()  # the token dies on this thread, while the hub is blocked
            gc.collect()

        in_thread(drop_later)
        stackful.Event().wait()

    # On a thread of its own, bounded: a timeout scope's timer would hold off the report.
    with pytest.raises(DeadlockError):
        in_thread(lambda: stackful.run(main))()


def test_a_failing_callback_ends_the_run() -> None:
    def main() -> None:
        token = current_token()

        def bad() -> None:
            raise OSError("callback failed")

        in_thread(lambda: token.call_soon(bad))
        stackful.sleep(60)

    with pytest.raises(OSError, match="callback failed"):
        stackful.run(main)


def test_a_task_of_another_runtime_waits_without_blocking_its_thread() -> None:
    ready = threading.Event()
    tokens: list[RuntimeToken] = []
    stop = threading.Event()

    def server_main() -> None:
        tokens.append(current_token())
        ready.set()
        while not stop.is_set():
            stackful.sleep(0.005)

    server = threading.Thread(target=stackful.run, args=(server_main,), daemon=True)
    server.start()
    try:
        assert ready.wait(LIMIT)
        token = tokens[0]

        def client_main() -> tuple[int, int]:
            ticks = 0

            def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    stackful.sleep(0.001)

            stackful.spawn(ticker)
            # A slow call on the other runtime: this task parks; the ticker keeps running.
            value = token.run(lambda: (stackful.sleep(0.1), 7)[1])
            return value, ticks

        value, ticks = run_bounded(client_main)
        assert value == 7
        assert ticks > 5
    finally:
        stop.set()
        server.join(LIMIT)
        tokens.clear()
    assert not server.is_alive()


def test_many_threads_posting_at_once() -> None:
    def main() -> int:
        token = current_token()
        count = 0

        def bump() -> None:
            nonlocal count
            count += 1

        def poster() -> None:
            for _ in range(1000):
                token.call_soon(bump)

        joins = [in_thread(poster) for _ in range(8)]
        for join in joins:
            stackful.to_thread(join)
        stackful.sleep(0)
        deadline = time.monotonic() + LIMIT
        while count < 8000 and time.monotonic() < deadline:
            stackful.sleep(0.001)
        return count

    assert stackful.run(main) == 8000


def test_calls_racing_the_end_of_the_run_never_hang() -> None:
    # A thread calls in while the run ends: it gets the result or RuntimeError, never a hang.
    outcomes = [race_the_end_once() for _ in range(30)]
    assert set(outcomes) <= {"ran", "refused"}


def race_the_end_once() -> str:
    box: list[RuntimeToken] = []
    started = threading.Event()

    def caller() -> str:
        started.wait(LIMIT)
        try:
            box[0].run_sync(int)
        except RuntimeError:
            return "refused"
        return "ran"

    def main() -> None:
        box.append(current_token())
        started.set()
        stackful.sleep(0)

    join = in_thread(caller)
    stackful.run(main)
    outcome: str = join()
    return outcome


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_in_a_forked_child_a_runtime_of_another_thread_refuses_calls() -> None:
    """Only the forking thread survives fork(): a runtime that ran on another thread never
    runs again in the child, so calling into it must fail at once, not wait forever."""
    import os

    if not hasattr(os, "fork"):
        pytest.skip("needs fork")
    tokens: list[RuntimeToken] = []
    ready = threading.Event()
    stop = threading.Event()

    def server_main() -> None:
        tokens.append(current_token())
        ready.set()
        stackful.to_thread(stop.wait, LIMIT)

    server = threading.Thread(target=stackful.run, args=(server_main,), daemon=True)
    server.start()
    try:
        assert ready.wait(LIMIT)
        token = tokens[0]
        # From a helper thread, whose join is bounded: run_sync blocks a plain thread for good.
        assert in_thread(lambda: token.run_sync(lambda: 5))() == 5

        def child() -> None:
            with pytest.raises(RuntimeError, match="finished"):
                token.run_sync(int)
            with pytest.raises(RuntimeError, match="finished"):
                token.call_soon(print)

        pid = in_forked_child(child)
        assert child_status(pid) == 0
        # The parent's runtime is untouched.
        assert in_thread(lambda: token.run_sync(lambda: 6))() == 6
    finally:
        stop.set()
        server.join(LIMIT)
        tokens.clear()
    assert not server.is_alive()
