"""The native core against greenlet and a generator trampoline, side by side in one run (issue #2).

Three ways to suspend a function and resume it later, measured on the same workloads:

* ``stackful``: ``stackful.Fiber``, a function on a C stack of its own;
* ``greenlet``: the greenlet package, which copies the live part of one shared C stack in
  and out of the heap on every switch (shown as "not installed" when it is missing);
* ``generator``: what plain Python offers: a driver loop ``send()``s into a generator, and
  depth is made of ``yield from`` levels, each of which every value passes through.

Workloads (lower is better; ratios are ``other / stackful``, so above 1 means stackful wins):

* ``switch, depth 0``: a driver and a child switch back and forth, passing one value;
  nanoseconds per one-way switch (a round trip counts two).
* ``switch, 10 Python levels deep``: the same with the child 10 Python calls down
  (10 ``yield from`` levels for the generator) at the moment it switches.
* ``switch, 100 C-heavy levels deep``: the child 100 levels down, each level a
  ``sorted(key=...)`` whose key function recurses, so every level is a C call re-entering
  the interpreter (~5 KiB of C stack each).  Generators cannot suspend across a C call: n/a.
* ``spawn + finish``: create, switch into, return at once; nanoseconds per fiber.
* ``RSS per suspended``: KiB of resident memory each of 100,000 live fibers costs, every
  one suspended inside its target after one switch (default stack size), measured in a
  fresh subprocess per flavour from /proc/self/statm.  Page tables are not part of RSS;
  they get a row of their own (VmPTE from /proc/self/status).

Timing is many short samples (5 ms, sized once by calibration) rather than a few long ones:
on a loaded machine a sample shorter than a scheduler time slice often runs undisturbed, and
the best of many is the machine's real speed, where a long sample is almost always cut into.
Samples of every flavour are interleaved round by round so that drift hits them alike, and
the best round is kept (time.perf_counter_ns).  The issue's targets are checked at the end.

    python benchmarks/bench_core.py [--rounds 50] [--sample-ms 5] [--fibers 100000] [--quick]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

from _table import ratio, render

import stackful

try:
    greenlet: Any = importlib.import_module("greenlet")
except ImportError:  # the comparison is optional
    greenlet = None

FLAVOURS = ("stackful", "greenlet", "generator")
PY_LEVELS = 10
C_LEVELS = 100

Sample = Callable[[int], int]  # runs n operations, returns the nanoseconds they took

# -- depth: where the child is when it switches ----------------------------------------------


def python_levels(levels: int, body: Callable[[], None]) -> None:
    """Call ``body`` under ``levels`` Python frames (3.11+ runs these on no extra C stack)."""
    if levels:
        python_levels(levels - 1, body)
    else:
        body()


def c_levels(levels: int, body: Callable[[], None]) -> int:
    """Call ``body`` under ``levels`` C-heavy levels: each one re-enters Python from C."""
    if levels:
        sorted((0,), key=lambda _: c_levels(levels - 1, body))
    else:
        body()
    return 0


def at_depth(kind: str) -> Callable[[Callable[[], None]], object]:
    """A function that calls its argument at the depth ``kind`` names."""
    if kind == "py":
        return lambda body: python_levels(PY_LEVELS, body)
    if kind == "c":
        return lambda body: c_levels(C_LEVELS, body)
    return lambda body: body()


# -- ping-pong -------------------------------------------------------------------------------


def stackful_switch(kind: str) -> Sample:
    descend = at_depth(kind)

    def sample(n: int) -> int:
        back = stackful.current().switch

        def loop() -> None:
            while True:
                back(None)

        child = stackful.Fiber(lambda: descend(loop))
        child.switch()  # down to its depth; parks there
        forth = child.switch
        start = time.perf_counter_ns()
        for _ in range(n):
            forth(None)
        elapsed = time.perf_counter_ns() - start
        child.kill()
        return elapsed

    return sample


def greenlet_switch(kind: str) -> Sample:
    descend = at_depth(kind)

    def sample(n: int) -> int:
        back = greenlet.getcurrent().switch

        def loop() -> None:
            while True:
                back(None)

        child = greenlet.greenlet(lambda: descend(loop))
        child.switch()
        forth = child.switch
        start = time.perf_counter_ns()
        for _ in range(n):
            forth(None)
        elapsed = time.perf_counter_ns() - start
        child.throw()  # GreenletExit: it unwinds and dies
        return elapsed

    return sample


def generator_loop() -> Generator[None, None, None]:
    while True:
        yield None


def generator_levels(levels: int) -> Generator[None, None, None]:
    """``levels`` of ``yield from`` above the loop: every send passes through each."""
    if levels:
        yield from generator_levels(levels - 1)
    else:
        yield from generator_loop()


def generator_switch(kind: str) -> Sample | None:
    if kind == "c":
        return None  # a generator cannot suspend across a C call (sorted's key)
    levels = PY_LEVELS if kind == "py" else 0

    def sample(n: int) -> int:
        child = generator_levels(levels) if levels else generator_loop()
        next(child)
        forth = child.send
        start = time.perf_counter_ns()
        for _ in range(n):
            forth(None)
        elapsed = time.perf_counter_ns() - start
        child.close()
        return elapsed

    return sample


# -- spawn + finish --------------------------------------------------------------------------


def nothing() -> None:
    return None


def stackful_spawn(n: int) -> int:
    new = stackful.Fiber
    start = time.perf_counter_ns()
    for _ in range(n):
        new(nothing).switch()
    return time.perf_counter_ns() - start


def greenlet_spawn(n: int) -> int:
    new = greenlet.greenlet
    start = time.perf_counter_ns()
    for _ in range(n):
        new(nothing).switch()
    return time.perf_counter_ns() - start


def returns_at_once() -> Iterator[None]:
    return
    yield  # a generator function


def generator_spawn(n: int) -> int:
    start = time.perf_counter_ns()
    for _ in range(n):
        next(returns_at_once(), None)
    return time.perf_counter_ns() - start


# -- timing ----------------------------------------------------------------------------------


def calibrate(sample: Sample, sample_ns: int) -> int:
    """How many operations make one sample last about ``sample_ns``."""
    n = 16
    while True:
        elapsed = sample(n)
        if elapsed >= sample_ns // 4 or n >= 1 << 26:
            return max(1, int(n * sample_ns / max(elapsed, 1)))
        n *= 4


def time_workloads(
    workloads: list[tuple[str, dict[str, Sample | None], int]], rounds: int, sample_ns: int
) -> dict[tuple[str, str], float]:
    """Best nanoseconds per operation of every (workload, flavour), rounds interleaved."""
    sizes = {
        (name, flavour): calibrate(sample, sample_ns)
        for name, samples, _ in workloads
        for flavour, sample in samples.items()
        if sample is not None
    }
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for name, samples, per_call in workloads:
            for flavour, sample in samples.items():
                if sample is None:
                    continue
                n = sizes[name, flavour]
                ns = sample(n) / (n * per_call)
                best[name, flavour] = min(ns, best.get((name, flavour), float("inf")))
    return best


# -- memory: one fresh process per flavour ---------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def page_table_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmPTE:"):
                return int(line.split()[1]) * 1024
    return 0


def suspender(flavour: str) -> Callable[[], object]:
    """A function making one fiber (greenlet, generator) suspended inside its target."""
    if flavour == "stackful":
        back = stackful.current().switch

        def target() -> None:
            back()

        def one() -> object:
            f = stackful.Fiber(target)
            f.switch()
            return f

        return one
    if flavour == "greenlet":
        gback = greenlet.getcurrent().switch

        def gtarget() -> None:
            gback()

        def gone() -> object:
            g = greenlet.greenlet(gtarget)
            g.switch()
            return g

        return gone

    def gen_target() -> Iterator[None]:
        yield None

    def gen_one() -> object:
        g = gen_target()
        next(g)
        return g

    return gen_one


def resident_pages(address: int, length: int) -> int:
    """How many pages overlapping [address, address + length) are resident (mincore)."""
    page = os.sysconf("SC_PAGE_SIZE")
    start = address - address % page
    length += address - start
    vec = (ctypes.c_ubyte * ((length + page - 1) // page))()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    if libc.mincore(start, length, vec) != 0:
        return -1
    return sum(v & 1 for v in vec)


def written_span(address: int, length: int, from_top: bool) -> int:
    """Bytes between one end of a region of fresh (zeroed) memory and its farthest nonzero byte:
    how deep a downward stack (``from_top``) or how high an upward one has written."""
    data = ctypes.string_at(address, length)
    if from_top:
        stripped = data.lstrip(b"\0")
        return len(stripped)
    return len(data.rstrip(b"\0"))


def stackful_breakdown(fiber: Any) -> dict[str, int]:
    """Where one suspended fiber's memory is: the resident pages of its mapping (C stack and
    the data-stack chunk above it), the bytes each has actually written, and the object."""
    info = fiber.stack_info()
    chunk: int = getattr(stackful._native, "DATA_CHUNK_SIZE", 16 * 1024)
    page = os.sysconf("SC_PAGE_SIZE")
    # mincore first: reading untouched memory below maps the zero page, which counts as resident.
    resident = resident_pages(info.base, info.top + chunk - info.base) * page
    used = min(info.used, info.top - info.base)
    return {
        "resident": resident,
        "c_stack_written": written_span(info.top - used, used, from_top=True) if used else 0,
        "chunk_written": written_span(info.top, chunk, from_top=False),
        "object": sys.getsizeof(fiber),
    }


def rss_child(flavour: str, count: int) -> None:
    """Run in a fresh process: report per-fiber RSS and page tables as JSON, then exit."""
    one = suspender(flavour)
    warm = [one() for _ in range(100)]  # first-use costs (thread record, caches) go here
    keep: list[object] = [None] * count
    gc.collect()
    rss0, pte0 = rss_bytes(), page_table_bytes()
    for i in range(count):
        keep[i] = one()
    rss1, pte1 = rss_bytes(), page_table_bytes()
    report: dict[str, Any] = {"rss": (rss1 - rss0) / count, "pte": (pte1 - pte0) / count}
    if flavour == "stackful":
        report["breakdown"] = stackful_breakdown(keep[-1])
    print(json.dumps(report), flush=True)
    del warm
    os._exit(0)  # skip killing every fiber at exit: not what is measured


def measure_rss(flavour: str, count: int) -> dict[str, Any] | None:
    if flavour == "greenlet" and greenlet is None:
        return None
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--rss-child", flavour, str(count)],
        capture_output=True, text=True, check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# -- the report ------------------------------------------------------------------------------


def kib(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50, help="timing rounds (best is kept)")
    parser.add_argument("--sample-ms", type=float, default=5.0, help="length of one sample")
    parser.add_argument("--fibers", type=int, default=100_000, help="alive for the RSS rows")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes")
    parser.add_argument("--rss-child", nargs=2, metavar=("FLAVOUR", "COUNT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child[0], int(args.rss_child[1]))
    if args.quick:
        args.rounds, args.sample_ms, args.fibers = 1, 2.0, 2_000

    has_greenlet = greenlet is not None
    switch_rows = [
        ("switch, depth 0", ""),
        (f"switch, {PY_LEVELS} Python levels deep", "py"),
        (f"switch, {C_LEVELS} C-heavy levels deep", "c"),
    ]
    workloads: list[tuple[str, dict[str, Sample | None], int]] = [
        (name, {
            "stackful": stackful_switch(kind),
            "greenlet": greenlet_switch(kind) if has_greenlet else None,
            "generator": generator_switch(kind),
        }, 2)
        for name, kind in switch_rows
    ]
    workloads.append(("spawn + finish", {
        "stackful": stackful_spawn,
        "greenlet": greenlet_spawn if has_greenlet else None,
        "generator": generator_spawn,
    }, 1))
    best = time_workloads(workloads, args.rounds, int(args.sample_ms * 1e6))
    memory = {flavour: measure_rss(flavour, args.fibers) for flavour in FLAVOURS}

    gl_version = greenlet.__version__ if has_greenlet else "not installed"
    print(f"# Python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPUs; greenlet {gl_version}; best of {args.rounds} rounds "
          f"of ~{args.sample_ms:g} ms")
    print("# time: ns per one-way switch, or per fiber for spawn; memory: KiB per fiber, "
          f"{args.fibers:,} suspended; ratios: other / stackful (>1: stackful better)")
    if args.quick:
        print("# --quick: a smoke run; these numbers mean nothing")
    print()

    def cell(name: str, flavour: str) -> str:
        if flavour == "greenlet" and not has_greenlet:
            return "not installed"
        value = best.get((name, flavour))
        return "n/a" if value is None else f"{value:.1f}"

    rows = []
    for name, _samples, _per_call in workloads:
        ours = best.get((name, "stackful"))
        rows.append([name, *(cell(name, f) for f in FLAVOURS),
                     ratio(best.get((name, "greenlet")), ours),
                     ratio(best.get((name, "generator")), ours)])
    for label, key in (("RSS per suspended, KiB", "rss"),
                       ("page tables per suspended, KiB", "pte")):
        values = {f: (m[key] if m else None) for f, m in memory.items()}
        rows.append([label, *("not installed" if f == "greenlet" and not has_greenlet
                              else kib(values[f]) for f in FLAVOURS),
                     ratio(values["greenlet"], values["stackful"]),
                     ratio(values["generator"], values["stackful"])])
    print(render(["workload", *FLAVOURS, "greenlet/stackful", "generator/stackful"], rows))

    ours_mem = memory["stackful"]
    if ours_mem:
        b = ours_mem["breakdown"]
        print()
        print(f"stackful, one suspended fiber: {kib(b['resident'])} KiB of its stack mapping "
              f"resident (C stack {b['c_stack_written']:,} B written, data-stack chunk "
              f"{b['chunk_written']:,} B written), Fiber object {b['object']} B")

    print()
    print("Targets of issue #2:")
    depth0 = best[switch_rows[0][0], "stackful"]
    deepest = max(best[name, "stackful"] for name, _ in switch_rows)
    checks: list[tuple[str, float | None, Callable[[float], bool], str]] = [
        ("switch at depth 0 >= 3x faster than greenlet",
         best.get((switch_rows[0][0], "greenlet"), 0) / depth0 if has_greenlet else None,
         lambda v: v >= 3, "{:.2f}x"),
        ("switch flat with depth (deepest / depth 0 <= 1.25)",
         deepest / depth0, lambda v: v <= 1.25, "{:.2f}"),
        ("spawn + finish >= 8x faster than greenlet",
         best.get(("spawn + finish", "greenlet"), 0) / best["spawn + finish", "stackful"]
         if has_greenlet else None, lambda v: v >= 8, "{:.2f}x"),
        ("<= 12 KiB resident per suspended fiber",
         ours_mem["rss"] / 1024 if ours_mem else None, lambda v: v <= 12, "{:.2f} KiB"),
    ]
    for text, value, ok, fmt in checks:
        verdict = "not measured" if value is None else (
            f"{fmt.format(value)}: {'met' if ok(value) else 'MISSED'}")
        print(f"- {text}: {verdict}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
