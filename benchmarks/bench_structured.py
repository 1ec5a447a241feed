"""Structured concurrency: stackful's TaskGroup and cancel scopes against asyncio's and trio's.

Workloads (nanoseconds per operation, lower is better):

* ``group: spawn+join 10,000``: open a group, spawn 10,000 children that return at once, leave
  the block (which waits for all); per child.  ``TaskGroup.spawn`` / ``asyncio.TaskGroup``'s
  ``create_task`` / a trio nursery's ``start_soon``.
* ``scope with deadline, enter+exit``: ``with move_on_after(10): pass`` (asyncio:
  ``async with asyncio.timeout(10)``; trio: ``with trio.move_on_after(10)``); per block.
* ``scope, no deadline, enter+exit``: ``with CancelScope()`` (asyncio: ``timeout(None)``).
* ``deadline expires in a wait``: ``move_on_after(0)`` around a one-hour sleep, so the
  cancellation is delivered and caught (asyncio: ``timeout(0)`` and ``except TimeoutError``);
  per block.

Each flavour runs once per round, rounds interleaved so that machine drift hits all alike;
the best round is kept.  Ratios are ``theirs / stackful``: above 1 means stackful is faster.
trio is optional (``-`` when it is not installed).

    python benchmarks/bench_structured.py [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from _table import ratio, render

import stackful
from stackful.timeouts import move_on_after

trio: Any
try:
    import trio
except ImportError:  # the comparison is optional
    trio = None


def nothing() -> None:
    return None


# -- stackful ------------------------------------------------------------------------------------


def sf_group(n: int) -> float:
    def main() -> float:
        t0 = time.perf_counter()
        with stackful.TaskGroup() as tg:
            spawn = tg.spawn
            for _ in range(n):
                spawn(nothing)
        return time.perf_counter() - t0

    elapsed: float = stackful.run(main)
    return elapsed / n


def sf_scope(n: int) -> float:
    def main() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            with move_on_after(10):
                pass
        return time.perf_counter() - t0

    elapsed: float = stackful.run(main)
    return elapsed / n


def sf_bare_scope(n: int) -> float:
    scope_type = stackful.CancelScope

    def main() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            with scope_type():
                pass
        return time.perf_counter() - t0

    elapsed: float = stackful.run(main)
    return elapsed / n


def sf_expire(n: int) -> float:
    sleep = stackful.sleep

    def main() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            with move_on_after(0):
                sleep(3600)
        return time.perf_counter() - t0

    elapsed: float = stackful.run(main)
    return elapsed / n


# -- asyncio -------------------------------------------------------------------------------------


def aio_group(n: int) -> float:
    async def child() -> None:
        return None

    async def main() -> float:
        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            create = tg.create_task
            for _ in range(n):
                create(child())
        return time.perf_counter() - t0

    return asyncio.run(main()) / n


def aio_scope(n: int, seconds: float | None) -> float:
    async def main() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            async with asyncio.timeout(seconds):
                pass
        return time.perf_counter() - t0

    return asyncio.run(main()) / n


def aio_expire(n: int) -> float:
    async def main() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            try:
                async with asyncio.timeout(0):
                    await asyncio.sleep(3600)
            except TimeoutError:
                pass
        return time.perf_counter() - t0

    return asyncio.run(main()) / n


# -- trio ----------------------------------------------------------------------------------------


def trio_group(n: int) -> float:
    async def child() -> None:
        return None

    async def main() -> float:
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            start = nursery.start_soon
            for _ in range(n):
                start(child)
        return time.perf_counter() - t0

    result: float = trio.run(main)
    return result / n


def trio_scope(n: int) -> float:
    async def main() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            with trio.move_on_after(10):
                pass
        return time.perf_counter() - t0

    result: float = trio.run(main)
    return result / n


def trio_bare_scope(n: int) -> float:
    async def main() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            with trio.CancelScope():
                pass
        return time.perf_counter() - t0

    result: float = trio.run(main)
    return result / n


def trio_expire(n: int) -> float:
    async def main() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            with trio.move_on_after(0):
                await trio.sleep(3600)
        return time.perf_counter() - t0

    result: float = trio.run(main)
    return result / n


# -- the table -----------------------------------------------------------------------------------

Runs = dict[str, Callable[[], float] | None]


def workloads(quick: bool) -> list[tuple[str, Runs]]:
    """The workloads with their sizes; ``quick`` shrinks them for a smoke run."""
    s = 10 if quick else 1
    children, scopes, expiries = 10_000, 100_000 // s, 20_000 // s
    have_trio = trio is not None

    def pick(f: Callable[[], float]) -> Callable[[], float] | None:
        return f if have_trio else None

    return [
        (f"group: spawn+join {children:,}", {
            "stackful": lambda: sf_group(children),
            "asyncio": lambda: aio_group(children),
            "trio": pick(lambda: trio_group(children))}),
        ("scope with deadline, enter+exit", {
            "stackful": lambda: sf_scope(scopes),
            "asyncio": lambda: aio_scope(scopes, 10.0),
            "trio": pick(lambda: trio_scope(scopes))}),
        ("scope, no deadline, enter+exit", {
            "stackful": lambda: sf_bare_scope(scopes),
            "asyncio": lambda: aio_scope(scopes, None),
            "trio": pick(lambda: trio_bare_scope(scopes))}),
        ("deadline expires in a wait", {
            "stackful": lambda: sf_expire(expiries),
            "asyncio": lambda: aio_expire(expiries),
            "trio": pick(lambda: trio_expire(expiries))}),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run every workload side by side and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    args = parser.parse_args(argv)
    flavours = ["stackful", "asyncio", "trio"]
    print(f"# Python {platform.python_version()} on {platform.machine()}; "
          f"trio {getattr(trio, '__version__', 'not installed')}; "
          f"best of {args.rounds} rounds; ns per operation")
    rows = []
    for name, runs in workloads(args.quick):
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for flavour in flavours:
                fn = runs.get(flavour)
                if fn is None:
                    continue
                t = fn()
                best[flavour] = min(best.get(flavour, t), t)
        cells = [f"{best[f] * 1e9:.0f}" if f in best else "-" for f in flavours]
        ours = best["stackful"]
        rows.append([name, *cells, ratio(best.get("asyncio"), ours),
                     ratio(best.get("trio"), ours)])
    print(render(["workload", *flavours, "asyncio/stackful", "trio/stackful"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
