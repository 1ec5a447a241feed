"""to_thread: blocking calls on the worker pool while the other tasks run (_core/_threads.py)."""

from __future__ import annotations

import contextvars
import os
import threading
import time

import pytest

import stackful
from stackful import Cancelled, timeout
from stackful._core._threads import pool

from ._net import run_bounded
from ._support import child_status, in_forked_child

# Every wait on another thread in these tests is bounded by this; every run waiting for jobs is
# a run_bounded, so a job whose outcome never comes back fails the test instead of hanging it.
LIMIT = 10.0


def test_result_and_exception_are_carried_back() -> None:
    def failing() -> None:
        raise ValueError("from the thread")

    def main() -> tuple[int, str]:
        value = stackful.to_thread(pow, 2, 10)
        with pytest.raises(ValueError, match="from the thread") as info:
            stackful.to_thread(failing)
        frames = [f.name for f in __import__("traceback").extract_tb(info.value.__traceback__)]
        return value, frames[-1]

    assert run_bounded(main) == (1024, "failing")


def test_jobs_run_at_once_on_separate_threads() -> None:
    # Ten jobs meet at a barrier of ten: it only opens if all ten run at the same time.
    barrier = threading.Barrier(10, timeout=LIMIT)
    runtime_thread = threading.get_ident()

    def job(i: int) -> tuple[int, int]:
        barrier.wait()
        return i, threading.get_ident()

    def main() -> list[tuple[int, int]]:
        tasks = [stackful.spawn(stackful.to_thread, job, i) for i in range(10)]
        return [t.join() for t in tasks]

    results = run_bounded(main)
    assert [i for i, _ in results] == list(range(10))
    assert runtime_thread not in {ident for _, ident in results}
    assert len({ident for _, ident in results}) == 10


def test_other_tasks_run_while_a_task_waits_for_its_job() -> None:
    # The job waits for something only another *task* does: the runtime must not be blocked.
    released = threading.Event()

    def main() -> bool:
        waiter = stackful.spawn(stackful.to_thread, released.wait, LIMIT)
        stackful.sleep(0.05)
        assert waiter.state == "blocked"
        released.set()
        return bool(waiter.join())

    assert run_bounded(main) is True


def test_cancel_stops_the_wait_and_drops_the_outcome() -> None:
    release = threading.Event()
    finished = threading.Event()

    def job() -> str:
        release.wait(LIMIT)
        finished.set()
        return "late"

    def main() -> None:
        task = stackful.spawn(stackful.to_thread, job)
        stackful.sleep(0.05)
        task.cancel()
        with pytest.raises(Cancelled):
            task.join()
        release.set()
        # The job ends on its own; its outcome reaches nobody, and breaks nothing.
        stackful.to_thread(finished.wait, LIMIT)
        stackful.sleep(0.05)

    run_bounded(main)
    assert finished.is_set()


def test_timeout_around_to_thread() -> None:
    release = threading.Event()

    def main() -> None:
        with pytest.raises(TimeoutError):
            with timeout(0.05):
                stackful.to_thread(release.wait, LIMIT)
        release.set()

    run_bounded(main)


def test_the_job_sees_the_tasks_context_variables() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    def main() -> str:
        var.set("from the task")
        return stackful.to_thread(var.get)

    assert run_bounded(main) == "from the task"


def test_the_pool_is_bounded() -> None:
    in_flight = 0
    most = 0
    lock = threading.Lock()

    def job() -> None:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.03)
        with lock:
            in_flight -= 1

    def main() -> None:
        tasks = [stackful.spawn(stackful.to_thread, job) for _ in range(8)]
        for t in tasks:
            t.join()

    old = pool.max_workers
    stackful.set_thread_pool_size(2)
    try:
        # Workers of earlier tests may still be alive: the bound is on jobs at once.
        run_bounded(main)
    finally:
        stackful.set_thread_pool_size(old)
    assert most <= 2 + max(0, pool.threads - 2)
    assert most >= 1


def test_set_thread_pool_size_checks_its_argument() -> None:
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="positive int"):
            stackful.set_thread_pool_size(bad)  # type: ignore[arg-type]


def test_outside_a_task_it_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="to_thread"):
        stackful.to_thread(pow, 2, 2)
    with pytest.raises(TypeError, match="callable"):
        stackful.run(stackful.to_thread, 42)


def test_run_ends_without_waiting_for_an_abandoned_job() -> None:
    release = threading.Event()
    done: list[str] = []

    def job() -> None:
        release.wait(LIMIT)
        done.append("job")

    def main() -> str:
        stackful.spawn(stackful.to_thread, job)
        stackful.sleep(0.02)
        return "main"  # the task in to_thread is cancelled at shutdown

    assert run_bounded(main) == "main"
    assert not done
    release.set()
    deadline = time.monotonic() + LIMIT
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert done == ["job"]  # it finished on its own; posting to the finished run was refused


def test_many_short_jobs() -> None:
    def main() -> int:
        tasks = [stackful.spawn(stackful.to_thread, abs, -i) for i in range(500)]
        return sum(t.join() for t in tasks)

    assert run_bounded(main) == sum(range(500))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_the_pool_works_in_a_forked_child() -> None:
    run_bounded(lambda: stackful.to_thread(abs, -1))  # the parent's pool has a worker now
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child)
        try:
            ok = stackful.run(stackful.to_thread, abs, -7) == 7
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    assert child_status(pid) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_job_in_flight_at_fork_is_an_error_in_the_child_not_a_hang() -> None:
    release = threading.Event()

    def child(waiter: stackful.Task) -> None:
        with pytest.raises(RuntimeError, match="did not survive fork"):
            with timeout(5):
                waiter.join()
        assert stackful.to_thread(abs, -3) == 3  # the child's own pool works

    def main() -> None:
        waiter = stackful.spawn(stackful.to_thread, release.wait, LIMIT)
        stackful.sleep(0.02)
        pid = in_forked_child(lambda: child(waiter))
        release.set()
        assert waiter.join() is True  # the parent's job was not disturbed
        assert child_status(pid) == 0

    run_bounded(main)


def test_an_outcome_never_wakes_a_task_from_another_wait() -> None:
    # A job's outcome is for the task's park *for that job*: a task blocked in some other wait
    # (had it parked between submitting and waiting) is left alone.
    from stackful._core._threads import _deliver, _Job

    def main() -> str:
        waiter = stackful.spawn(stackful.lowlevel.park, "another wait")
        stackful.sleep(0)
        _deliver(_Job(abs, (-1,), {}, waiter), (True, "the job's outcome"))
        stackful.sleep(0.01)
        assert waiter.state == "blocked"
        stackful.lowlevel.wake(waiter, "its own wake")
        return str(waiter.join())

    assert stackful.run(main) == "its own wake"
