"""gevent on stackful.greenlet against gevent on the real greenlet, in one run (issue 13).

The same compiled gevent runs twice, each time in a fresh process: once on the greenlet it
was built against, once after ``stackful.greenlet.install()`` (its Cython modules reach
stackful through greenlet's C API).  Workloads, in nanoseconds per operation (lower is
better; the ratio is greenlet / stackful, so above 1 means stackful wins):

* ``sleep(0) ping-pong``: two greenlets each calling ``gevent.sleep(0)`` in a loop (every
  call goes through the hub: two switches).
* ``Event handoff, depth N``: two greenlets hand a turn to each other through a pair of
  ``gevent.event.Event``; each waits N Python frames down plus 20 C-heavy levels when N > 0
  (a ``sorted(key=...)`` whose key recurses: a C call re-entering Python), so greenlet has
  that much stack to copy on every switch.
* ``spawn + join``: ``gevent.spawn(f).join()`` of a function that returns at once.

Timing is the best of several rounds (time.perf_counter_ns).

    python benchmarks/bench_gevent.py [--rounds 5] [--ops 20000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _table import ratio, render

SIDES = ("stackful", "greenlet")
DEPTHS = (0, 100, 400)
C_LEVELS = 20


def measure(rounds: int, ops: int) -> dict[str, float]:
    """Run every workload in this process (gevent already imported on one side)."""
    import gevent
    from gevent.event import Event

    def best(sample: Callable[[int], int], n: int) -> float:
        sample(min(n, 100))  # warm-up: first touches of fresh stack pages are not the switch
        return min(sample(n) for _ in range(rounds)) / n

    def sleep_pingpong(n: int) -> int:
        def loop() -> None:
            for _ in range(n):
                gevent.sleep(0)

        a, b = gevent.spawn(loop), gevent.spawn(loop)
        start = time.perf_counter_ns()
        gevent.joinall([a, b])
        return (time.perf_counter_ns() - start) // 2

    def at_depth(depth: int, body: Callable[[], None]) -> None:
        def python_levels(k: int) -> None:
            if k:
                python_levels(k - 1)
            else:
                c_levels(C_LEVELS)

        def c_levels(k: int) -> int:
            if k:
                sorted((0,), key=lambda _: c_levels(k - 1))
            else:
                body()
            return 0

        if depth:
            python_levels(depth)
        else:
            body()

    def event_handoff(depth: int) -> Callable[[int], int]:
        def sample(n: int) -> int:
            ping, pong = Event(), Event()

            def player(mine: Any, theirs: Any) -> None:
                def body() -> None:
                    for _ in range(n):
                        mine.wait()
                        mine.clear()
                        theirs.set()

                at_depth(depth, body)

            a = gevent.spawn(player, ping, pong)
            b = gevent.spawn(player, pong, ping)
            gevent.sleep(0)  # both down to their depth, waiting
            start = time.perf_counter_ns()
            ping.set()
            gevent.joinall([a, b])
            return (time.perf_counter_ns() - start) // 2

        return sample

    def spawn_join(n: int) -> int:
        start = time.perf_counter_ns()
        for _ in range(n):
            gevent.spawn(int).join()
        return time.perf_counter_ns() - start

    results = {"sleep(0) ping-pong": best(sleep_pingpong, ops)}
    for depth in DEPTHS:
        label = f"Event handoff, depth {depth}" + (f" + {C_LEVELS} C" if depth else "")
        results[label] = best(event_handoff(depth), max(ops // (1 + depth // 50), 200))
    results["spawn + join"] = best(spawn_join, ops // 4)
    return results


def run_side(side: str, rounds: int, ops: int) -> dict[str, float] | None:
    """The workloads measured in a fresh process on one side; None if gevent is missing."""
    src = Path(__file__).resolve().parents[1] / "src"
    here = str(Path(__file__).parent)
    prelude = "import stackful.greenlet\nstackful.greenlet.install()\n"
    code = ((prelude if side == "stackful" else "")
            + f"import sys, json\nsys.path.insert(0, {here!r})\nimport bench_gevent\n"
            + f"print(json.dumps(bench_gevent.measure({rounds}, {ops})))\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(src), env.get("PYTHONPATH")] if p)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=1800)
    if done.returncode != 0:
        if "No module named 'gevent'" in done.stderr:
            return None
        raise RuntimeError(f"{side}: {done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.ops = 1, 400
    by_side = {side: run_side(side, args.rounds, args.ops) for side in SIDES}
    ours, theirs = by_side["stackful"], by_side["greenlet"]
    print(f"Python {platform.python_version()} on {platform.machine()}; best of {args.rounds} "
          "rounds; ns per operation")
    if ours is None or theirs is None:
        print("gevent is not installed: nothing to compare")
        return
    rows = [[name, f"{ours[name]:.0f}", f"{theirs[name]:.0f}", ratio(theirs[name], ours[name])]
            for name in ours]
    print(render(["workload", "gevent on stackful", "gevent on greenlet", "greenlet/stackful"],
                 rows))


if __name__ == "__main__":
    main()
