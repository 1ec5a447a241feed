"""Delete (or mis-set) one field of a C-backed object, then keep using the runtime.

    python delete_core_fields.py FIELD

FIELD names an attribute of a running task, of the runtime, or of a fiber (see CASES).  The
`del` must raise AttributeError or TypeError and leave the field as it was; a wrong value
set on purpose must give a clear exception where it is used.  Either way the runtime must go
on to yield between tasks, finish and return: the script prints "outcome: ..." and then
"run returned".  Today's failure mode was a segfault at the next yield, hence a subprocess.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import stackful
from stackful.lowlevel import current_runtime
from stackful.runtime_api import current_task, run, spawn, yield_now

HELPER: list[Any] = []  # the other task, ready while main runs


def owner(field: str) -> Any:
    if field.startswith("runtime."):
        return current_runtime()
    if field.startswith("fiber."):
        return stackful.current()
    if field.startswith("other."):
        return HELPER[0]
    return current_task()


def delete(field: str) -> Callable[[], None]:
    def act() -> None:
        obj, name = owner(field), field.split(".", 1)[1]
        before = getattr(obj, name)
        try:
            delattr(obj, name)
        except (AttributeError, TypeError, ValueError) as exc:
            print(f"outcome: {type(exc).__name__}: {exc}", flush=True)
        else:
            print("outcome: deleted", flush=True)
            return
        assert getattr(obj, name) is before, f"{field} changed"
    return act


def set_current_to_junk() -> None:
    rt = current_runtime()
    rt.current = object()
    try:
        yield_now()
    except RuntimeError as exc:
        print(f"outcome: RuntimeError: {exc}", flush=True)
    rt.current = current_task_of(rt)


def current_task_of(rt: Any) -> Any:
    return next(t for t in rt.tasks() if t.name == "main")


CASES: dict[str, Callable[[], None]] = {
    name: delete(name)
    for name in (
        "task.state", "task._fiber", "task._pending_exc",
        "other.state", "other._fiber", "other._pending_exc",
        "runtime.current", "runtime.ready", "runtime._countdown",
        "fiber.name", "fiber.parent", "fiber.context", "fiber.__dict__",
    )
}
CASES["runtime.current=junk"] = set_current_to_junk


def main(field: str) -> None:
    def other() -> None:
        for _ in range(3):
            yield_now()

    def body() -> str:
        helper = spawn(other)
        HELPER.append(helper)
        CASES[field]()
        for _ in range(3):
            yield_now()
        helper.join()
        return "done"

    try:
        assert run(body) == "done"
    except Exception as exc:
        print(f"run raised {type(exc).__name__}: {exc}", flush=True)
    else:
        print("run returned", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
