"""The runtime: run/spawn/join, round-robin yield, sleep, I/O waits, cancellation, deadlocks,
unretrieved exceptions, Ctrl-C, introspection and limits."""

from __future__ import annotations

import contextvars
import math
import os
import random
import signal
import socket
import sys
import threading
import time
from typing import Any

import pytest

from stackful import Channel, Lock, lowlevel
from stackful.runtime_api import (
    BusyResourceError,
    Cancelled,
    ClosedResourceError,
    DeadlockError,
    Runtime,
    Task,
    TaskExceptHookArgs,
    TaskGroup,
    TooManyTasksError,
    VirtualClock,
    current_task,
    notify_closing,
    run,
    sleep,
    spawn,
    tasks,
    wait_readable,
    wait_writable,
    yield_now,
)
from stackful.timeouts import timeout

from ._net import BOUND, run_bounded
from ._support import vrun

# -- run / spawn / join --------------------------------------------------------------------------


def test_issue_example_interleaves_round_robin() -> None:
    lines: list[str] = []

    def worker(name: str, n: int) -> int:
        for i in range(n):
            lines.append(f"{name}: {i}")
            yield_now()
        return n

    def main() -> int:
        a = spawn(worker, "a", 3)
        b = spawn(worker, "b", 2, name="b")
        return int(a.join()) + int(b.join())

    assert run(main) == 5
    assert lines == ["a: 0", "b: 0", "a: 1", "b: 1", "a: 2"]


def test_run_passes_args_and_kwargs_and_returns_result() -> None:
    def main(x: int, *, y: int) -> int:
        return x * y

    assert run(main, 6, y=7) == 42


def test_run_raises_main_exception() -> None:
    def main() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run(main)


def test_spawn_kwargs_go_to_the_function_and_name_is_kept() -> None:
    def f(a: int, b: int = 0) -> int:
        return a - b

    def main() -> tuple[int, str]:
        t = spawn(f, 10, b=3, name="sub")
        return t.join(), t.name

    assert run(main) == (7, "sub")


def test_join_reraises_task_exception_and_marks_it_retrieved() -> None:
    reported: list[TaskExceptHookArgs] = []

    def bad() -> None:
        raise KeyError("k")

    def main() -> None:
        t = spawn(bad)
        with pytest.raises(KeyError):
            t.join()
        assert t.done() and isinstance(t.exception(), KeyError)

    Runtime(excepthook=reported.append).run(main)
    assert reported == []


def test_task_result_and_exception_before_done_are_errors() -> None:
    def main() -> None:
        t = spawn(yield_now, name="w")
        with pytest.raises(RuntimeError, match="task 'w' is not finished"):
            t.result()
        with pytest.raises(RuntimeError, match="not finished"):
            t.exception()
        assert t.state == "ready" and not t.done()
        t.join()
        assert t.state == "finished" and t.result() is None and t.exception() is None

    run(main)


def test_join_yourself_is_a_clear_error() -> None:
    def main() -> None:
        with pytest.raises(RuntimeError, match="cannot join itself"):
            current_task().join()

    run(main)


def test_join_timeout_raises_timeout_error_and_task_keeps_running() -> None:
    def slow() -> str:
        sleep(10)
        return "late"

    def main() -> str:
        t = spawn(slow)
        with pytest.raises(TimeoutError):
            t.join(timeout=1)
        assert lowlevel.current_time() == 1
        return str(t.join())

    assert vrun(main) == "late"


def test_join_negative_timeout_rejected() -> None:
    def main() -> None:
        t = spawn(yield_now)
        with pytest.raises(ValueError, match="timeout must be >= 0"):
            t.join(timeout=-1)

    run(main)


def test_nested_run_is_rejected() -> None:
    def main() -> None:
        with pytest.raises(RuntimeError, match="already running on this thread"):
            run(lambda: None)

    run(main)


def test_runtime_runs_once() -> None:
    rt = Runtime()
    rt.run(lambda: None)
    with pytest.raises(RuntimeError, match="already run"):
        rt.run(lambda: None)


@pytest.mark.parametrize(
    "call",
    [
        lambda: yield_now(),
        lambda: sleep(1),
        lambda: spawn(print),
        lambda: wait_readable(0),
        lambda: wait_writable(0),
        lambda: tasks(),
        lambda: current_task(),
        lambda: lowlevel.park("x"),
    ],
    ids=["yield_now", "sleep", "spawn", "wait_readable", "wait_writable", "tasks",
         "current_task", "park"],
)
def test_blocking_outside_run_is_a_clear_error(call: Any) -> None:
    with pytest.raises(RuntimeError, match=r"must be called inside stackful.run\(\)"):
        call()


def test_spawn_non_callable_is_type_error() -> None:
    def main() -> None:
        with pytest.raises(TypeError, match="needs a callable"):
            spawn(42)  # type: ignore[arg-type]

    run(main)


def test_tasks_start_in_a_copy_of_the_spawners_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    def child() -> str:
        seen = var.get()
        var.set("child")
        return seen

    def main() -> tuple[str, str]:
        var.set("parent")
        seen = spawn(child).join()
        return seen, var.get()

    assert run(main) == ("parent", "parent")


def test_stack_size_is_accepted() -> None:
    def main() -> int:
        return int(spawn(lambda: 3, stack_size=256 * 1024).join())

    assert run(main) == 3


# -- scheduling ----------------------------------------------------------------------------------


def test_ready_queue_is_fifo_and_yield_goes_to_the_back() -> None:
    order: list[tuple[str, int]] = []

    def w(name: str) -> None:
        for i in range(3):
            order.append((name, i))
            yield_now()

    def main() -> None:
        ts = [spawn(w, n) for n in "xyz"]
        for t in ts:
            t.join()

    run(main)
    assert order == [(n, i) for i in range(3) for n in "xyz"]


def test_yield_hands_over_directly_without_the_hub() -> None:
    rt = Runtime()

    def w() -> None:
        for _ in range(200):
            yield_now()

    def main() -> None:
        a, b = spawn(w), spawn(w)
        a.join()
        b.join()

    rt.run(main)
    # 400 yields between tasks; the hub only runs for the start and main's end.
    assert rt.hub_resumptions <= 3


def test_yield_alone_returns_immediately() -> None:
    def main() -> int:
        for _ in range(10):
            yield_now()
        return 1

    assert run(main) == 1


def test_busy_yielding_task_does_not_starve_timers() -> None:
    # Real clock, 1 ms: the yielder never blocks, so the timer can only fire if the scheduler
    # checks timers between yields.
    woke = []

    def sleeper() -> None:
        sleep(0.001)
        woke.append(True)

    def main() -> int:
        spawn(sleeper)
        n = 0
        deadline = time.monotonic() + BOUND  # real time: a timer that never fires fails here
        while not woke:
            assert time.monotonic() < deadline, "the sleeper's timer never fired"
            yield_now()
            n += 1
        return n

    assert run(main) > 0


def test_sleep_wakes_in_deadline_order_on_the_virtual_clock() -> None:
    woke: list[tuple[str, float]] = []

    def s(name: str, secs: float) -> None:
        sleep(secs)
        woke.append((name, lowlevel.current_time()))

    def main() -> None:
        ts = [spawn(s, "c", 3.0), spawn(s, "a", 1.0), spawn(s, "b", 2.0), spawn(s, "a2", 1.0)]
        for t in ts:
            t.join()

    vrun(main)
    assert woke == [("a", 1.0), ("a2", 1.0), ("b", 2.0), ("c", 3.0)]


def test_sleep_zero_yields_and_negative_sleep_is_rejected() -> None:
    order: list[str] = []

    def other() -> None:
        order.append("other")

    def main() -> None:
        spawn(other)
        sleep(0)
        order.append("main")
        with pytest.raises(ValueError, match="sleep length must be >= 0"):
            sleep(-1)

    run(main)
    assert order == ["other", "main"]


def test_virtual_clock_advance_and_validation() -> None:
    c = VirtualClock(5.0)
    c.advance(2.5)
    assert c.now() == 7.5
    with pytest.raises(ValueError, match="backwards"):
        c.advance(-1)
    with pytest.raises(ValueError, match="autojump_threshold"):
        VirtualClock(autojump_threshold=-1)


def test_real_sleep_of_a_few_ms_blocks_in_the_hub() -> None:
    def main() -> float:
        t0 = lowlevel.current_time()
        sleep(0.002)
        return lowlevel.current_time() - t0

    assert run(main) >= 0.002


def test_real_sleep_is_the_runtimes_sleep_for_every_kind_of_number() -> None:
    # On the real clock a finite sleep is all C (loop.c); what it accepts and refuses, and
    # what it leaves behind, must be Runtime.sleep's.
    def main() -> None:
        runtime = lowlevel.current_runtime()
        t0 = lowlevel.current_time()
        sleep(0.001)
        sleep(0.0005)
        runtime.sleep(0.0005)  # the method: the slow path stackful.sleep falls back to
        assert lowlevel.current_time() - t0 >= 0.002
        assert not runtime.timers.active
        for bad, error in ((math.nan, ValueError), (-0.5, ValueError), ("1", TypeError),
                           (10**400, OverflowError)):
            with pytest.raises(error):
                sleep(bad)  # type: ignore[arg-type]
        assert not runtime.timers.active
        current_task().cancel()  # pending: the next sleep raises at once, no timer left
        with pytest.raises(Cancelled):
            sleep(30)
        assert not runtime.timers.active

    run(main)
    with pytest.raises(RuntimeError, match=r"sleep\(\) must be called inside stackful.run"):
        sleep(1)


def test_an_int_sleep_on_the_real_clock_parks_until_its_timer() -> None:
    def sleeper(seconds: int, woke: list[str]) -> None:
        sleep(seconds)
        woke.append("sleeper")

    def main() -> list[str]:
        woke: list[str] = []
        t = spawn(sleeper, 30, woke)
        yield_now()
        assert t.state == "blocked" and str(t._wait_reason) == "sleep"
        t.cancel()
        with pytest.raises(Cancelled):
            t.join()
        assert not lowlevel.current_runtime().timers.active  # its timer went with its wait
        return woke

    assert run(main) == []


def test_timers_due_while_nothing_is_ready_do_not_starve_io() -> None:
    # A task whose deadlines pass before it blocks finds its timers due with nothing else
    # ready: they fire where it switches away, without the hub.  I/O must still be polled
    # (at the end of each batch), or a reader would wait until the spinner is done.
    from stackful.timeouts import move_on_after

    rounds = 5000
    a, b = socket.socketpair()
    a.setblocking(False)

    def reader(seen: list[int], done: list[int]) -> None:
        wait_readable(a)
        seen.append(len(done))

    def expiring(done: list[int]) -> None:
        for _ in range(rounds):
            with move_on_after(0):
                sleep(60)
            done.append(1)

    def main() -> int:
        seen: list[int] = []
        done: list[int] = []
        r = spawn(reader, seen, done)
        yield_now()  # the reader waits in the poller
        b.send(b"x")
        spawn(expiring, done).join()
        r.join()
        return seen[0]

    try:
        woken_after = run_bounded(main)  # a reader the poller missed fails, not hangs
    finally:
        a.close()
        b.close()
    assert woken_after < rounds // 10


def test_a_timer_callback_that_raises_where_nothing_is_ready_ends_the_run() -> None:
    def boom(_: object) -> None:
        raise KeyboardInterrupt

    def main() -> None:
        lowlevel.current_runtime().call_at(lowlevel.current_time(), boom, None)
        sleep(60)  # nothing else is ready: the due timer fires as main switches away

    with pytest.raises(KeyboardInterrupt):
        run(main)


# -- I/O -------------------------------------------------------------------------------------------


def test_wait_readable_wakes_when_data_arrives() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    def reader() -> bytes:
        wait_readable(a)
        return a.recv(100)

    def main() -> bytes:
        t = spawn(reader)
        yield_now()
        assert t.state == "blocked" and t.waiting_on == f"wait_readable(fd={a.fileno()})"
        wait_writable(b.fileno())
        b.send(b"hello")
        return bytes(t.join())

    try:
        assert run_bounded(main) == b"hello"
    finally:
        a.close()
        b.close()


def test_closing_an_fd_wakes_its_waiters_and_frees_the_number() -> None:
    """notify_closing() before close(): every waiter gets ClosedResourceError naming the fd
    (not a hang), and a new socket that gets the same number starts clean."""
    a, b = socket.socketpair()
    fd = a.fileno()

    def main() -> str:
        reader = spawn(wait_readable, a)
        filler = bytes(1 << 20)
        while True:  # fill the send buffer so that a writer waits too
            try:
                a.send(filler, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
        writer = spawn(wait_writable, a)
        yield_now()
        assert reader.state == writer.state == "blocked"
        notify_closing(a)
        a.close()
        for t, what in ((reader, "readable"), (writer, "writable")):
            with pytest.raises(ClosedResourceError, match=f"fd {fd} was closed .*{what}"):
                t.join()
        c, d = socket.socketpair()  # the lowest free numbers: one of them is fd again
        try:
            assert fd in (c.fileno(), d.fileno())
            again = c if c.fileno() == fd else d
            other = d if again is c else c
            other.send(b"x")
            wait_readable(again, timeout=5)  # no BusyResourceError, no stale registration
            return again.recv(1).decode()
        finally:
            c.close()
            d.close()

    try:
        assert run_bounded(main) == "x"  # waiters notify_closing() missed fail, not hang
    finally:
        b.close()


def test_wait_readable_timeout_and_busy_fd() -> None:
    a, b = socket.socketpair()

    def main() -> None:
        t = spawn(wait_readable, a)
        yield_now()
        with pytest.raises(BusyResourceError, match="already waiting for fd"):
            wait_readable(a)
        t.cancel()
        # A cancel that left t waiting on the fd would leave nothing to wake this join: fail.
        with timeout(BOUND), pytest.raises(Cancelled):
            t.join()
        with pytest.raises(TimeoutError):
            wait_readable(a, timeout=5)
        assert lowlevel.current_time() == 5
        with pytest.raises(ValueError, match="timeout must be >= 0"):
            wait_readable(a, timeout=-1)

    try:
        vrun(main)
    finally:
        a.close()
        b.close()


def test_wait_readable_bad_objects() -> None:
    def main() -> None:
        with pytest.raises(TypeError, match="fileno"):
            wait_readable("nope")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="invalid file descriptor -1"):
            wait_readable(-1)

    run(main)


# -- cancellation ----------------------------------------------------------------------------------


def test_cancel_blocked_task_runs_finally_and_join_raises_cancelled() -> None:
    log: list[str] = []

    def victim() -> None:
        try:
            sleep(100)
        finally:
            log.append("finally")

    def main() -> None:
        t = spawn(victim)
        yield_now()
        assert t.cancel() is True
        with pytest.raises(Cancelled, match="was cancelled"):
            t.join()
        assert t.cancelled()
        assert t.cancel() is False

    vrun(main)
    assert log == ["finally"]


def test_cancel_before_start_never_runs_the_function() -> None:
    ran: list[int] = []

    def main() -> None:
        t = spawn(ran.append, 1)
        t.cancel()
        with pytest.raises(Cancelled):
            t.join()

    run(main)
    assert ran == []


def test_cancel_is_delivered_at_the_next_blocking_point() -> None:
    steps: list[int] = []

    def busy() -> None:
        for i in range(5):
            steps.append(i)
            yield_now()

    def main() -> None:
        t = spawn(busy)
        yield_now()  # busy ran step 0 and yielded back
        t.cancel()
        with pytest.raises(Cancelled):
            t.join()

    run(main)
    assert steps == [0]


def test_cancelled_is_not_an_exception_subclass() -> None:
    assert issubclass(Cancelled, BaseException) and not issubclass(Cancelled, Exception)


def test_tasks_alive_when_main_returns_are_cancelled_and_unwound() -> None:
    log: list[str] = []

    def forever() -> None:
        try:
            # Far past main's end (virtual time): a task main's end failed to cancel stops
            # here and says so, instead of sleeping forever.
            while lowlevel.current_time() < 1000:
                sleep(1)
            log.append("never cancelled")
        finally:
            log.append("cleaned")

    def main() -> str:
        spawn(forever)
        spawn(forever)
        sleep(0.5)
        return "done"

    assert vrun(main) == "done"
    assert log == ["cleaned", "cleaned"]


def test_task_that_swallows_cancellation_cannot_hang_shutdown() -> None:
    outlasted_shutdown: list[bool] = []

    def stubborn() -> None:
        # Far more cancellations than shutdown sends before it gives up: a shutdown that
        # never gave up ends the loop here, and the test fails instead of hanging.
        for _ in range(10_000):
            try:
                lowlevel.park("nothing")
            except Cancelled:
                pass
        outlasted_shutdown.append(True)

    def main() -> None:
        spawn(stubborn)
        yield_now()

    run(main)  # returns instead of hanging
    assert outlasted_shutdown == []


# -- deadlock detection ---------------------------------------------------------------------------


def test_deadlock_names_blocked_tasks_and_what_they_wait_on() -> None:
    log: list[str] = []

    def stuck() -> None:
        try:
            lowlevel.park("Something.acquire")
        finally:
            log.append("stuck finally")

    def main() -> None:
        t = spawn(stuck, name="worker")
        t.join()

    with pytest.raises(DeadlockError) as info:
        run(main)
    msg = str(info.value)
    assert "all 2 tasks are blocked" in msg
    assert "task 'main' waiting on join('worker')" in msg
    assert "task 'worker' waiting on Something.acquire" in msg
    assert info.value.blocked == [("main", "join('worker')"), ("worker", "Something.acquire")]
    assert log == ["stuck finally"]


def test_mutual_join_is_a_deadlock() -> None:
    holder: dict[str, Task] = {}

    def a() -> None:
        yield_now()
        holder["b"].join()

    def b() -> None:
        holder["a"].join()

    def main() -> None:
        holder["a"] = spawn(a, name="a")
        holder["b"] = spawn(b, name="b")
        holder["a"].join()

    with pytest.raises(DeadlockError, match="task 'a' waiting on join"):
        run(main)


def test_sleeping_tasks_are_not_a_deadlock() -> None:
    def main() -> float:
        sleep(3600)
        return lowlevel.current_time()

    assert vrun(main) == 3600


# -- unretrieved exceptions ------------------------------------------------------------------------


def test_unjoined_failure_goes_to_the_hook_once() -> None:
    reported: list[TaskExceptHookArgs] = []

    def bad() -> None:
        raise ZeroDivisionError("nope")

    def main() -> None:
        t = spawn(bad, name="bad")
        yield_now()
        assert t.done()

    Runtime(excepthook=reported.append).run(main)
    assert len(reported) == 1
    assert reported[0].task.name == "bad"
    assert reported[0].exc_type is ZeroDivisionError
    assert str(reported[0].exc_value) == "nope"


def test_forgotten_failed_task_is_reported_when_dropped() -> None:
    reported: list[str] = []
    seen_before_end: list[int] = []

    def bad() -> None:
        raise OSError("gone")

    def main() -> None:
        spawn(bad, name="dropped")  # handle dropped at once
        yield_now()
        yield_now()
        seen_before_end.append(len(reported))

    Runtime(excepthook=lambda a: reported.append(a.task.name)).run(main)
    assert reported == ["dropped"]
    assert seen_before_end == [1]


def test_default_hook_prints_traceback_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    def bad() -> None:
        raise RuntimeError("visible")

    def main() -> None:
        t = spawn(bad, name="loud")
        yield_now()
        assert t.done()

    run(main)
    err = capsys.readouterr().err
    assert "Exception in stackful task 'loud'" in err
    assert "Traceback" in err and "RuntimeError: visible" in err


def test_cancelled_tasks_are_not_reported() -> None:
    reported: list[TaskExceptHookArgs] = []

    def main() -> None:
        spawn(sleep, 10).cancel()
        yield_now()

    Runtime(excepthook=reported.append, clock=VirtualClock()).run(main)
    assert reported == []


# -- Ctrl-C ----------------------------------------------------------------------------------------


def test_keyboard_interrupt_in_a_task_cancels_others_and_propagates() -> None:
    log: list[str] = []

    def victim() -> None:
        try:
            sleep(100)
        finally:
            log.append("victim finally")

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    def main() -> None:
        try:
            spawn(victim)
            spawn(ctrl_c)
            sleep(50)
        finally:
            log.append("main finally")

    with pytest.raises(KeyboardInterrupt):
        vrun(main)
    assert sorted(log) == ["main finally", "victim finally"]


# (signal, what run() raises, the handler back afterwards): SIGTERM is handled when asked.
HANDLED_SIGNALS = [
    pytest.param(signal.SIGINT, KeyboardInterrupt, signal.default_int_handler, id="SIGINT"),
    pytest.param(signal.SIGTERM, SystemExit, signal.SIG_DFL, id="SIGTERM"),
]


@pytest.mark.parametrize(("signum", "raised", "default"), HANDLED_SIGNALS)
def test_real_signal_while_tasks_run(signum: int, raised: type, default: Any) -> None:
    """The signal lands between bytecodes of a task (or the scheduler): every task is
    cancelled and wound down, run() raises the signal's exception."""
    log: list[str] = []

    def victim() -> None:
        try:
            sleep(100)
        finally:
            log.append("victim finally")

    def main() -> None:
        spawn(victim)
        yield_now()
        os.kill(os.getpid(), signum)
        for _ in range(1000):  # the signal arrives between bytecodes of this loop
            yield_now()

    with pytest.raises(raised):
        run(main, clock=VirtualClock(), handle_signals=(signal.SIGINT, signal.SIGTERM))
    assert log == ["victim finally"]
    assert signal.getsignal(signum) is default


@pytest.mark.parametrize(("signum", "raised", "default"), HANDLED_SIGNALS)
def test_real_signal_while_the_hub_is_idle(signum: int, raised: type, default: Any) -> None:
    """The signal lands while the hub sleeps in the poller: the same, and SIGTERM's
    ``SystemExit`` carries 128 + its number (a killed process's status)."""
    log: list[str] = []
    timer = threading.Timer(0.005, os.kill, (os.getpid(), signum))

    def sleeper() -> None:
        try:
            timer.start()  # once both tasks are in their try (a loaded machine is slow)
            sleep(30)
        finally:
            log.append("sleeper finally")

    def main() -> None:
        spawn(sleeper)
        try:
            sleep(30)  # real clock: the hub blocks in the poller until the signal
        finally:
            log.append("main finally")
            timer.join(BOUND)
            assert not timer.is_alive(), "the signalling timer thread did not finish"

    with pytest.raises(raised) as caught:
        run(main, handle_signals=(signal.SIGINT, signal.SIGTERM))
    if raised is SystemExit:
        assert caught.value.code == 128 + signum
    assert sorted(log) == ["main finally", "sleeper finally"]
    assert signal.getsignal(signum) is default


@pytest.mark.parametrize("poller", ["epoll", "selectors"])
@pytest.mark.parametrize(("signum", "raised", "default"), HANDLED_SIGNALS)
def test_a_signal_the_kernel_hands_to_another_thread_wakes_the_idle_hub(
        signum: int, raised: type, default: Any, poller: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The signal is delivered to a worker thread, not the main one (``pthread_kill``; the
    kernel may do the same with a ``kill``): the hub, asleep in the poller, wakes at once
    through the wake-up pipe and winds the run down, so the reader is cancelled while it
    waits.  Without the pipe the hub slept on until the next event -- here the data the
    worker writes a second later, which the reader then got before its cancellation."""
    import time

    if poller == "selectors":
        monkeypatch.setenv("STACKFUL_POLLER", "selectors")

    log: list[str] = []
    r, w = os.pipe()

    def worker() -> None:
        time.sleep(0.05)  # the hub is in the poller by then
        signal.pthread_kill(threading.get_ident(), signum)  # this thread, not main
        time.sleep(1)  # long after the run has wound down
        log.append("worker writes")
        os.write(w, b"x")

    def reader() -> None:
        try:
            # With a timeout: a wait the hub does not wake up for on its own (no stack trim).
            wait_readable(r, timeout=30)
            log.append("reader saw data")
        finally:
            log.append("reader finally")

    def main() -> None:
        spawn(reader)
        sleep(30)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        with pytest.raises(raised):
            run(main, handle_signals=(signal.SIGINT, signal.SIGTERM))
    finally:
        thread.join(BOUND)
        os.close(r)
        os.close(w)
    assert not thread.is_alive(), "the worker thread did not finish"
    # (Woken by the write instead, the hub would run the signal's handler before the reader,
    # which would not see the data: the order tells.)
    assert log == ["reader finally", "worker writes"]
    assert signal.getsignal(signum) is default
    assert signal.set_wakeup_fd(-1) == -1  # the run's wake-up pipe is gone with it


def test_the_selectors_poller_drains_the_signal_pipe_it_watches(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A selector is level-triggered: a byte left in the watched wake-up pipe (here from a
    signal with the user's own handler, which does not drain it) would make every later
    poll return at once, the hub spinning through a sleep instead of blocking."""
    from stackful._core import _io

    monkeypatch.setenv("STACKFUL_POLLER", "selectors")
    polls = [0]
    real_poll = _io.SelectorsPoller.poll

    def counting_poll(self: Any, timeout: float | None) -> list[Any]:
        polls[0] += 1
        return real_poll(self, timeout)

    monkeypatch.setattr(_io.SelectorsPoller, "poll", counting_poll)
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: None)

    def main() -> None:
        signal.raise_signal(signal.SIGUSR1)
        before = polls[0]
        sleep(0.2)
        assert polls[0] - before < 10  # (thousands while spinning)

    try:
        run(main, handle_signals=(signal.SIGINT,))
    finally:
        signal.signal(signal.SIGUSR1, previous)


# Run in a fresh interpreter, so that whether asyncio is imported (its at-fork hook clears
# the wake-up fd in every child) is the test's choice.
_FORK_WAKEUP_PIPE = """
import os, select, signal, sys
if sys.argv[1] == "asyncio":
    import asyncio
import stackful
from stackful import lowlevel

def main():
    runtime = lowlevel.current_runtime()
    parent_pipe = runtime._signal_wakeup
    assert parent_pipe is not None  # the run handles SIGINT: it owns a wake-up pipe
    pid = os.fork()
    if pid == 0:
        own = runtime._signal_wakeup
        signal.signal(signal.SIGUSR1, lambda signum, frame: None)
        signal.raise_signal(signal.SIGUSR1)  # the C handler writes its number to the pipe
        # (select, not read: a read would take the byte from a pipe shared with the parent)
        os._exit(0 if own and select.select([own[0]], [], [], 0)[0] else 3)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, "the child's pipe"
    try:
        got = os.read(parent_pipe[0], 16)
    except BlockingIOError:
        got = b""
    assert got == b"", "the parent's pipe got the child's signal"
    print("ok")

stackful.run(main, handle_signals=(signal.SIGINT,))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("imports", ["asyncio", "no-asyncio"])
def test_a_forked_child_gets_a_signal_wake_up_pipe_of_its_own(imports: str) -> None:
    """A task forks and the run goes on in the child: a signal there writes into the child's
    own wake-up pipe, which its poller watches.  Before, it wrote into the pipe inherited from
    the parent (waking the parent's hub, the byte left in the parent's pipe), or, with
    asyncio imported, into no pipe at all."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _FORK_WAKEUP_PIPE, imports],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr


# A stand-in for the hub's clock that raises a signal on its n-th read in the hub's idle wait.
# Its globals name it scheduler code, so the signal's handler runs as if the signal had come
# at that instruction of the hub (where the interpreter's periodic check can run it).
_HUB_CLOCK_SIGNAL = """
def perf_counter():
    if sys._getframe(1).f_code.co_name == "_wait_for_events":
        reads[0] += 1
        if reads[0] == at_read:
            signal.raise_signal(signum)
    return real()
"""


# The hub's first wait is short (main's first sleep), its second long (5 s): reads 1 and 2
# are before and after the first, read 3 before the second.
@pytest.mark.parametrize("at_read", [1, 2, 3],
                         ids=["before-a-short-wait", "after-a-wait", "before-a-long-wait"])
@pytest.mark.parametrize(("signum", "raised", "default"), HANDLED_SIGNALS)
def test_a_signal_landing_in_the_hub_next_to_its_idle_wait_winds_the_run_down(
        monkeypatch: pytest.MonkeyPatch, at_read: int, signum: int, raised: type,
        default: Any) -> None:
    """A signal whose handler runs in the hub just before or just after it waits in the
    poller (where no task is current and the hub is not yet, or no longer, idle) ends the run
    like any other: every task's ``finally`` runs, run() raises the signal's exception, and
    the hub does not sleep through it (the sleepers are wound down, never woken).  Before
    the fix, the first case escaped run() with no task wound down (a server under load lost
    its handlers' ``finally`` blocks, once in thousands of signals)."""
    import sys
    import time

    from stackful._core import _run

    namespace: dict[str, Any] = {"__name__": "stackful._core._run", "sys": sys,
                                 "signal": signal, "signum": signum, "at_read": at_read,
                                 "reads": [0], "real": time.perf_counter}
    exec(_HUB_CLOCK_SIGNAL, namespace)
    monkeypatch.setattr(_run, "_perf_counter", namespace["perf_counter"])
    log: list[str] = []

    def sleeper(name: str, first: float = 0) -> None:
        try:
            if first:
                sleep(first)  # the first wait is short: its second clock read comes soon
            sleep(5)
            log.append(f"{name} woke")
        finally:
            log.append(f"{name} finally")

    def main() -> None:
        spawn(sleeper, "a")
        spawn(sleeper, "b")
        # Long enough that its timer is not already due when the hub first waits (a loaded
        # machine): then the first wait would be the long one, and read 3 would never come.
        sleeper("main", 0.1)

    with pytest.raises(raised):
        run(main, handle_signals=(signal.SIGINT, signal.SIGTERM))
    assert namespace["reads"][0] >= at_read  # the signal was raised where the test meant
    assert sorted(log) == ["a finally", "b finally", "main finally"]
    assert signal.getsignal(signum) is default


@pytest.mark.parametrize(("signum", "raised", "default"), HANDLED_SIGNALS)
def test_a_signal_in_user_code_is_raised_at_the_next_blocking_point(
        signum: int, raised: type, default: Any) -> None:
    """A signal landing while a task runs a loop whose condition is a comparison (where
    CPython 3.13 and 3.14 can raise an exception a signal handler raised outside the
    ``try`` around it, skipping its ``finally``) is raised at the loop's next blocking
    point instead: in every trial the ``finally`` runs."""
    for _trial in range(40):
        log: list[str] = []

        def busy(log: list[str] = log) -> None:
            pending = b"GET / HTTP/1.1\r\n\r\n" * 100
            deadline = time.monotonic() + BOUND  # only the signal ends the loop: bound it
            try:
                log.append("in try")
                threading.Timer(0.002, os.kill, (os.getpid(), signum)).start()
                while True:
                    while b"\r\n\r\n" in pending:
                        _, pending = pending.split(b"\r\n\r\n", 1)
                        yield_now()
                    pending = b"GET / HTTP/1.1\r\n\r\n" * 100
                    assert time.monotonic() < deadline, "the signal never came"
            finally:
                log.append("finally")

        def main() -> None:
            spawn(busy).join()

        with pytest.raises(raised):
            run(main, handle_signals=(signal.SIGINT, signal.SIGTERM))
        assert log == ["in try", "finally"]
        assert signal.getsignal(signum) is default


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("signum", "raised", "default"), HANDLED_SIGNALS)
def test_a_signal_reaches_a_task_that_never_blocks(signum: int, raised: type,
                                                   default: Any) -> None:
    """A task spinning without a blocking point still gets the signal: raised where it
    runs once it has not blocked for a while (not a wait for a second signal)."""
    spins = [0]
    deadline = time.monotonic() + BOUND

    def spin() -> None:
        while True:  # only the signal stops it: bounded so that a lost one fails the test
            spins[0] += 1
            assert time.monotonic() < deadline, "the signal never reached the spinning task"

    def main() -> None:
        timer = threading.Timer(0.01, os.kill, (os.getpid(), signum))
        timer.start()
        spin()

    with pytest.raises(raised):
        run(main, handle_signals=(signal.SIGINT, signal.SIGTERM))
    assert spins[0] > 0
    assert signal.getsignal(signum) is default


# How the task the signal lands in ends before its next blocking point: it returns (a
# spawned task's return is finished in C), it fails, or it is main and returns.
FINISHES_FIRST = ["returns", "fails", "main returns"]


@pytest.mark.parametrize("ending", FINISHES_FIRST)
@pytest.mark.parametrize(("signum", "raised", "default"), HANDLED_SIGNALS)
def test_a_signal_whose_task_finishes_before_blocking_still_ends_the_run(
        ending: str, signum: int, raised: type, default: Any) -> None:
    """The signal's exception waits for the task's next blocking point, but the task
    finishes first (a connection's handler sees EOF and returns, as a server's SIGTERM
    often finds it): the run still ends with the exception instead of sleeping on."""
    log: list[str] = []
    failures: list[BaseException] = []

    def signalled() -> None:
        os.kill(os.getpid(), signum)
        for _ in range(1000):  # the handler runs between these bytecodes: deferred
            pass
        log.append("finished without blocking")
        if ending == "fails":
            raise ValueError("failed after the signal")

    def main() -> None:
        if ending == "main returns":
            signalled()
            return
        spawn(signalled)
        try:
            sleep(BOUND)  # the real clock: only the signal's exception ends this early
            log.append("slept on")
        finally:
            log.append("main finally")

    rt = Runtime(handle_signals=(signal.SIGINT, signal.SIGTERM),
                 excepthook=lambda args: failures.append(args.exc_value))
    with pytest.raises(raised):
        rt.run(main)
    expected = ["finished without blocking"] + ([] if ending == "main returns"
                                                else ["main finally"])
    assert log == expected
    assert [type(e) for e in failures] == ([ValueError] if ending == "fails" else [])
    assert signal.getsignal(signum) is default


@pytest.mark.parametrize(("signum", "raised", "default"), HANDLED_SIGNALS)
def test_a_signal_landing_in_a_finished_tasks_hand_over_ends_the_run(
        signum: int, raised: type, default: Any) -> None:
    """The signal lands after a task finished but before the next one runs (the finished
    task is still current while it picks its successor): the hub takes the exception, as
    for a signal between tasks, instead of an interruption of a task that is gone."""
    landed_after: list[str] = []
    log: list[str] = []

    class SignalInHandOver(Runtime):
        def _pick_next(self) -> Any:
            task = self.current
            if not landed_after and task is not None and task.done():
                landed_after.append(task.name)
                os.kill(os.getpid(), signum)
                for _ in range(1000):  # the handler runs between these bytecodes
                    pass
            return super()._pick_next()

    def failing() -> None:  # (a failed task's end goes through the Python side)
        raise ValueError("the task ends")

    def main() -> None:
        spawn(failing, name="failing")
        try:
            sleep(BOUND)  # the real clock: only the signal's exception ends this early
            log.append("slept on")
        finally:
            log.append("main finally")

    failures: list[BaseException] = []
    rt = SignalInHandOver(handle_signals=(signal.SIGINT, signal.SIGTERM),
                          excepthook=lambda args: failures.append(args.exc_value))
    with pytest.raises(raised):
        rt.run(main)
    assert landed_after == ["failing"]
    assert log == ["main finally"]
    assert [type(e) for e in failures] == [ValueError]
    assert signal.getsignal(signum) is default


SIGNAL_FUZZ_TRIALS = 100


@pytest.mark.timeout(300)
def test_signals_at_random_moments_in_a_busy_mix_of_tasks_always_end_the_run() -> None:
    """SIGINT or SIGTERM from a thread at a random moment while tasks start, finish (some
    failing), pass items through a channel under a lock, yield and sleep: every trial's run
    ends with the signal's exception.  (Before the two fixes above, a third of the trials
    served on: the signal had landed in a task that finished before blocking again.)"""
    outcomes = []
    for trial in range(SIGNAL_FUZZ_TRIALS):
        rng = random.Random(trial)
        signum = signal.SIGINT if trial % 2 else signal.SIGTERM
        deadline = time.monotonic() + BOUND
        items: Channel[int] = Channel(4)
        lock = Lock()
        sender = threading.Timer(rng.uniform(0, 0.02), os.kill, (os.getpid(), signum))

        def short(rng: random.Random = rng) -> None:
            for _ in range(rng.randrange(50)):
                pass
            if rng.random() < 0.3:
                yield_now()
            if rng.random() < 0.1:
                raise ValueError("a failing short task")

        def producer(items: Channel[int] = items, lock: Lock = lock) -> None:
            while True:
                items.send(1)
                with lock:
                    yield_now()

        def consumer(items: Channel[int] = items) -> None:
            while True:
                items.recv()
                spawn(short)

        def main(rng: random.Random = rng, deadline: float = deadline,
                 sender: threading.Timer = sender) -> None:
            sender.start()  # (from here the runtime handles the signal)
            for _ in range(3):
                spawn(producer)
                spawn(consumer)
            while True:
                assert time.monotonic() < deadline, "the signal was lost"
                spawn(short)
                if rng.random() < 0.5:
                    sleep(0)
                else:
                    yield_now()

        rt = Runtime(handle_signals=(signal.SIGINT, signal.SIGTERM),
                     excepthook=lambda args: None)
        try:
            rt.run(main)
        except (KeyboardInterrupt, SystemExit) as exc:
            outcomes.append(type(exc))
        finally:
            sender.join(BOUND)
            assert not sender.is_alive()
    expected = [KeyboardInterrupt if trial % 2 else SystemExit
                for trial in range(SIGNAL_FUZZ_TRIALS)]
    assert outcomes == expected


def test_a_deferred_signal_waits_its_grace_before_it_is_raised_where_the_task_runs() -> None:
    """A task that spins briefly (10 ms) after the signal, then blocks, gets the exception
    at that blocking point: it is raised in the spin only after the grace of 50 ms, which
    only a stall of the whole process could reach.  (The escalation thread once "slept" on
    a fresh lock, which returns at once, and raised it in the spin within a few ms.)"""
    from stackful._core._run import _SIGNAL_ESCALATE_AFTER

    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # the escalation thread gets the GIL early in the spin
    try:
        for _trial in range(5):
            spun: list[bool] = []
            sent = [0.0]

            def spin(spun: list[bool] = spun, sent: list[float] = sent) -> None:
                sent[0] = time.monotonic()
                os.kill(os.getpid(), signal.SIGINT)
                while time.monotonic() < sent[0] + 0.01:  # no blocking point for 10 ms
                    pass
                spun.append(True)
                yield_now()  # the blocking point the exception waits for

            with pytest.raises(KeyboardInterrupt):
                run(spin)
            raised_after = time.monotonic() - sent[0]
            assert spun or raised_after >= _SIGNAL_ESCALATE_AFTER, raised_after
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.timeout(60)
def test_a_second_signal_is_raised_at_once() -> None:
    """Two signals before the task blocks: the second raises where the task runs, and the
    run ends with one KeyboardInterrupt (the first's is not delivered again later)."""
    after: list[str] = []

    def spin() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):  # the first lands here, deferred
            pass
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):  # the second lands here: raised at once
            pass
        after.append("not interrupted")

    with pytest.raises(KeyboardInterrupt):
        run(spin)
    assert after == []


def test_sigint_alone_is_handled_by_default() -> None:
    """Without handle_signals, SIGTERM keeps its default action: the runtime leaves it be."""
    seen = []

    def main() -> None:
        seen.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))

    run(main)
    assert seen[0][0] is not signal.default_int_handler
    assert seen[0][1] is signal.SIG_DFL


# -- introspection and limits ----------------------------------------------------------------------


def test_tasks_lists_names_and_states() -> None:
    snapshot: list[tuple[str, str, str]] = []

    def main() -> None:
        spawn(sleep, 5, name="sleeper")
        spawn(yield_now, name="fresh")
        yield_now()  # sleeper parks; fresh yields and is ready again
        snapshot.extend((t.name, t.state, t.waiting_on) for t in tasks())

    vrun(main)
    assert snapshot == [
        ("main", "running", ""),
        ("sleeper", "blocked", "sleep"),
        ("fresh", "ready", ""),
    ]


def test_max_tasks_caps_live_tasks_and_frees_slots() -> None:
    def main() -> None:
        t = spawn(yield_now, name="one")
        with pytest.raises(TooManyTasksError, match=r"already has 2 live tasks \(max_tasks=2\)"):
            spawn(yield_now, name="two")
        t.join()
        spawn(yield_now).join()  # the finished task's slot is free again

    Runtime(max_tasks=2).run(main)


def test_max_tasks_validation() -> None:
    with pytest.raises(ValueError, match="max_tasks must be a positive int"):
        Runtime(max_tasks=0)


def test_many_tasks_spawn_and_join() -> None:
    def main() -> int:
        ts = [spawn(lambda i=i: i * 2) for i in range(2000)]
        return sum(int(t.join()) for t in ts)

    assert run(main) == sum(i * 2 for i in range(2000))


# -- threads ---------------------------------------------------------------------------------------


def test_each_thread_runs_its_own_runtime() -> None:
    results: dict[int, int] = {}
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        def main() -> int:
            total = 0
            for i in range(50):
                total += i * k
                yield_now()
            return total

        try:
            results[k] = run(main)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    assert not any(t.is_alive() for t in threads), "a runtime's thread did not finish"
    assert errors == []
    assert results == {k: k * sum(range(50)) for k in (1, 2, 3)}


def test_cancel_from_another_thread_is_rejected() -> None:
    box: list[Task] = []
    errors: list[str] = []

    def main() -> None:
        box.append(spawn(sleep, 1))
        th = threading.Thread(target=lambda: _try_cancel(box[0], errors))
        th.start()
        th.join(BOUND)
        assert not th.is_alive(), "the cancelling thread did not finish"

    vrun(main)
    assert errors and "another thread" in errors[0]


def _try_cancel(task: Task, errors: list[str]) -> None:
    try:
        task.cancel()
    except RuntimeError as exc:
        errors.append(str(exc))


def test_task_spawned_during_the_wind_down_is_wound_down_too() -> None:
    born: list[Task] = []
    ran: list[str] = []

    def late() -> None:
        ran.append("late")
        for _ in range(1000):  # without the wind-down it would outlive main by 1000 s
            sleep(1)

    def child() -> None:
        try:
            sleep(math.inf)
        finally:  # runs when main's end cancels us
            born.append(spawn(late, name="late"))

    def main() -> None:
        spawn(child)
        yield_now()

    clock = VirtualClock()
    run(main, clock=clock)
    assert clock.now() == 0 and ran == []
    assert born[0].cancelled()


def test_pending_interruptions_keep_the_strongest() -> None:
    def main() -> None:
        rt = lowlevel.current_runtime()
        me = current_task()
        with lowlevel.timeout_scope(1) as outer, lowlevel.timeout_scope(1) as inner:
            # Both fire while main runs (it never blocks): inner's lands after outer's, and
            # must not replace it.
            outer._fire(None)
            inner._fire(None)
            assert me._pending_exc is outer.error
            rt.cancel(me)
            assert isinstance(me._pending_exc, Cancelled)
            outer._fire(None)  # a weaker one never replaces it
            assert isinstance(me._pending_exc, Cancelled)
            with pytest.raises(Cancelled):
                yield_now()

    vrun(main)


@pytest.mark.parametrize("where", ["hub", "task"])
def test_timer_callback_error_ends_the_run_and_reaches_no_task(where: str) -> None:
    seen: list[str] = []

    def spinner() -> None:
        try:
            while True:
                clock.advance(0.5)
                # Virtual time bounds the spin: a timer that never fires fails the test.
                assert clock.now() < 1000, "the due timers never fired"
                yield_now()  # timers are checked inside this task's yields
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise

    def sleeper() -> None:
        try:
            sleep(100)
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise

    def main() -> None:
        spawn(sleeper)
        if where == "task":
            spawn(spinner)
        lowlevel.call_later(1, lambda _: 1 / 0)
        sleep(50)

    clock = VirtualClock()
    with pytest.raises(ZeroDivisionError):
        run(main, clock=clock)
    assert seen == (["Cancelled", "Cancelled"] if where == "task" else ["Cancelled"])


def test_a_signal_with_a_users_handler_is_left_to_it() -> None:
    seen: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        def main() -> str:
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(100):
                yield_now()
            return "done"

        assert run(main, handle_signals=(signal.SIGUSR1,)) == "done"
        assert seen == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.parametrize("bad", [0, 100_000, "SIGTERM", True, signal.SIGKILL])
def test_handle_signals_must_be_catchable_signal_numbers(bad: Any) -> None:
    with pytest.raises(ValueError, match="handle_signals"):
        Runtime(handle_signals=(bad,))


def test_a_running_task_keeps_no_tuple_of_its_arguments() -> None:
    # The call's arguments live in the task's frame; the tuple they came in (and an empty
    # kwargs dict) is let go when the call starts: a server's idle connection would keep
    # both for nothing (spawn.c, _task_entry).  (A call with keywords keeps its dict.)
    import gc

    from stackful.sync import Event

    class Marker:
        pass

    def child(marker: Marker, done: Event) -> None:
        done.wait()

    def main() -> None:
        marker, done = Marker(), Event()
        with TaskGroup() as tg:
            tasks = [spawn(child, marker, done), tg.spawn(child, marker, done),
                     tg.spawn(child, marker, done, stack_size=256 * 1024)]
            yield_now()  # they run and park in done.wait()
            holders = [r for r in gc.get_referrers(marker) if isinstance(r, (tuple, dict))]
            assert holders == []
            done.set()
        for task in tasks:
            task.join()

    run(main)
