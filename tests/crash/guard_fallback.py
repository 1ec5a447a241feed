"""With guard pages made by mprotect (older kernels), fibers still work and an overflow is
still reported.  Run with STACKFUL_GUARD_MPROTECT=1."""

import runpy
from pathlib import Path

import stackful

root = stackful.current()
fibers = [stackful.Fiber(lambda: root.switch(1), stack_size=64 * 1024) for _ in range(100)]
assert all(f.switch() == 1 for f in fibers)
print("guard method:", stackful.stack_pool()["guard_method"], flush=True)
runpy.run_path(str(Path(__file__).with_name("stack_overflow.py")))  # overflows, reported
