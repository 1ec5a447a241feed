"""Overflow a fiber's stack: it must be reported by name, never a bare crash.

    stack_overflow.py [variant]

plain                  Python -> C -> Python recursion past the fiber's recursion budget
faulthandler-after     the same, faulthandler.enable() called after stackful was imported
subinterpreter-thread  the same, in a (legacy) subinterpreter running on another OS thread
after-subinterpreter   a thread uses stackful in a subinterpreter that is then destroyed, and
                       overflows a fiber of the main interpreter afterwards
big-frame LIB          a C function (tests/native/big_frame.c, built as LIB) whose frame,
                       called a little above the stack's base, jumps 20 KiB past it
"""

import sys
import threading

import stackful

sys.setrecursionlimit(1_000_000)


def recurse(n: int) -> int:
    # Python -> C -> Python: each level takes kilobytes of C stack.
    return sorted([1], key=lambda _: recurse(n + 1))[0]


def overflow(name: str = "deep-diver") -> None:
    fiber = stackful.Fiber(lambda: recurse(0), name=name, stack_size=64 * 1024)
    # Lift the fiber's C recursion budget too, so that only the guard can stop it.
    stackful._native._set_recursion_budget(fiber, 1_000_000)
    fiber.switch()


def subinterpreters():  # type: ignore[no-untyped-def]
    try:
        import _interpreters as si  # 3.13+
        return si, lambda: si.create("legacy")
    except ImportError:
        import _xxsubinterpreters as si  # a legacy one can load single-phase modules
        return si, lambda: si.create(isolated=False)


SUB_CODE = f"""
import sys
sys.path[:0] = {sys.path!r}
import stackful
root = stackful.current()
f = stackful.Fiber(lambda: root.switch(1), stack_size=64 * 1024)
assert f.switch() == 1
"""

variant = sys.argv[1] if len(sys.argv) > 1 else "plain"
if variant == "plain":
    overflow()
elif variant == "faulthandler-after":
    import faulthandler

    faulthandler.enable()
    overflow()
elif variant == "subinterpreter-thread":
    si, create = subinterpreters()
    interp = create()
    code = SUB_CODE + "sys.setrecursionlimit(1_000_000)\n" + (
        "def recurse(n): return sorted([1], key=lambda _: recurse(n + 1))[0]\n"
        "g = stackful.Fiber(lambda: recurse(0), name='sub-diver', stack_size=64 * 1024)\n"
        "stackful._native._set_recursion_budget(g, 1_000_000)\n"
        "g.switch()\n")
    t = threading.Thread(target=si.run_string, args=(interp, code))
    t.start()
    t.join()
elif variant == "after-subinterpreter":
    si, create = subinterpreters()

    def thread_body() -> None:
        interp = create()
        si.run_string(interp, SUB_CODE)   # this OS thread's first use of stackful
        root = stackful.current()         # then the main interpreter's, on the same thread
        f = stackful.Fiber(lambda: root.switch(2), stack_size=64 * 1024)
        assert f.switch() == 2
        si.destroy(interp)
        print("subinterpreter destroyed", flush=True)
        overflow("after-sub")

    t = threading.Thread(target=thread_body)
    t.start()
    t.join()
elif variant == "big-frame":
    import ctypes

    touch = ctypes.CDLL(sys.argv[2]).touch_frame_bottom
    root = stackful.current()

    def near_the_bottom() -> None:
        root.switch()  # parked while the neighbours below it are mapped
        info = stackful.current().stack_info()
        left = stackful._native.stack_pointer() - info.base
        touch(left // 1024 + 20)  # lands 20 KiB below the base: in the guard

    victim = stackful.Fiber(near_the_bottom, name="big-frame", stack_size=64 * 1024)
    victim.switch()
    # New mappings go below older ones: these stacks are the victim's neighbours, so a
    # frame that jumped the guard would write into one of them and carry on silently.
    neighbours = [stackful.Fiber(lambda: root.switch(), stack_size=64 * 1024) for _ in range(8)]
    for n in neighbours:
        n.switch()
    victim.switch()
print("unreachable: the overflow was not caught")
