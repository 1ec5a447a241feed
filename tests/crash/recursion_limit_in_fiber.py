"""sys.setrecursionlimit() inside a small fiber composes with the fiber's C budget: no spurious
RecursionError when lowering it, and raising it does not lift the budget (deep recursion is
still a RecursionError, not an overflow of the fiber's stack)."""

import sys

import stackful


def depth_reached() -> int:
    n = 0

    def down() -> None:
        nonlocal n
        n += 1
        down()

    try:
        down()
    except RecursionError:
        pass
    return n


def body() -> str:
    free = depth_reached()
    sys.setrecursionlimit(sys.getrecursionlimit())  # same limit: must not raise
    sys.setrecursionlimit(200)                      # below the default, above our depth
    sys.setrecursionlimit(1_000_000)                # far above what 64 KiB can hold
    raised = depth_reached()
    try:
        def at_depth(k: int) -> None:
            if k:
                at_depth(k - 1)
            else:
                sys.setrecursionlimit(10)
        at_depth(20)
        too_low = "no error"
    except RecursionError as e:
        too_low = str(e)
    return f"free={free} raised={raised} too_low={too_low!r}"


print(stackful.Fiber(body, stack_size=64 * 1024).switch())
print("limit after:", sys.getrecursionlimit())
