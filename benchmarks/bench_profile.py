"""What profiling costs across switches (issue 11): no profiler, cProfile, stackful.debug.Profile.

Three workloads, ns per operation, best of ``--rounds``:

* ``python call``: a call of a small Python function (the per-event cost of each profiler;
  ``Profile`` runs each fiber's cProfile on a clock of its own, a Python call per reading);
* ``fiber switch``: one switch of two fibers ping-ponging (``Profile`` re-points cProfile at
  the landing fiber's profile in the core's switch hook);
* ``yield_now``: one switch of two runtime tasks yielding to each other.

cProfile's numbers for the last two are those of a wrong profile (one stack for every fiber):
they show what the correct one costs on top.

    python benchmarks/bench_profile.py [--n 50000] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import cProfile
import time
from collections.abc import Callable

from _table import render

import stackful
from stackful import Fiber
from stackful.debug import Profile


def python_calls(n: int) -> None:
    def f(x: int) -> int:
        return x

    for i in range(n):
        f(i)


def fiber_switches(n: int) -> None:
    root = stackful.current()

    def body() -> None:
        while True:
            root.switch()

    f = Fiber(body)
    for _ in range(n // 2):
        f.switch()
    f.kill()


def task_yields(n: int) -> None:
    def worker() -> None:
        for _ in range(n // 2):
            stackful.yield_now()

    def main() -> None:
        a = stackful.spawn(worker)
        b = stackful.spawn(worker)
        a.join()
        b.join()

    stackful.run(main)


def measure(work: Callable[[int], None], n: int, rounds: int,
            profiler: Callable[[], object] | None) -> float:
    best = float("inf")
    for _ in range(rounds):
        prof = profiler() if profiler else None
        t0 = time.perf_counter()
        if prof is not None:
            prof.enable()  # type: ignore[attr-defined]
        work(n)
        if prof is not None:
            prof.disable()  # type: ignore[attr-defined]
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a few operations, one round")
    args = parser.parse_args()
    n, rounds = (2_000, 1) if args.quick else (args.n, args.rounds)
    rows = []
    for label, work in (("python call", python_calls), ("fiber switch", fiber_switches),
                        ("yield_now", task_yields)):
        none = measure(work, n, rounds, None)
        cprof = measure(work, n, rounds, cProfile.Profile)
        ours = measure(work, n, rounds, Profile)
        rows.append([label, f"{none:.0f}", f"{cprof:.0f}", f"{ours:.0f}", f"{ours / cprof:.2f}"])
    print(render(["ns per operation", "no profiler", "cProfile", "debug.Profile",
                  "Profile / cProfile"], rows))


if __name__ == "__main__":
    main()
