"""A fiber kills its own parent, then returns: its result must reach the root.

kill() makes the caller the killed fiber's parent.  When the caller descends
from the killed fiber that closes a loop in the parent chain (g -> f -> g), so
"first non-dead ancestor" of f, searched when f ends, is f itself.
"""

import stackful

root = stackful.current()
holder = []


def g_body() -> None:
    f = stackful.Fiber(f_body, name="f")  # f.parent is g
    f.switch()


def f_body() -> str:
    g = holder[0]
    print("kill ->", g.kill(), g.dead, flush=True)
    return "f done"


g = stackful.Fiber(g_body, name="g")
holder.append(g)
print("root got", g.switch(), flush=True)
