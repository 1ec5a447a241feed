"""The watchdog: a task holding the thread too long is reported once, with its stack; tasks
that yield, an idle runtime, and nothing after the run are not.

Real time is the point here (the watchdog measures how long the thread is held), so these tests
sleep for real, and what is asserted is only whether a report happened.  Each stall is six
thresholds long.  The quiet runs use a threshold four times longer, 0.2 s: a runtime thread that
the machine does not schedule for that long holds the thread as much as a blocking call does,
and on a loaded machine that happens for 50 ms.  For the same reason, reports are counted for
the task under test only.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

from stackful import lowlevel, monkey
from stackful._native import Watcher
from stackful.runtime_api import BlockingReport, Runtime, run, sleep, spawn, yield_now

from ._support import child_env

THRESHOLD = 0.05
STALL = 0.3  # six thresholds
QUIET_THRESHOLD = 0.2


def watched(main: Any, threshold: float = THRESHOLD) -> tuple[Any, list[BlockingReport]]:
    """Run ``main`` under the watchdog; return its result and the reports, in order."""
    reports: list[BlockingReport] = []
    result = run(main, watchdog=threshold, watchdog_hook=reports.append)
    return result, reports


def watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("stackful-watchdog")]


# -- what is reported ------------------------------------------------------------------------------


def blocking_helper() -> None:
    time.sleep(STALL)


def sleeper_body() -> str:
    yield_now()
    blocking_helper()
    return "slept"


def test_a_blocking_call_is_reported_once_with_the_task_and_its_stack() -> None:
    def main() -> tuple[str, int]:
        task = spawn(sleeper_body, name="sleeper")
        return task.join(), task.id

    (result, task_id), reports = watched(main)
    assert result == "slept"
    mine = [r for r in reports if r.task_name == "sleeper"]
    assert len(mine) == 1, reports
    report = mine[0]
    assert report.task_id == task_id
    assert report.blocked_for >= THRESHOLD
    assert report.thread_id == threading.get_ident()
    # The task's own stack (its fiber's), from its function down to the blocking call; the
    # runtime's task entry is left out, and nothing of the hub's stack is there.
    assert [(f.name, f.line) for f in report.stack] == [
        ("sleeper_body", "blocking_helper()"),
        ("blocking_helper", "time.sleep(STALL)"),
    ]
    assert report.stack[-1].filename == __file__


def test_a_call_holding_the_gil_right_after_a_switch_is_reported_at_its_line() -> None:
    # A C function called through PyDLL keeps the GIL, so no Python thread can look while it
    # runs; the watchdog samples without the GIL and reports once the call returns.
    libc = ctypes.PyDLL(None)

    def hog() -> None:
        yield_now()  # the stall begins right after a switch: nothing saw this task run before
        libc.usleep(int(STALL * 1e6))

    def main() -> None:
        spawn(hog, name="hog").join()

    _, reports = watched(main)
    mine = [r for r in reports if r.task_name == "hog"]
    assert len(mine) == 1, reports
    assert mine[0].blocked_for >= THRESHOLD
    assert [(f.name, f.line) for f in mine[0].stack] == [
        ("hog", "libc.usleep(int(STALL * 1e6))")]


def test_the_default_hook_prints_the_report_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    def main() -> None:
        spawn(sleeper_body, name="sleeper").join()

    run(main, watchdog=THRESHOLD)
    err = capsys.readouterr().err
    assert err.count("stackful watchdog: task 'sleeper'") == 1, err
    assert "has not yielded for" in err
    assert "in blocking_helper\n    time.sleep(STALL)\n" in err


def test_each_stall_is_reported_once() -> None:
    def main() -> None:
        blocking_helper()
        yield_now()  # the first stall ends here
        blocking_helper()

    _, reports = watched(main)
    assert [r.task_name for r in reports if r.task_id is not None] == ["main", "main"]


def test_a_callback_blocking_the_hub_is_reported_as_the_hub() -> None:
    def blocking_callback(_: object) -> None:
        time.sleep(STALL)

    def main() -> None:
        lowlevel.call_later(0.01, blocking_callback)
        sleep(STALL * 2)  # the hub runs the callback while main sleeps

    _, reports = watched(main)
    hub = [r for r in reports if r.stack and r.stack[-1].name == "blocking_callback"]
    assert len(hub) == 1, reports
    assert (hub[0].task_name, hub[0].task_id) == ("hub", None)
    assert "the hub has not yielded" in hub[0].format()


# -- what is not -----------------------------------------------------------------------------------


def busy_until(deadline: float) -> int:
    """Compute in small steps, yielding after each, until ``deadline``."""
    rounds = 0
    while time.monotonic() < deadline:
        sum(range(2_000))
        yield_now()
        rounds += 1
    return rounds


def test_tasks_that_yield_often_are_not_reported() -> None:
    def main() -> None:
        deadline = time.monotonic() + 4 * QUIET_THRESHOLD
        workers = [spawn(busy_until, deadline) for _ in range(3)]
        for w in workers:
            assert w.join() > 0

    _, reports = watched(main, QUIET_THRESHOLD)
    assert reports == []


def test_a_lone_task_that_yields_often_is_not_reported() -> None:
    # Nobody else is ready, so its yields switch nowhere: only the progress counter moves.
    _, reports = watched(lambda: busy_until(time.monotonic() + 4 * QUIET_THRESHOLD),
                         QUIET_THRESHOLD)
    assert reports == []


def test_an_idle_runtime_is_not_reported() -> None:
    def main() -> None:
        sleep(4 * QUIET_THRESHOLD)  # the hub waits in the poller: idle, not stalled

    _, reports = watched(main, QUIET_THRESHOLD)
    assert reports == []


def test_a_call_made_cooperative_by_patching_is_not_reported() -> None:
    def main() -> None:
        time.sleep(4 * QUIET_THRESHOLD)  # patched: parks the task, the hub idles

    was_patched = monkey.is_patched("time")
    monkey.patch_time()
    try:
        _, reports = watched(main, QUIET_THRESHOLD)
    finally:
        if not was_patched:
            monkey.unpatch("time")
    assert reports == []


def test_no_watchdog_by_default() -> None:
    def main() -> list[threading.Thread]:
        return watchdog_threads()

    assert run(main) == []


# -- the thread's life -----------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["returns", "raises"])
def test_the_thread_runs_only_during_the_run(outcome: str) -> None:
    seen: list[threading.Thread] = []

    def main() -> None:
        seen.extend(watchdog_threads())
        assert all(t.is_alive() and t.daemon for t in seen)
        if outcome == "raises":
            raise ValueError("main failed")

    rt = Runtime(watchdog=THRESHOLD)
    if outcome == "raises":
        with pytest.raises(ValueError, match="main failed"):
            rt.run(main)
    else:
        rt.run(main)
    assert len(seen) == 1
    assert not seen[0].is_alive()  # joined by run() before it returned or raised
    assert watchdog_threads() == []


def test_a_failing_hook_goes_to_threading_excepthook_and_watching_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[BlockingReport] = []
    failures: list[threading.ExceptHookArgs] = []

    def hook(report: BlockingReport) -> None:
        calls.append(report)
        if len(calls) == 1:
            raise RuntimeError("the hook failed")

    monkeypatch.setattr(threading, "excepthook", failures.append)

    def main() -> str:
        blocking_helper()
        yield_now()
        blocking_helper()
        return "done"

    assert run(main, watchdog=THRESHOLD, watchdog_hook=hook) == "done"
    # The first report's hook failed; the second stall was still reported.
    assert [r.task_name for r in calls if r.task_id is not None] == ["main", "main"]
    assert len(failures) == 1
    assert failures[0].exc_type is RuntimeError
    assert str(failures[0].exc_value) == "the hook failed"
    assert failures[0].thread is not None
    assert failures[0].thread.name.startswith("stackful-watchdog")


def test_a_forked_child_has_no_watchdog_and_ends_its_run_cleanly() -> None:
    script = textwrap.dedent("""
        import os, threading, time
        import stackful

        reports = []

        def main():
            pid = os.fork()
            if pid == 0:  # the child goes on with this run, without the thread
                names = [t.name for t in threading.enumerate()]
                assert not any(n.startswith("stackful-watchdog") for n in names), names
                time.sleep(0.3)  # would be reported if anything watched
                return "child"
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)

        result = stackful.run(main, watchdog=0.05, watchdog_hook=reports.append)
        if result == "child":
            print("child ok", len(reports), flush=True)
            os._exit(0)
        print("parent ok", result, flush=True)
    """)
    proc = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", "-c", script],
                          capture_output=True, text=True, timeout=120, env=child_env())
    assert proc.returncode == 0, proc.stderr
    assert "child ok 0" in proc.stdout
    assert "parent ok 0" in proc.stdout


def test_the_native_watcher_refuses_its_own_thread_and_stays_stopped() -> None:
    watcher = Watcher(Runtime(), threading.get_ident(), 1.0, 0.25)
    with pytest.raises(RuntimeError, match="cannot wait on the thread it watches"):
        watcher.wait()
    watcher.stop()
    watcher.stop()
    got: list[object] = []
    # A daemon: were a wait to hang, the assertion after the bounded join fails the test, and
    # the thread does not hold up the interpreter's exit.
    thread = threading.Thread(target=lambda: got.extend([watcher.wait(), watcher.wait()]),
                              daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert got == [None, None]


# -- arguments -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan")])
def test_the_threshold_must_be_a_positive_number_of_seconds(bad: float) -> None:
    with pytest.raises(ValueError, match="watchdog must be a positive"):
        Runtime(watchdog=bad)


@pytest.mark.parametrize("bad", ["0.1", True])
def test_the_threshold_must_be_a_number(bad: Any) -> None:
    with pytest.raises(TypeError, match="watchdog must be a number"):
        Runtime(watchdog=bad)


def test_the_hook_must_be_callable_and_needs_a_threshold() -> None:
    with pytest.raises(TypeError, match="watchdog_hook must be callable"):
        Runtime(watchdog=1, watchdog_hook="print")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="watchdog_hook needs watchdog"):
        Runtime(watchdog_hook=print)
