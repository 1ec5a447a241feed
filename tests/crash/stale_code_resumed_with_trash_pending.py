"""A fiber near the end of a small stack frees a container (the trash can defers it: too
little stack left to free it there), then switches, with the deferred garbage pending, to
fibers suspended before tracing came on.  3.15 instrumented the resumed fibers' code before
the stack switch: instrumenting frees objects, and CPython then freed the deferred garbage
on the small stack, judging the room left by the resumed fiber's stack bounds -- unchecked
recursion through a deeply nested list, past the small stack's end.

Each suspended fiber is switched to once with garbage pending: one started before the small
fiber, one after (the bug needs the resumed fiber's stack to lie below the small one's).

Prints one line per switch and "ok"."""

import sys
from typing import Any

import stackful
from stackful import Fiber

root = stackful.current()
finalized: list[int] = []


def nested(depth: int) -> list[Any]:
    x: list[Any] = []
    for _ in range(depth):
        x = [x]
    return x


class Probe:
    """Garbage whose finalizer tells if it was freed or deferred."""

    def __init__(self) -> None:
        self.payload = nested(100_000)  # freed unchecked, far deeper than the stack

    def __del__(self) -> None:
        finalized.append(1)


def dive(target: Fiber, depth: int = 0) -> str:
    before = len(finalized)
    probe = Probe()
    del probe
    if len(finalized) == before:
        # Deferred: the stack is nearly used up.  Switch with the garbage pending.
        return f"{target.switch('pending')} at depth {depth}"
    # One level deeper on the C stack (map calls back into the interpreter).
    try:
        return next(map(lambda d: dive(target, d), [depth + 1]))
    except RecursionError:
        if depth == 0:
            return "the trash can never deferred"
        raise


def small_fiber_body(targets: list[Fiber]) -> str:
    root.switch("parked")
    for target in targets:
        print(dive(target).split(" at depth")[0])
    return "small fiber done"


# Two functions: each resumed fiber's code must still be out of date when it is resumed.
def started_before() -> str:
    got = root.switch("parked")      # resumed here, mid-call, after tracing came on
    small.switch(f"resumed with {got}")
    return "unreachable"


def started_after() -> str:
    got = root.switch("parked")
    small.switch(f"resumed with {got}")
    return "unreachable"


def tracer(frame: Any, event: str, arg: Any) -> None:
    return None


before_small = Fiber(started_before)
assert before_small.switch() == "parked"
small = Fiber(small_fiber_body, stack_size=64 * 1024)
after_small = Fiber(started_after)
assert small.switch([before_small, after_small]) == "parked"
assert after_small.switch() == "parked"

sys.settrace(tracer)                 # the suspended fibers' code is now out of date
result = small.switch()
sys.settrace(None)
print(result)
print("ok")
