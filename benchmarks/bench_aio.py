"""stackful.aio against the other ways to await from plain code, side by side in one run (issue 10).

Four bridges between asyncio and plain (synchronous) functions, on the same workloads:

* ``stackful.aio``: ``run_sync(fn)`` runs ``fn`` on a fiber inside the task; ``await_(aw)``
  is one fiber switch to the coroutine that awaits ``aw`` and one back;
* ``SQLAlchemy``: ``greenlet_spawn(fn)`` / ``await_only(aw)`` on the real greenlet (a new
  greenlet per call; its switches copy the live part of the C stack in and out of the heap);
* ``greenback``: ``with_portal_run_sync(fn)`` / ``greenback.await_(aw)`` (a portal patched
  into the asyncio Task's coroutine, a greenlet switch per await);
* ``asgiref``: ``sync_to_async(fn)`` runs ``fn`` on a worker thread, ``async_to_sync(f)()``
  from there posts the coroutine to the event loop and blocks the thread until it is done
  (Django's bridge).

Workloads (nanoseconds per operation, lower is better; ratios are ``other / stackful``):

* ``await round trip``: plain code awaits a coroutine that returns at once; the bridge's
  overhead over ``plain await`` of the same coroutine in a coroutine (the first column).
  ``50 deep``: the plain code is 50 levels down, each level a Python call made from C
  (``map``), so the C stack between the bridge and the await is ~50 frames deep.
* ``run a plain function``: one call of a function that returns at once, with await
  allowed inside (``run_sync``, ``greenlet_spawn``, greenback's portal, ``sync_to_async``).
  ``50 deep``: the awaiting coroutine is 50 ``await`` levels down (each one a nested C call
  when the task steps it).

Each sample times a batch in one event loop; samples of every bridge are interleaved round
by round and the best is kept.  Missing packages show as "not installed".  Not run in CI.

    python benchmarks/bench_aio.py [--rounds 7] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import platform
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from _table import ratio, render

import stackful.aio

DEPTH = 50


def optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


greenback = optional("greenback")
asgiref_sync = optional("asgiref.sync")
sa_concurrency = optional("sqlalchemy.util.concurrency")
if sa_concurrency is not None and optional("greenlet") is None:
    sa_concurrency = None  # SQLAlchemy's bridge needs the real greenlet


async def ready() -> None:
    """The awaitable: a coroutine that returns at once."""


def nothing() -> None:
    pass


def at_c_depth(depth: int, fn: Callable[[], Any]) -> Any:
    """Call fn() `depth` levels down, each level a Python call made from C."""
    if depth == 0:
        return fn()
    return next(map(lambda d: at_c_depth(d, fn), [depth - 1]))


async def at_await_depth(depth: int, coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Await coro_fn() `depth` await levels down."""
    if depth == 0:
        return await coro_fn()
    return await at_await_depth(depth - 1, coro_fn)


def timed(n: int, body: Callable[[int], Coroutine[Any, Any, Any]]) -> float:
    """ns per operation of body(n), which does n operations in a fresh event loop."""
    async def main() -> float:
        t0 = time.perf_counter_ns()
        await body(n)
        return (time.perf_counter_ns() - t0) / n

    return asyncio.run(main())


# -- the awaiting loop, per bridge: (how to run a plain function, how to await in it) ---------

def awaits_plain(depth: int) -> Callable[[int], Coroutine[Any, Any, None]]:
    async def body(n: int) -> None:
        async def loop() -> None:
            for _ in range(n):
                await ready()
        await at_await_depth(0, loop)
    return body


def awaits_via(run: Callable[..., Any], await_: Callable[[Any], Any], depth: int
               ) -> Callable[[int], Coroutine[Any, Any, None]]:
    def plain(n: int) -> None:
        def loop() -> None:
            for _ in range(n):
                await_(ready())
        at_c_depth(depth, loop)

    async def body(n: int) -> None:
        await run(plain, n)
    return body


def calls_via(run: Callable[..., Any], depth: int) -> Callable[[int], Coroutine[Any, Any, None]]:
    async def body(n: int) -> None:
        async def loop() -> None:
            for _ in range(n):
                await run(nothing)
        await at_await_depth(depth, loop)
    return body


def bridges() -> dict[str, tuple[Callable[..., Any], Callable[[Any], Any]] | None]:
    """name -> (run a plain function with awaiting allowed, await from it), or None."""
    out: dict[str, tuple[Callable[..., Any], Callable[[Any], Any]] | None] = {
        "stackful.aio": (stackful.aio.run_sync, stackful.aio.await_),
        "SQLAlchemy greenlet": None, "greenback": None, "asgiref": None,
    }
    if sa_concurrency is not None:
        out["SQLAlchemy greenlet"] = (sa_concurrency.greenlet_spawn, sa_concurrency.await_only)
    if greenback is not None:
        out["greenback"] = (greenback.with_portal_run_sync, greenback.await_)
    if asgiref_sync is not None:
        async def to_thread(fn: Callable[..., Any], *args: Any) -> Any:
            return await asgiref_sync.sync_to_async(fn)(*args)

        def from_thread(aw: Any) -> Any:
            async def wrapped() -> Any:
                return await aw
            return asgiref_sync.async_to_sync(wrapped)()

        out["asgiref"] = (to_thread, from_thread)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 rounds, smaller batches")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    n_fast = 5_000 if args.quick else 40_000   # in-process bridges
    n_slow = 200 if args.quick else 2_000      # asgiref: a thread hop per operation

    names = list(bridges())
    available = bridges()
    workloads: dict[str, dict[str, Callable[[int], Coroutine[Any, Any, None]] | None]] = {}
    for depth, label in ((0, ""), (DEPTH, f", {DEPTH} deep")):
        workloads[f"await round trip{label}"] = {
            "plain await": awaits_plain(depth),
            **{name: awaits_via(*b, depth) if b else None for name, b in available.items()},
        }
        workloads[f"run a plain function{label}"] = {
            "plain await": None,
            **{name: calls_via(b[0], depth) if b else None for name, b in available.items()},
        }

    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for workload, by_bridge in workloads.items():
            for name, body in by_bridge.items():
                if body is None:
                    continue
                n = n_slow if name == "asgiref" else n_fast
                ns = timed(n, body)
                key = (workload, name)
                best[key] = min(best.get(key, ns), ns)

    columns = ["plain await", *names]
    header = ["ns per operation", *columns, *(f"{n} / stackful" for n in names[1:])]
    rows = []
    for workload in workloads:
        ours = best.get((workload, "stackful.aio"))
        cells = [workload]
        for name in columns:
            value = best.get((workload, name))
            missing = "not installed" if name in names and available[name] is None else "-"
            cells.append(f"{value:,.0f}" if value is not None else missing)
        cells += [ratio(best.get((workload, name)), ours) for name in names[1:]]
        rows.append(cells)
    print(f"# CPython {platform.python_version()}, {platform.machine()}; best of {rounds} rounds")
    print(render(header, rows))

    def get(workload: str, name: str) -> float | None:
        return best.get((workload, name))

    overhead = get("await round trip", "stackful.aio")
    plain = get("await round trip", "plain await")
    checks = []
    if overhead is not None and plain is not None:
        checks.append((f"await_ round trip {overhead - plain:,.0f} ns above a plain await",
                       overhead - plain <= 1000))
    gb = get("await round trip", "greenback")
    if gb is not None and overhead:
        checks.append((f"await_ round trip {gb / overhead:.1f}x faster than greenback's",
                       gb / overhead >= 3))
    ours_call = get(f"run a plain function, {DEPTH} deep", "stackful.aio")
    for name in ("greenback", "SQLAlchemy greenlet"):
        theirs = get(f"run a plain function, {DEPTH} deep", name)
        if theirs is not None and ours_call:
            checks.append((f"run_sync {theirs / ours_call:.1f}x cheaper than {name} "
                           f"({DEPTH} deep)", theirs / ours_call >= 10))
    print()
    for text, ok in checks:
        print(f"- [{'x' if ok else ' '}] {text}")


if __name__ == "__main__":
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    main()
