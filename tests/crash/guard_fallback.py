"""With guard pages made by mprotect (older kernels), fibers still work and an overflow is
still reported.  Run with STACKFUL_GUARD_MPROTECT=1."""

import sys

import stackful

root = stackful.current()
fibers = [stackful.Fiber(lambda: root.switch(1), stack_size=64 * 1024) for _ in range(100)]
assert all(f.switch() == 1 for f in fibers)
print("guard method:", stackful.stack_pool()["guard_method"], flush=True)

sys.setrecursionlimit(1_000_000)


def recurse(n: int) -> int:
    return sorted([1], key=lambda _: recurse(n + 1))[0]


deep = stackful.Fiber(lambda: recurse(0), name="old-kernel", stack_size=64 * 1024)
stackful._native._set_recursion_budget(deep, 1_000_000)
deep.switch()
