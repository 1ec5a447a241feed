"""The stackful runtime against gevent and asyncio, side by side in one process.

Workloads (each in nanoseconds per operation, lower is better):

* ``yield 2 tasks`` / ``yield 1000 tasks``: tasks that do nothing but yield to each other
  round-robin (``yield_now`` / ``gevent.sleep(0)`` / ``await asyncio.sleep(0)``); per switch.
* ``spawn+join``: start 100,000 tasks that return at once and wait for all; per task.
* ``channel ping-pong``: two tasks bounce a value over a pair of channels (stackful
  ``Channel``; ``gevent.queue.Queue``; ``asyncio.Queue``); per one-way message.
* ``10k timers``: 10,000 tasks each sleep 1-10 ms on the real clock; per task, wall time
  divided by the task count (the 10 ms floor is the same for everybody).

Every flavour runs once per round, rounds interleaved so that machine drift hits all alike;
the best round is kept.  Ratios are ``other / stackful``: above 1 means stackful is faster.
A flavour whose package is missing (gevent) is skipped and shown as ``-``.

    python benchmarks/bench_runtime.py [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import stackful.runtime_api as sf
from stackful.channel import Channel

try:
    import gevent  # type: ignore[import-untyped]
    import gevent.queue  # type: ignore[import-untyped]
except ImportError:  # the comparison is optional
    gevent = None


# -- stackful ------------------------------------------------------------------------------------


def sf_yield(ntasks: int, per_task: int) -> float:
    def worker() -> None:
        for _ in range(per_task):
            sf.yield_now()

    def main() -> float:
        tasks = [sf.spawn(worker) for _ in range(ntasks)]
        t0 = time.perf_counter()
        for t in tasks:
            t.join()
        return time.perf_counter() - t0

    elapsed: float = sf.run(main)
    return elapsed / (ntasks * per_task)


def sf_spawn(n: int) -> float:
    def main() -> float:
        t0 = time.perf_counter()
        tasks = [sf.spawn(int) for _ in range(n)]
        for t in tasks:
            t.join()
        return time.perf_counter() - t0

    elapsed: float = sf.run(main)
    return elapsed / n


def sf_pingpong(n: int) -> float:
    def main() -> float:
        ping: Channel[int] = Channel()
        pong: Channel[int] = Channel()

        def echo() -> None:
            for v in ping:
                pong.send(v)

        sf.spawn(echo)
        t0 = time.perf_counter()
        for i in range(n):
            ping.send(i)
            pong.recv()
        elapsed = time.perf_counter() - t0
        ping.close()
        return elapsed

    elapsed: float = sf.run(main)
    return elapsed / (2 * n)


def sf_timers(n: int) -> float:
    def main() -> float:
        t0 = time.perf_counter()
        tasks = [sf.spawn(sf.sleep, 0.001 * (1 + i % 10)) for i in range(n)]
        for t in tasks:
            t.join()
        return time.perf_counter() - t0

    elapsed: float = sf.run(main)
    return elapsed / n


# -- gevent --------------------------------------------------------------------------------------


def gevent_yield(ntasks: int, per_task: int) -> float:
    def worker() -> None:
        for _ in range(per_task):
            gevent.sleep(0)

    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(worker) for _ in range(ntasks)])
    return (time.perf_counter() - t0) / (ntasks * per_task)


def gevent_spawn(n: int) -> float:
    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(int) for _ in range(n)])
    return (time.perf_counter() - t0) / n


def gevent_pingpong(n: int) -> float:
    ping: Any = gevent.queue.Queue()
    pong: Any = gevent.queue.Queue()

    def echo() -> None:
        while True:
            v = ping.get()
            if v is None:
                return
            pong.put(v)

    g = gevent.spawn(echo)
    t0 = time.perf_counter()
    for i in range(n):
        ping.put(i + 1)
        pong.get()
    elapsed = time.perf_counter() - t0
    ping.put(None)
    g.join()
    return elapsed / (2 * n)


def gevent_timers(n: int) -> float:
    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(gevent.sleep, 0.001 * (1 + i % 10)) for i in range(n)])
    return (time.perf_counter() - t0) / n


# -- asyncio -------------------------------------------------------------------------------------


def asyncio_yield(ntasks: int, per_task: int) -> float:
    async def worker() -> None:
        for _ in range(per_task):
            await asyncio.sleep(0)

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(ntasks)))
        return time.perf_counter() - t0

    return asyncio.run(main()) / (ntasks * per_task)


def asyncio_spawn(n: int) -> float:
    async def nothing() -> int:
        return 0

    async def main() -> float:
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(nothing()) for _ in range(n)]
        for t in tasks:
            await t
        return time.perf_counter() - t0

    return asyncio.run(main()) / n


def asyncio_pingpong(n: int) -> float:
    async def main() -> float:
        ping: asyncio.Queue[int | None] = asyncio.Queue()
        pong: asyncio.Queue[int] = asyncio.Queue()

        async def echo() -> None:
            while (v := await ping.get()) is not None:
                await pong.put(v)

        task = asyncio.create_task(echo())
        t0 = time.perf_counter()
        for i in range(n):
            await ping.put(i)
            await pong.get()
        elapsed = time.perf_counter() - t0
        await ping.put(None)
        await task
        return elapsed

    return asyncio.run(main()) / (2 * n)


def asyncio_timers(n: int) -> float:
    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(asyncio.sleep(0.001 * (1 + i % 10)) for i in range(n)))
        return time.perf_counter() - t0

    return asyncio.run(main()) / n


# -- the table -----------------------------------------------------------------------------------

Workload = tuple[str, dict[str, Callable[[], float] | None]]


def workloads(quick: bool) -> list[Workload]:
    """The workloads with their sizes; ``quick`` shrinks them for a smoke run."""
    s = 10 if quick else 1
    rr2, rr1k, spawn_n, pp_n, timers_n = 200_000 // s, 200 // s, 100_000 // s, 50_000 // s, 10_000
    gv = gevent is not None

    def pick(f: Callable[[], float]) -> Callable[[], float] | None:
        return f if gv else None

    return [
        ("yield, 2 tasks", {
            "stackful": lambda: sf_yield(2, rr2),
            "gevent": pick(lambda: gevent_yield(2, rr2)),
            "asyncio": lambda: asyncio_yield(2, rr2)}),
        ("yield, 1000 tasks", {
            "stackful": lambda: sf_yield(1000, rr1k),
            "gevent": pick(lambda: gevent_yield(1000, rr1k)),
            "asyncio": lambda: asyncio_yield(1000, rr1k)}),
        (f"spawn+join {spawn_n:,} tasks", {
            "stackful": lambda: sf_spawn(spawn_n),
            "gevent": pick(lambda: gevent_spawn(spawn_n)),
            "asyncio": lambda: asyncio_spawn(spawn_n)}),
        ("channel ping-pong", {
            "stackful": lambda: sf_pingpong(pp_n),
            "gevent": pick(lambda: gevent_pingpong(pp_n)),
            "asyncio": lambda: asyncio_pingpong(pp_n)}),
        (f"{timers_n:,} tasks on timers", {
            "stackful": lambda: sf_timers(timers_n),
            "gevent": pick(lambda: gevent_timers(timers_n)),
            "asyncio": lambda: asyncio_timers(timers_n)}),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run every workload side by side and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    args = parser.parse_args(argv)
    flavours = ["stackful", "gevent", "asyncio"]
    print(f"# Python {platform.python_version()} on {platform.machine()}; "
          f"gevent {getattr(gevent, '__version__', 'not installed')}; "
          f"best of {args.rounds} rounds; ns per operation")
    columns = [f"{'workload':<26}", *(f"{f:>9}" for f in flavours),
               "gevent/stackful", "asyncio/stackful"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("-" * (len(c) + 2) for c in columns) + "|")
    for name, runs in workloads(args.quick):
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for flavour in flavours:
                fn = runs.get(flavour)
                if fn is None:
                    continue
                t = fn()
                best[flavour] = min(best.get(flavour, t), t)
        cells = [f"{best[f] * 1e9:9.0f}" if f in best else f"{'-':>9}" for f in flavours]
        ratios = [f"{best[f] / best['stackful']:.1f}x" if f in best else "-"
                  for f in ("gevent", "asyncio")]
        print(f"| {name:<26} | " + " | ".join(cells)
              + f" | {ratios[0]:>15} | {ratios[1]:>16} |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
