"""What observability costs (issue 11): a dump of a loaded runtime, and the hot paths it touches.

* ``dump``: one runtime with ``--tasks`` tasks (default 10,000) parked on locks, queues,
  events and sleeps, each a few Python frames deep; the time to build the snapshot and to
  render it as text and as JSON (best of ``--rounds``), in ms and per task.  This is how long
  a loaded server stalls when ``kill -USR1`` asks it for a dump.
* ``yield`` / ``park + wake``: the runtime's two hottest paths, ns per operation (two tasks
  ping-ponging through ``yield_now``; through an ``Event``-like park/wake pair).  The
  observability work added one coarse-clock read to park and nothing to yield; with
  ``--compare-with SRC`` (a ``src`` directory holding another build of stackful, e.g. main's)
  both trees are measured in the same run, in alternating subprocesses, best of each.
  ``--callgrind`` also counts instructions per operation under valgrind (exact, immune to a
  loaded machine): the count of 2N operations minus that of N, divided by N.

    python benchmarks/bench_observability.py [--tasks 10000] [--rounds 5]
        [--compare-with ../main/src] [--callgrind] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _table import render

import stackful
from stackful import debug

HERE = Path(__file__).resolve().parent
OURS = str(Path(stackful.__file__).resolve().parents[1])


# -- the dump ------------------------------------------------------------------------------------

def _deep(levels: int, fn: object, *args: object) -> None:
    if levels:
        _deep(levels - 1, fn, *args)
    else:
        fn(*args)  # type: ignore[operator]


def measure_dump(tasks: int, rounds: int) -> dict[str, float]:
    results: dict[str, float] = {}

    def main() -> None:
        lock = stackful.Lock()
        lock.acquire()
        queue: stackful.Queue[int] = stackful.Queue()
        event = stackful.Event()

        def on_lock() -> None:
            with lock:
                pass

        kinds = [on_lock, queue.get, event.wait, lambda: stackful.sleep(3600)]
        spawned = [stackful.spawn(_deep, 3, kinds[i % 4], name=f"t{i}") for i in range(tasks)]
        stackful.sleep(0.01)
        for label, fn in (("snapshot", debug.snapshot),
                          ("text", lambda: debug.render("text")),
                          ("json", lambda: debug.render("json"))):
            best = float("inf")
            for _ in range(rounds):
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
            results[label] = best
        results["text_bytes"] = len(debug.render("text"))
        results["json_bytes"] = len(debug.render("json"))
        for t in spawned:
            t.cancel()

    stackful.Runtime(max_tasks=None).run(main)
    return results


# -- the hot paths, in a subprocess per tree ----------------------------------------------------

HOT_PATHS = r"""
import sys, time
import stackful

N = int(sys.argv[1])
which = sys.argv[2]

def yields():
    def other():
        for _ in range(N):
            stackful.yield_now()
    t = stackful.spawn(other)
    t0 = time.perf_counter_ns()
    for _ in range(N):
        stackful.yield_now()
    dt = time.perf_counter_ns() - t0
    t.join()
    return dt / (2 * N)

def parks():
    # Two tasks hand a token back and forth: each parks, the other wakes it.
    me = stackful.current_task()
    def other():
        for _ in range(N):
            rt.wake(me)
            rt.park("bench")
        rt.wake(me)
    rt = me._runtime
    peer = stackful.spawn(other)
    t0 = time.perf_counter_ns()
    for _ in range(N):
        rt.park("bench")
        rt.wake(peer)
    rt.park("bench")
    dt = time.perf_counter_ns() - t0
    peer.join()
    return dt / (2 * N)

fn = yields if which == "yield" else parks
print(stackful.run(fn))
"""


def hot_path(src: str, which: str, n: int, python: str = sys.executable,
             prefix: tuple[str, ...] = ()) -> float:
    env = dict(os.environ, PYTHONPATH=src)
    done = subprocess.run([*prefix, python, "-c", HOT_PATHS, str(n), which], env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"hot path run failed ({src}):\n{done.stderr}")
    return float(done.stdout.split()[-1])


def instructions(src: str, which: str, n: int) -> float:
    """Instructions per operation under callgrind: (count(2n) - count(n)) / (2n)."""
    counts = []
    for size in (n, 2 * n):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "cg.out")
            env = dict(os.environ, PYTHONPATH=src)
            done = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                 sys.executable, "-c", HOT_PATHS, str(size), which],
                env=env, capture_output=True, text=True, timeout=1200)
            if done.returncode != 0:
                raise SystemExit(f"callgrind failed:\n{done.stderr[-2000:]}")
            match = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
            if match is None:
                raise SystemExit(f"no instruction count in:\n{done.stderr[-2000:]}")
            counts.append(int(match.group(1)))
    return (counts[1] - counts[0]) / (2 * n)  # each run does 2n one-way operations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=7, help="subprocesses per tree and path")
    parser.add_argument("--compare-with", metavar="SRC", help="another build's src directory")
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.rounds, args.ops, args.runs = 200, 1, 2_000, 1

    d = measure_dump(args.tasks, args.rounds)
    print(f"Dump of {args.tasks} parked tasks (best of {args.rounds}; Python "
          f"{sys.version.split()[0]}):\n")
    rows = [[label, f"{d[label] * 1e3:.1f}", f"{d[label] / args.tasks * 1e6:.1f}"]
            for label in ("snapshot", "text", "json")]
    print(render(["dump", "ms", "µs per task"], rows))
    print(f"\ntext: {d['text_bytes'] / 1e6:.1f} MB, json: {d['json_bytes'] / 1e6:.1f} MB\n")

    trees = [("this tree", OURS)]
    if args.compare_with:
        trees.append(("compared", str(Path(args.compare_with).resolve())))
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.runs):  # alternate the trees so drift hits them alike
        for label, src in trees:
            for which in ("yield", "park"):
                ns = hot_path(src, which, args.ops)
                key = (label, which)
                best[key] = min(best.get(key, float("inf")), ns)
    header = ["path", *(f"{label}, ns" for label, _ in trees)]
    if len(trees) == 2:
        header.append("this / compared")
    rows = []
    for which, name in (("yield", "yield_now (one switch)"), ("park", "park + wake (one switch)")):
        cells = [name, *(f"{best[(label, which)]:.1f}" for label, _ in trees)]
        if len(trees) == 2:
            cells.append(f"{best[(trees[0][0], which)] / best[(trees[1][0], which)]:.3f}")
        rows.append(cells)
    if args.callgrind:
        n = 2_000 if args.quick else 50_000
        for which, name in (("yield", "yield_now, instructions"),
                            ("park", "park + wake, instructions")):
            counts = [instructions(src, which, n) for _, src in trees]
            cells = [name, *(f"{c:.1f}" for c in counts)]
            if len(trees) == 2:
                cells.append(f"{counts[0] / counts[1]:.3f}")
            rows.append(cells)
    print(f"Hot paths (best of {args.runs} runs of {args.ops} operations each):\n")
    print(render(header, rows))


if __name__ == "__main__":
    main()
