"""C stack bytes per unit of CPython's recursion counter, on this machine and Python.

interp_state.c sizes a fiber's recursion budget from its stack: SF_STACK_BYTES_PER_LEVEL
bytes for every unit of the counter (before 3.14, which compares addresses instead).  How
much C stack a unit really costs depends on the recursion's shape, on the compiler and on
the architecture (AArch64 frames are not x86-64 frames), so this measures it:

* the depth a shape reaches under a recursion limit of 1000, in a fiber whose stack is far
  larger than that needs: units per level = 1000 / depth;
* the C stack pointer (stackful._native.stack_pointer) at two depths: bytes per level;
* bytes per unit = bytes per level / units per level: what the budget must allow.

Shapes: ``sorted(key=...)`` whose key recurses (Python -> C -> Python, the worst measured),
``repr()`` of nested lists down to an object whose ``__repr__`` looks (C recursion only),
pure Python calls, and ``json.dumps`` of nested objects through a ``default=`` hook.

    python benchmarks/measure_stack_per_level.py
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Callable

from stackful import Fiber, _native

LIMIT = 1000
NEAR, FAR = 50, 150  # depths at which the stack pointer is read
BIG_STACK = 256 * 1024 * 1024


def sorted_key(depth: int, probe: Callable[[], None]) -> None:
    def key(n: int) -> int:
        if n == 0:
            probe()
        else:
            sorted([n - 1], key=key)
        return n

    sorted([depth], key=key)


def nested_repr(depth: int, probe: Callable[[], None]) -> None:
    class Leaf:
        def __repr__(self) -> str:
            probe()
            return "leaf"

    obj: object = Leaf()
    for _ in range(depth):
        obj = [obj]
    repr(obj)


def python_calls(depth: int, probe: Callable[[], None]) -> None:
    def f(n: int) -> None:
        if n == 0:
            probe()
        else:
            f(n - 1)

    f(depth)


def json_default(depth: int, probe: Callable[[], None]) -> None:
    class Node:
        def __init__(self, below: object) -> None:
            self.below = below

    def default(o: object) -> object:
        if isinstance(o, Node):
            return [o.below]
        probe()
        return None

    obj: object = object()
    for _ in range(depth):
        obj = Node(obj)
    json.dumps(obj, default=default)


SHAPES: dict[str, Callable[[int, Callable[[], None]], None]] = {
    "sorted(key=...)": sorted_key,
    "repr(nested lists)": nested_repr,
    "Python calls": python_calls,
    "json.dumps(default=...)": json_default,
}


def in_fiber(body: Callable[[], object]) -> object:
    box: list[object] = []
    Fiber(lambda: box.append(body()), stack_size=BIG_STACK).switch()
    return box[0]


def sp_at(shape: Callable[[int, Callable[[], None]], None], depth: int) -> int:
    seen: list[int] = []
    in_fiber(lambda: shape(depth, lambda: seen.append(_native.stack_pointer())))
    return seen[0]


def max_depth(shape: Callable[[int, Callable[[], None]], None]) -> int:
    """The deepest level that runs under LIMIT (bisection: a level either fits or raises)."""
    def fits(depth: int) -> bool:
        def body() -> bool:
            try:
                shape(depth, lambda: None)
            except RecursionError:
                return False
            return True
        return bool(in_fiber(body))

    low, high = 1, LIMIT * 4
    while low + 1 < high:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def main() -> None:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(LIMIT)
    try:
        print(f"# {platform.machine()}, CPython {platform.python_version()}, "
              f"recursion limit {LIMIT}")
        print(f"{'shape':26} {'depth':>6} {'units/level':>12} {'bytes/level':>12} "
              f"{'bytes/unit':>11}")
        for name, shape in SHAPES.items():
            depth = max_depth(shape)
            units = LIMIT / depth
            per_level = (sp_at(shape, NEAR) - sp_at(shape, FAR)) / (FAR - NEAR)
            print(f"{name:26} {depth:6d} {units:12.2f} {per_level:12.0f} "
                  f"{per_level / units:11.0f}")
    finally:
        sys.setrecursionlimit(old)


if __name__ == "__main__":
    main()
