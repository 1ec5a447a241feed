"""Fibers left suspended inside a generator (and a coroutine) when the interpreter exits.

Each is in a cycle with __main__'s globals (its frames' function refers to them), so the
collection at exit finds its generator unreachable too: the generator must not be
finalized as a running one ("generator already executing" on stderr, 3.14+)."""

import stackful
from stackful import Fiber


def gen():
    yield stackful.current().parent.switch("in a generator")


async def coro():
    stackful.current().parent.switch("in a coroutine")


def in_generator():
    g = gen()
    next(g)


def in_coroutine():
    c = coro()
    c.send(None)


parked = [Fiber(in_generator), Fiber(in_coroutine)]
print(*(f.switch() for f in parked), sep="\n")
