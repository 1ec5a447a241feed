"""The runtime's C hot path: ReadyQueue, TaskCore, SchedulerCore, yield_now."""

from __future__ import annotations

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
        t.join()
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


# What deleting (or mis-setting) each field of a C-backed object must do.  The C hot path reads
# these fields without checking for NULL, so a `del` that succeeded would crash at the next
# yield: each case runs in a subprocess that then goes on yielding and finishing a run.
FIELD_OUTCOMES = {
    "task.state": "AttributeError: cannot delete 'state' of a Task",
    "task._fiber": "AttributeError: cannot delete '_fiber' of a Task",
    "task._pending_exc": "AttributeError: cannot delete '_pending_exc' of a Task",
    "runtime.current": "AttributeError: cannot delete 'current' of a Runtime",
    "runtime.ready": "AttributeError: readonly attribute",
    "runtime._countdown": "TypeError: can't delete numeric/char attribute",
    "runtime.current=junk": "RuntimeError: yield_now() must be called from a task",
    "fiber.name": "TypeError: name must be a str",
    "fiber.parent": "ValueError: a fiber's parent cannot be deleted or set to None",
    "fiber.context": "deleted",  # a fiber's context may be None: it gets a fresh one
    "fiber.__dict__": "TypeError: cannot delete __dict__",
}


@pytest.mark.parametrize("field", sorted(FIELD_OUTCOMES))
def test_deleting_a_core_field_is_an_error_and_the_runtime_goes_on(field: str) -> None:
    result = run_crash_script("delete_core_fields.py", field, timeout=60)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert f"outcome: {FIELD_OUTCOMES[field]}" in result.stdout, out
    assert "run returned" in result.stdout, out


def test_core_fields_reject_deletion_outside_a_run() -> None:
    class T(_native.TaskCore):
        __slots__ = ()

    t = T()
    for name in ("state", "_fiber", "_pending_exc"):
        with pytest.raises(AttributeError, match=f"cannot delete '{name}'"):
            delattr(t, name)
    s = _native.SchedulerCore()
    with pytest.raises(AttributeError, match="cannot delete 'current'"):
        del s.current
    s.current = t  # any object may be set; only the hot path checks what it finds
    assert s.current is t
