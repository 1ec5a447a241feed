"""Overflow a fiber's stack past its recursion budget: must be reported, not a bare crash."""

import sys

import stackful

sys.setrecursionlimit(1_000_000)


def recurse(n: int) -> int:
    # Python -> C -> Python: each level takes kilobytes of C stack.
    return sorted([1], key=lambda _: recurse(n + 1))[0]


fiber = stackful.Fiber(lambda: recurse(0), name="deep-diver", stack_size=64 * 1024)
# Lift the fiber's C recursion budget too, so that only the guard page can stop it.
stackful._native._set_recursion_budget(fiber, 1_000_000)
fiber.switch()
print("unreachable: the overflow was not caught")
