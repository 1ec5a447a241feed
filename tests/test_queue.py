"""Queue: FIFO, bounded put blocking, hand-over order, timeouts, task_done/join, misuse."""

from __future__ import annotations

import pytest

from stackful.lowlevel import current_time
from stackful.queue import Empty, Full, Queue
from stackful.runtime_api import Cancelled, run, sleep, spawn, yield_now
from stackful.timeouts import timeout

from ._support import vrun


def test_fifo_and_sizes() -> None:
    def main() -> None:
        q: Queue[int] = Queue(2)
        assert q.empty() and not q.full()
        q.put(1)
        q.put_nowait(2)
        assert q.full() and q.qsize() == 2
        with pytest.raises(Full):
            q.put_nowait(3)
        assert [q.get(), q.get_nowait()] == [1, 2]
        with pytest.raises(Empty):
            q.get_nowait()

    run(main)


def test_bounded_queue_blocks_producers_and_keeps_order() -> None:
    got: list[int] = []

    def main() -> None:
        q: Queue[int] = Queue(1)

        def producer(base: int) -> None:
            for i in range(3):
                q.put(base + i)

        ps = [spawn(producer, 0), spawn(producer, 10)]
        yield_now()
        for _ in range(6):
            got.append(q.get())
        for p in ps:
            p.join()

    run(main)
    assert sorted(got) == [0, 1, 2, 10, 11, 12]
    assert [x for x in got if x < 10] == [0, 1, 2]
    assert [x for x in got if x >= 10] == [10, 11, 12]


def test_get_waits_for_put_and_getters_are_served_in_order() -> None:
    got: list[tuple[str, int]] = []

    def main() -> None:
        q: Queue[int] = Queue()

        def getter(name: str) -> None:
            got.append((name, q.get()))

        ts = [spawn(getter, "a"), spawn(getter, "b")]
        yield_now()
        q.put(1)
        q.put(2)
        for t in ts:
            t.join()

    run(main)
    assert got == [("a", 1), ("b", 2)]


def test_timeouts_raise_empty_and_full() -> None:
    def main() -> None:
        q: Queue[int] = Queue(1)
        with pytest.raises(Empty):
            q.get(timeout=2)
        assert current_time() == 2
        q.put(0)
        with pytest.raises(Full):
            q.put(1, timeout=3)
        assert current_time() == 5
        assert q.get() == 0 and q.empty()  # the timed-out put left nothing behind
        with pytest.raises(ValueError, match="timeout must be >= 0"):
            q.get(timeout=-1)

    vrun(main)


def test_task_done_and_join() -> None:
    done: list[int] = []

    def main() -> None:
        q: Queue[int] = Queue()

        def worker() -> None:
            while True:
                item = q.get()
                sleep(1)
                done.append(item)
                q.task_done()

        spawn(worker)
        for i in range(3):
            q.put(i)
        q.join()
        assert current_time() == 3
        with pytest.raises(ValueError, match="too many times"):
            q.task_done()

    vrun(main)
    assert done == [0, 1, 2]


def test_cancelled_putter_does_not_deliver() -> None:
    def main() -> None:
        q: Queue[str] = Queue(1)
        q.put("first")
        t = spawn(q.put, "lost")
        yield_now()
        t.cancel()
        with pytest.raises(Cancelled):
            t.join()
        assert q.get() == "first"
        assert q.empty()

    run(main)


def test_queue_outside_run() -> None:
    with pytest.raises(RuntimeError, match=r"Queue.get\(\) must be called inside stackful.run"):
        Queue[int]().get()


@pytest.mark.parametrize("how", ["cancelled", "timed-out"])
def test_failed_put_is_not_counted_so_join_returns(how: str) -> None:
    def main() -> None:
        q: Queue[str] = Queue(1)
        q.put("first")
        if how == "cancelled":
            t = spawn(q.put, "lost")
            yield_now()
            t.cancel()
            with pytest.raises(Cancelled):
                t.join()
        else:
            with pytest.raises(Full):
                q.put("lost", timeout=1)
        assert q.get() == "first"
        q.task_done()
        with timeout(10):
            q.join()  # nothing unfinished: returns at once
        with pytest.raises(ValueError, match="too many times"):
            q.task_done()

    vrun(main)


def test_blocked_put_and_get_complete_when_cancelled_after_the_wake() -> None:
    def main() -> None:
        q: Queue[str] = Queue(1)
        q.put("a")
        putter = spawn(q.put, "b")
        yield_now()
        assert q.get() == "a"  # moves "b" in and wakes the putter...
        putter.cancel()  # ...which is cancelled before it runs: its put stands
        putter.join()
        assert q.get() == "b"
        getter = spawn(q.get)
        yield_now()
        q.put("c")  # handed straight to the getter...
        getter.cancel()
        assert getter.join() == "c"  # ...which keeps it
        for _ in range(3):
            q.task_done()
        with timeout(10):
            q.join()

    vrun(main)
