"""Blocking code made cooperative: 100 concurrent ``requests.get`` to a slow server (issue 9).

The server (its own process: asyncio, one thread, so its own cost stays small) answers every
request after sleeping 50 ms.  Each client makes a *batch* of 100 ``requests.get`` calls at once
(each its own connection, as ``requests.get`` opens one) and waits for all of them; the ideal is
one delay, 50 ms, whatever the number of calls.  Clients, each in its own process (patching is
process-wide):

* stackful: ``stackful.monkey.patch_all()``, 100 tasks in ``stackful.run``;
* gevent: ``gevent.monkey.patch_all()``, 100 greenlets;
* threads: 100 OS threads (a ``ThreadPoolExecutor`` of 100, made before the batches);
* serial: one call after another, for reference (100 delays).

Each client process warms up (one batch, not measured), then times ``--batches`` batches; every
reply is checked.  Client processes run in ``--rounds`` rounds, interleaved with a rotating order,
so that drift on a shared machine hits all alike; the cells are medians over all batches.
Columns: wall time of a batch; that over the 50 ms delay; the client's and the server's CPU time
per batch (user + system, all threads; the server's from /proc, warm-up batch included); how
long the client's threads were runnable but waited for a CPU (``/proc/self/task/*/schedstat``):
on a shared machine, the part of the wall time that is the machine's, not the client's.

Setup, in a virtualenv that also sees stackful (``pip install .``, or ``PYTHONPATH=src`` after
``tools/build-inplace.sh``):

    pip install requests gevent
    python benchmarks/bench_blocking.py [--rounds 3] [--batches 5] [--clients stackful,gevent]

About a minute with the defaults (the serial client alone takes 5 s a batch).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _table import ratio, render

CLIENTS = ("stackful", "gevent", "threads", "serial")
STARTUP_DEADLINE = 60.0  # seconds for the server to say where it listens
WORKER_DEADLINE = 300.0  # seconds for a client process to finish its batches


# --- the server -----------------------------------------------------------------------------


def serve(delay: float) -> None:
    """HTTP/1.1, one request per connection: ``GET /<i>`` -> ``<i>`` after ``delay`` s."""
    import asyncio

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            await asyncio.sleep(delay)
            body = path.lstrip(b"/")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        loop = asyncio.get_running_loop()
        stdin_closed = loop.create_future()
        # Serve until the parent closes our stdin (or goes away).
        loop.add_reader(sys.stdin.fileno(), lambda: stdin_closed.done() or
                        stdin_closed.set_result(None))
        async with server:
            await stdin_closed

    asyncio.run(main())


# --- the clients (each in its own process) --------------------------------------------------


def batch_runner(client: str, concurrency: int) -> Callable[[Callable[[int], None]], None]:
    """Patch for ``client`` (before ``requests`` is imported), and return a function that
    runs ``call(i)`` for i in range(concurrency) the client's way and waits for all."""
    if client == "gevent":
        from gevent import monkey

        monkey.patch_all()
        import gevent

        def run_gevent(call: Callable[[int], None]) -> None:
            greenlets = [gevent.spawn(call, i) for i in range(concurrency)]
            gevent.joinall(greenlets, raise_error=True)

        return run_gevent
    if client == "stackful":
        import stackful
        from stackful import monkey as stackful_monkey

        stackful_monkey.patch_all()

        def run_stackful(call: Callable[[int], None]) -> None:
            def main() -> None:
                tasks = [stackful.spawn(call, i) for i in range(concurrency)]
                for task in tasks:
                    task.join()

            stackful.run(main)

        return run_stackful
    if client == "threads":
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=concurrency)

        def run_threads(call: Callable[[int], None]) -> None:
            list(pool.map(call, range(concurrency)))

        return run_threads
    if client == "serial":

        def run_serial(call: Callable[[int], None]) -> None:
            for i in range(concurrency):
                call(i)

        return run_serial
    raise ValueError(f"unknown client {client!r}")


def work(client: str, port: int, concurrency: int, batches: int) -> None:
    """A client process: warm up, time ``batches`` batches, print JSON samples."""
    run_batch = batch_runner(client, concurrency)
    import requests

    def call(i: int) -> None:
        reply = requests.get(f"http://127.0.0.1:{port}/{i}", timeout=60)
        if reply.status_code != 200 or reply.text != str(i):
            raise RuntimeError(f"request {i}: {reply.status_code} {reply.text!r}")

    run_batch(call)  # warm-up: imports, first connections, pools
    walls, cpus, waits = [], [], []
    for _ in range(batches):
        wait0, cpu0, wall0 = runqueue_wait(), time.process_time(), time.perf_counter()
        run_batch(call)
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
        waits.append(runqueue_wait() - wait0)
    print(json.dumps({"walls": walls, "cpus": cpus, "waits": waits}), flush=True)


def runqueue_wait() -> float:
    """Seconds this process's threads have been runnable but waiting for a CPU (Linux)."""
    total = 0
    for stat in Path("/proc/self/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[1])
        except (OSError, IndexError):
            pass  # a thread that ended meanwhile
    return total / 1e9


# --- the driver -----------------------------------------------------------------------------


def available(client: str) -> str | None:
    """None if ``client`` can run here, else why not."""
    import importlib.util

    needs = {"stackful": ["stackful.monkey"], "gevent": ["gevent"]}.get(client, [])
    for module in ["requests", *needs]:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            return f"{module} is not installed"
    return None


def start_server(delay: float) -> tuple[subprocess.Popen[str], int]:
    import select

    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--delay-ms",
                             str(delay * 1000)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    if not select.select([proc.stdout], [], [], STARTUP_DEADLINE)[0]:
        proc.kill()
        raise RuntimeError("the server did not say where it listens in time")
    return proc, int(proc.stdout.readline())


def cpu_ms(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, in milliseconds (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def run_client(client: str, port: int, args: argparse.Namespace) -> dict[str, list[float]]:
    batches = 1 if client == "serial" else args.batches
    cmd = [sys.executable, __file__, "--worker", client, "--port", str(port),
           "--concurrency", str(args.concurrency), "--batches", str(batches)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_DEADLINE)
    if done.returncode != 0:
        raise RuntimeError(f"the {client} client failed ({done.returncode}):\n{done.stderr}")
    samples: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return samples


def versions() -> str:
    import importlib.metadata
    import platform

    parts = [f"CPython {platform.python_version()}"]
    for dist in ("requests", "urllib3", "gevent", "greenlet"):
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(parts)


def drive(args: argparse.Namespace) -> None:
    delay = args.delay_ms / 1000
    wanted = args.clients.split(",")
    notes = []
    clients = []
    for client in wanted:
        if client not in CLIENTS:
            sys.exit(f"unknown client {client!r}; choose from {', '.join(CLIENTS)}")
        why = available(client)
        if why is None:
            clients.append(client)
        else:
            notes.append(f"{client}: not measured ({why})")
    samples: dict[str, dict[str, list[float]]] = {
        c: {"walls": [], "cpus": [], "waits": [], "server": []} for c in clients}
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    server, port = start_server(delay)
    try:
        for r in range(args.rounds):
            order = clients[r % len(clients):] + clients[:r % len(clients)]
            for client in order:
                before = cpu_ms(server.pid)
                got = run_client(client, port, args)
                # The server's CPU per batch, the warm-up batch counted too.
                samples[client]["server"].append(
                    (cpu_ms(server.pid) - before) / (len(got["walls"]) + 1))
                for key in ("walls", "cpus", "waits"):
                    samples[client][key] += got[key]
            print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(30)

    medians = {c: (statistics.median(s["walls"]), statistics.median(s["cpus"]))
               for c, s in samples.items()}
    stackful_wall = medians.get("stackful", (None, None))[0]
    rows: list[list[str]] = []
    for client in clients:
        wall, cpu = medians[client]
        walls = samples[client]["walls"]
        rows.append([client, f"{wall * 1000:.1f}", f"{min(walls) * 1000:.1f}",
                     f"{wall / delay:.2f}x" if delay else "-", f"{(wall - delay) * 1000:.1f}",
                     f"{cpu * 1000:.1f}", f"{statistics.median(samples[client]['server']):.1f}",
                     f"{statistics.median(samples[client]['waits']) * 1000:.1f}",
                     ratio(wall, stackful_wall)])
    print(f"{args.concurrency} concurrent requests.get, server delay {args.delay_ms:g} ms; "
          f"{versions()}; {os.cpu_count()} CPUs, load average {load} at the start\n")
    print(render(["client", "wall, median (ms)", "best (ms)", f"/ {args.delay_ms:g} ms",
                  "over the delay (ms)", "client CPU (ms)", "server CPU (ms)",
                  "client waited for a CPU (ms)", "wall / stackful's"], rows))
    n = {c: len(samples[c]["walls"]) for c in clients}
    print(f"\nbatches measured: {', '.join(f'{c} {k}' for c, k in n.items())}")
    for note in notes:
        print(note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=5, help="timed batches per client run")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.delay_ms / 1000)
    elif args.worker:
        work(args.worker, args.port, args.concurrency, args.batches)
    else:
        drive(args)


if __name__ == "__main__":
    main()

