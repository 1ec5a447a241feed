"""fork() from inside a fiber: the child goes on with fibers, the parent is unaffected.

Exit code 0 and "parent ok" / "child ok" lines when all is well.
"""

import os
import sys

import stackful

root = stackful.current()
log = []


def parked(tag: str) -> str:
    got = root.switch(f"{tag} parked")
    return f"{tag} resumed with {got}"


def forker() -> int:
    pid = os.fork()
    if pid == 0:
        # The child runs on this fiber's stack: the fiber is its current one.
        me = stackful.current()
        assert me.name == "forker", me
        # Fibers suspended before the fork resume in the child too.
        before.parent = me
        assert before.switch("child") == "before resumed with child"
        fibers = [stackful.Fiber(lambda i=i: me.switch(i) + 1, stack_size=64 * 1024)
                  for i in range(200)]
        assert [f.switch() for f in fibers] == list(range(200))
        assert [f.switch(10) for f in fibers] == [11] * 200
        nested = stackful.Fiber(lambda: stackful.Fiber(lambda: "deep").switch())
        assert nested.switch() == "deep"
        print("child ok", flush=True)
        os._exit(0)
    return pid


before = stackful.Fiber(parked, name="before")
assert before.switch("before") == "before parked"
pid = stackful.Fiber(forker, name="forker").switch()
_, status = os.waitpid(pid, 0)
assert before.switch("parent") == "before resumed with parent"
assert [stackful.Fiber(lambda i=i: i * 2).switch(i) for i in range(100)] == \
    [i * 2 for i in range(100)]
print("parent ok", os.waitstatus_to_exitcode(status), flush=True)
sys.exit(os.waitstatus_to_exitcode(status))
