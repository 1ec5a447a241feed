"""stackful.greenlet against the real greenlet, side by side in one process.

Two workloads, each run on both (and on bare ``stackful.Fiber``, which shows what the
compat layer costs over the core):

* ping-pong: the main greenlet and one child switch back and forth; reported in
  nanoseconds per switch.  ``depth`` is how many C-level frames (a Python call made
  from C, as ``map`` makes it) sit on *both* stacks below the switch.  greenlet copies
  the live part of a stack on every switch, so its cost grows with depth; a fiber
  with a stack of its own should not care.
* traced ping-pong: the same at depth 0 with a trace function set (``settrace``) that
  does nothing; for bare fibers, the core's switch hook itself.  Untraced rows pay nothing
  for tracing.
* spawn: create a greenlet, start it, let it return; nanoseconds per greenlet.

The measurements of each round are interleaved (every flavour once, then again) so
that drift of the machine hits them alike; the best round is reported.  Ratios are
``greenlet / stackful.greenlet``: above 1 means stackful is faster.

    python benchmarks/bench_greenlet_compat.py [--rounds 5] [--switches 200000]
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

import stackful
import stackful.greenlet


class Flavour(Protocol):
    """The slice of the greenlet API both sides offer (bare fibers get a shim)."""

    def getcurrent(self) -> Any: ...
    def spawn(self, run: Callable[..., Any]) -> Any: ...
    def kill(self, g: Any) -> None: ...
    def settrace(self, trace: Callable[[str, Any], object] | None) -> None: ...


class GreenletFlavour:
    """A greenlet module: the real one or stackful.greenlet."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def getcurrent(self) -> Any:
        return self.module.getcurrent()

    def spawn(self, run: Callable[..., Any]) -> Any:
        return self.module.greenlet(run)

    def kill(self, g: Any) -> None:
        g.throw()

    def settrace(self, trace: Callable[[str, Any], object] | None) -> None:
        self.module.settrace(trace)


class FiberFlavour:
    """stackful's own Fiber, with no greenlet layer at all."""

    def getcurrent(self) -> Any:
        return stackful.current()

    def spawn(self, run: Callable[..., Any]) -> Any:
        return stackful.Fiber(run)

    def kill(self, g: Any) -> None:
        g.kill()

    def settrace(self, trace: Callable[[str, Any], object] | None) -> None:
        stackful._native.set_switch_hook(trace)


def at_depth(depth: int, body: Callable[[], float]) -> float:
    """Call ``body`` below ``depth`` C-level frames (each level re-enters Python from C)."""
    if depth == 0:
        return body()
    return next(map(at_depth, [depth - 1], [body]))


def ping_pong(flavour: Flavour, depth: int, switches: int) -> float:
    """Nanoseconds per switch between main and a child, both ``depth`` frames down."""
    round_trips = switches // 2

    def child() -> float:
        def loop() -> float:
            back = hub.switch
            while True:
                back()

        return at_depth(depth, loop)

    def measure() -> float:
        g = flavour.spawn(child)
        g.switch()  # the child goes down to its depth and parks there
        forth = g.switch
        start = time.perf_counter()
        for _ in range(round_trips):
            forth()
        elapsed = time.perf_counter() - start
        flavour.kill(g)
        return elapsed

    hub = flavour.getcurrent()
    return at_depth(depth, measure) * 1e9 / (2 * round_trips)


def traced_ping_pong(flavour: Flavour, switches: int) -> float:
    """ping_pong at depth 0 with a trace function that does nothing."""

    def trace(event: str, args: Any) -> None:
        return None

    flavour.settrace(trace)
    try:
        return ping_pong(flavour, 0, switches)
    finally:
        flavour.settrace(None)


def spawn(flavour: Flavour, count: int) -> float:
    """Nanoseconds to create, start and finish one greenlet that returns at once."""

    def run() -> None:
        return None

    new = flavour.spawn
    start = time.perf_counter()
    for _ in range(count):
        new(run).switch()
    return (time.perf_counter() - start) * 1e9 / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--switches", type=int, default=200_000)
    parser.add_argument("--spawns", type=int, default=50_000)
    parser.add_argument("--depths", type=int, nargs="+", default=[0, 10, 50, 200])
    args = parser.parse_args()

    flavours: dict[str, Flavour] = {"stackful.greenlet": GreenletFlavour(stackful.greenlet)}
    try:
        flavours["greenlet"] = GreenletFlavour(importlib.import_module("greenlet"))
    except ImportError:
        print("note: greenlet is not installed; its columns are left out")
    flavours["stackful.Fiber"] = FiberFlavour()

    workloads: list[tuple[str, Callable[[Flavour], float]]] = [
        (f"ping-pong depth {d}", lambda f, d=d: ping_pong(f, d, args.switches))  # type: ignore[misc]
        for d in args.depths
    ]
    workloads.append(("ping-pong traced", lambda f: traced_ping_pong(f, args.switches)))
    workloads.append(("spawn + run + finish", lambda f: spawn(f, args.spawns)))

    best: dict[tuple[str, str], float] = {}
    for _ in range(args.rounds):
        for name, work in workloads:
            for label, flavour in flavours.items():
                ns = work(flavour)
                best[name, label] = min(ns, best.get((name, label), float("inf")))

    print(
        f"Python {platform.python_version()} on {platform.machine()}; "
        f"best of {args.rounds} rounds; ns per switch (ping-pong) or per greenlet (spawn)"
    )
    labels = list(flavours)
    header = f"{'workload':<24}" + "".join(f"{label:>20}" for label in labels)
    has_greenlet = "greenlet" in flavours
    if has_greenlet:
        header += f"{'greenlet/stackful':>20}"
    print(header)
    print("-" * len(header))
    for name, _work in workloads:
        row = f"{name:<24}" + "".join(f"{best[name, label]:>20.1f}" for label in labels)
        if has_greenlet:
            ratio = best[name, "greenlet"] / best[name, "stackful.greenlet"]
            row += f"{ratio:>19.2f}x"
        print(row)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
