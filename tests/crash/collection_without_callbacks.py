"""A fiber parks inside a collection after a user cleared gc.callbacks, then is discarded.
The core cannot tell whether the running collection was that fiber's: it keeps the stack and
leaves the collection alone (no crash either way), and puts its gc.callbacks entry back."""

import gc
import warnings

import stackful
from stackful import Fiber, FiberExit

warnings.simplefilter("ignore", ResourceWarning)
root = stackful.current()
gc.callbacks.clear()


def park_refusing_exit() -> None:
    while True:
        try:
            root.switch("parked")
            return
        except FiberExit:
            continue


class Finalized:
    def __del__(self) -> None:
        park_refusing_exit()


def body() -> None:
    a, b = Finalized(), Finalized()
    a.other, b.other = b, a
    del a, b
    gc.collect()


f = Fiber(body, stack_size=64 * 1024)
assert f.switch() == "parked"
del f
print(f"quarantined={stackful.discarded_fibers()['quarantined_stacks']}")
print(f"callback_back={any('stackful' in repr(c) for c in gc.callbacks)}")
