"""The runtime's C hot path: ReadyQueue, TaskCore, SchedulerCore, yield_now."""

from __future__ import annotations

import re
import threading

import pytest

import stackful
from stackful import _native

from ._support import run_crash_script


def test_ready_queue_is_a_fifo() -> None:
    q = _native.ReadyQueue()
    assert not q and len(q) == 0
    items = [object() for _ in range(100)]  # more than the first capacity: it grows
    for item in items:
        q.append(item)
    assert len(q) == 100 and items[5] in q
    assert list(q) == items  # iteration is over a snapshot, front first
    assert [q.popleft() for _ in range(50)] == items[:50]
    q.append("late")
    assert list(q) == [*items[50:], "late"]
    q.remove(items[60])
    assert items[60] not in q and len(q) == 50
    with pytest.raises(ValueError):
        q.remove("absent")
    q.clear()
    with pytest.raises(IndexError):
        q.popleft()
    with pytest.raises(TypeError):
        _native.ReadyQueue(1)


def test_ready_queue_iteration_survives_changes() -> None:
    q = _native.ReadyQueue()
    for i in range(3):
        q.append(i)
    seen = []
    for item in q:
        seen.append(item)
        q.popleft()
    assert seen == [0, 1, 2] and len(q) == 0


def test_task_core_defaults() -> None:
    class T(_native.TaskCore):
        __slots__ = ("extra",)

    t = T()
    assert t.state is _native.TASK_READY == "ready"
    assert t._fiber is None and t._pending_exc is None
    t.state = _native.TASK_RUNNING
    assert t.state == "running"


def test_yield_now_outside_run_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match=r"inside stackful.run\(\)"):
        stackful.yield_now()


def test_set_thread_scheduler_checks_its_argument() -> None:
    with pytest.raises(TypeError):
        _native.set_thread_scheduler(object())
    assert _native.get_thread_scheduler() is None


def test_thread_scheduler_is_per_thread() -> None:
    seen: list[object] = []

    def in_thread() -> None:
        seen.append(_native.get_thread_scheduler())

    def main() -> None:
        here = _native.get_thread_scheduler()
        t = threading.Thread(target=in_thread)
        t.start()
        t.join(60)
        assert not t.is_alive(), "the thread did not finish in 60 s"
        seen.append(here)

    stackful.run(main)
    assert seen[0] is None
    assert isinstance(seen[1], _native.SchedulerCore)
    assert _native.get_thread_scheduler() is None


def test_yield_now_round_robin_order() -> None:
    order: list[str] = []

    def worker(name: str) -> None:
        for i in range(3):
            order.append(f"{name}{i}")
            stackful.yield_now()

    def main() -> None:
        tasks = [stackful.spawn(worker, n) for n in "abc"]
        for t in tasks:
            t.join()

    stackful.run(main)
    assert order == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]


# What deleting (or mis-setting) each field of a C-backed object does, then what the run does.
# The C hot path reads these fields; a NULL left by `del` used to crash the next yield.  Now
# the scheduler's own fields are slots that may be deleted (so the interpreter specialises
# them) but every C read checks: the worst outcome is a clear exception out of run().  Each
# case runs in a subprocess that goes on yielding and ends the run.
FIELD_OUTCOMES = {
    "task.state": ("deleted", "run returned"),  # rewritten at the next switch
    "task._fiber": ("deleted", "run raised AttributeError: .* has no attribute '_fiber'"),
    "task._pending_exc": ("deleted", "run raised AttributeError: .* '_pending_exc'"),
    "other.state": ("deleted", "run returned"),
    "other._fiber": ("deleted", "run raised AttributeError: .* '_fiber'"),
    "other._pending_exc": ("deleted", "run raised AttributeError: .* '_pending_exc'"),
    "runtime.current": ("deleted", "run raised AttributeError: .*'current'"),
    "runtime.ready": ("AttributeError: readonly attribute", "run returned"),
    "runtime._countdown": ("TypeError: can't delete numeric/char attribute", "run returned"),
    "runtime.current=junk": ("RuntimeError: yield_now\\(\\) must be called from a task",
                             "run returned"),
    "fiber.name": ("TypeError: name must be a str", "run returned"),
    "fiber.parent": ("ValueError: a fiber's parent cannot be deleted or set to None",
                     "run returned"),
    "fiber.context": ("deleted", "run returned"),  # a fiber's context may be None
    "fiber.__dict__": ("TypeError: cannot delete __dict__", "run returned"),
}


@pytest.mark.parametrize("field", sorted(FIELD_OUTCOMES))
def test_deleting_a_core_field_never_crashes(field: str) -> None:
    result = run_crash_script("delete_core_fields.py", field, timeout=60)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    outcome, end = FIELD_OUTCOMES[field]
    lines = result.stdout.splitlines()
    assert re.fullmatch(f"outcome: {outcome}", lines[0]), out
    assert re.match(end, lines[-1]), out


def test_core_fields_read_as_missing_once_deleted() -> None:
    class T(_native.TaskCore):
        __slots__ = ()

    t = T()
    for name in ("state", "_fiber", "_pending_exc"):
        delattr(t, name)
        with pytest.raises(AttributeError):
            getattr(t, name)
        setattr(t, name, None)  # and may be set again
        assert getattr(t, name) is None
    s = _native.SchedulerCore()
    del s.current
    with pytest.raises(AttributeError):
        s.current  # noqa: B018
    s.current = t
    assert s.current is t
