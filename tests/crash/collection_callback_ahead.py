"""A gc.callbacks entry put ahead of the core's parks a fiber at the start of a collection;
the fiber refuses FiberExit and is discarded.  The core's own entry had not run for that
collection yet, so it tells the collection was that fiber's from the entry's frame on it.
Before that, another fiber is discarded, parked outside any entry: not the collection's, so
its stack is freed and the collection goes on.  Prints how many stacks that kept and whether
the collection still runs, then whether a fresh cycle can be collected once the parked fiber
is discarded, and how many stacks that kept."""

import gc
import warnings

import stackful
from stackful import Fiber, FiberExit

warnings.simplefilter("ignore", ResourceWarning)
root = stackful.current()


def park_refusing_exit() -> None:
    while True:
        try:
            root.switch("parked")
            return
        except FiberExit:
            continue


armed = [True]


def ahead(phase: str, info: dict[str, int]) -> None:
    if phase == "start" and armed[0] and stackful.current() is not root:
        armed[0] = False
        park_refusing_exit()


gc.callbacks.insert(0, ahead)
f = Fiber(gc.collect, stack_size=64 * 1024)
assert f.switch() == "parked"
quarantined = stackful.discarded_fibers()["quarantined_stacks"]
other = Fiber(park_refusing_exit)
assert other.switch() == "parked"
del other
print(f"other_quarantined={stackful.discarded_fibers()['quarantined_stacks'] - quarantined}")
print(f"still_collecting={gc.collect() == 0}")
quarantined = stackful.discarded_fibers()["quarantined_stacks"]
del f


class Cycle:
    pass


c = Cycle()
c.me = c  # type: ignore[attr-defined]
del c
print(f"collected={gc.collect() > 0}")
print(f"quarantined={stackful.discarded_fibers()['quarantined_stacks'] - quarantined}")
