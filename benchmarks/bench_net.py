"""Network servers side by side: stackful against asyncio, uvloop and gevent (issue 8).

Every server runs in its own process, single-threaded, on loopback; the load comes from another
process: ``wrk`` for HTTP, ``net/echo_client.c`` (compiled at run time with gcc) for echo.
The servers share their handler logic (``net/protocol.py``): a minimal HTTP/1.1 keep-alive
hello world (read until the blank line ending a request head, answer a fixed 200 with a
Content-Length) and an echo.

Workloads:

* HTTP keep-alive hello world, ``wrk -t1`` with 100 and with 1,000 connections: requests/s;
* echo, 1,000 connections each sending 1 KiB and reading it back, measured once every
  connection has had its first reply: messages/s and MB/s;
* memory per idle connection: 10,000 connections each make one echo round trip and stay
  open; the server's RSS + page tables (``VmRSS`` + ``VmPTE``) after, minus before, per
  connection;
* peak RSS of each server during the load (``VmHWM`` of a server process started for it).

Each measurement starts a fresh server, warms it up, then measures; every server is measured
once per round, rounds interleaved (the order rotated), so drift on a shared machine hits all
alike; each cell is the median of the rounds and "spread" is (max - min) / median.  Ratios are
stackful / other for throughput (above 1: stackful is faster) and per idle connection (below
1: stackful uses less).  A throughput ratio is paired: it is taken round by round (stackful's
sample against the other's of the same round) and the median of those is printed, with their
range ("rounds"), because on a shared machine the whole machine's speed drifts more between
rounds than the servers differ.

The load clients run two threads (``--client-threads``).  On a machine with two CPUs they then
compete with the single-threaded server for cores (the "waiting for one" column shows how
much); one thread leaves the server a core of its own but co-limits the fastest servers (the
``C epoll`` row shows the client's own limit).  BENCHMARKS.md has runs with both.

Columns beside the rate, read from /proc for the measured window:

* server CPU per request (user + system).  When the machine is shared, requests/s measures
  also how much CPU the scheduler gave the server; CPU per request does not, so the ratio
  "by CPU" (other's CPU per request / stackful's) is the steadier comparison of the servers'
  own cost.  Both are printed; they agree on a quiet machine.
* server on CPU / waiting for one: the share of the window the server ran, and the share it
  was runnable but waited for a core (``/proc/PID/schedstat``): the machine's contention.
* client CPU / server CPU: what the load client spent per request against the server.  The
  client is not the limit while it is below 1 and it was not starved either; the ``C epoll``
  row (``net/ceiling_server.c``, not a contender) shows the rate the same client reaches
  against a server that costs almost nothing in user space.

Servers: stackful (``net/server_stackful.py``), uvloop and asyncio protocols, asyncio streams,
gevent; any that is not installed is skipped with a note.  Setup, in a virtualenv that also
sees stackful (``pip install .``, or ``PYTHONPATH=src`` after ``tools/build-inplace.sh``):

    apt-get install wrk gcc
    pip install uvloop gevent
    python benchmarks/bench_net.py [--rounds 5] [--duration 3] [--servers stackful,uvloop]
                                   [--raw samples.json] [--quick]

About 10 minutes with the defaults; ``--quick`` (a smoke test: tiny sizes, one round) about 20 s.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import re
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn

from _table import render

NET = Path(__file__).resolve().parent / "net"
CEILING = "C epoll (ceiling)"
SERVER_KEYS = ("stackful", "uvloop", "asyncio-protocol", "asyncio-streams", "gevent", "ceiling")
PING = b"ping\n"
STARTUP_DEADLINE = 60.0  # seconds for a server to say it listens (a loaded machine is slow)


# -- the servers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flavour:
    """One server: how to start it for a workload, and what it needs installed."""

    key: str  # for --servers
    name: str
    argv: Callable[[str], list[str]]  # workload -> command line
    needs: str | None = None  # a module that must be importable
    contender: bool = True  # False for the C ceiling: shown, never a ratio's subject


def python_server(script: str, *extra: str) -> Callable[[str], list[str]]:
    def argv(workload: str) -> list[str]:
        return [sys.executable, str(NET / script), *extra, "--workload", workload]
    return argv


def flavours(ceiling: Path | None) -> list[Flavour]:
    """Every server, stackful first; the C ceiling last when it could be built."""
    found = [
        Flavour("stackful", "stackful", python_server("server_stackful.py"), "stackful"),
        Flavour("uvloop", "uvloop protocol",
                python_server("server_asyncio_protocol.py", "--uvloop"), "uvloop"),
        Flavour("asyncio-protocol", "asyncio protocol",
                python_server("server_asyncio_protocol.py")),
        Flavour("asyncio-streams", "asyncio streams", python_server("server_asyncio_streams.py")),
        Flavour("gevent", "gevent", python_server("server_gevent.py"), "gevent"),
    ]
    if ceiling is not None:
        found.append(Flavour("ceiling", CEILING, lambda w: [str(ceiling), w], contender=False))
    return found


def installed(flavour: Flavour) -> bool:
    """Whether the server's package imports here (the servers run on this interpreter)."""
    if flavour.needs is None:
        return True
    try:
        importlib.import_module(flavour.needs)
    except ImportError:
        return False
    return True


class Server:
    """A server process: started, asked for its memory and CPU, stopped."""

    def __init__(self, flavour: Flavour, workload: str) -> None:
        self.name = flavour.name
        self.errors = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(flavour.argv(workload), stdout=subprocess.PIPE,
                                     stderr=self.errors, stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + STARTUP_DEADLINE
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                self.fail(f"did not say it listens within {STARTUP_DEADLINE:.0f} s")
            chunk = os.read(self.proc.stdout.fileno(), 64)
            if not chunk:
                self.fail("exited before listening")
            line += chunk
        match = re.fullmatch(rb"listening (\d+)\n", line)
        if match is None:
            self.fail(f"said {line!r}, not 'listening PORT'")
        self.port = int(match[1])

    def fail(self, what: str) -> NoReturn:
        self.proc.kill()
        self.proc.wait()
        self.errors.seek(0)
        err = self.errors.read().decode(errors="replace").strip()
        raise RuntimeError(f"server {self.name!r} {what}" + (f":\n{err}" if err else ""))

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            self.fail(f"died with exit code {self.proc.returncode}")

    def status_kib(self) -> dict[str, int]:
        """VmRSS, VmHWM (peak RSS), VmPTE (page tables) from /proc, in KiB."""
        fields = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "VmPTE"):
                    fields[key] = int(value.split()[0])
        return fields

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            after_name = f.read().rpartition(")")[2].split()
        return (int(after_name[11]) + int(after_name[12])) / os.sysconf("SC_CLK_TCK")

    def cpu_wait_seconds(self) -> float:
        """Time spent runnable but waiting for a CPU (the machine is shared)."""
        with open(f"/proc/{self.proc.pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9

    def stop(self) -> None:
        self.check_alive()
        self.proc.kill()
        self.proc.wait()
        self.errors.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


# -- the load ------------------------------------------------------------------------------------


@dataclass
class Load:
    """One load run: what the client counted, and the CPU it used."""

    rate: float  # requests or messages per second
    seconds: float
    client_cpu: float
    errors: int
    detail: str = ""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_client(argv: list[str], timeout: float) -> tuple[str, float]:
    """Run a load client to its end; its stdout and the CPU seconds it used.

    Servers are reaped only when stopped, so the only child reaped in between is the client.
    """
    cpu0 = children_cpu()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    cpu = children_cpu() - cpu0
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout, cpu


def wrk(port: int, connections: int, seconds: int, threads: int) -> Load:
    out, cpu = run_client(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
         f"http://127.0.0.1:{port}/"], timeout=seconds + 60)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", out)
    if rate is None or total is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    unit = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[total[3]]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non_2xx[1]) if non_2xx else 0
    return Load(float(rate[1]), float(total[2]) * unit, cpu, errors)


def echo_client(binary: Path, port: int, connections: int, size: int, seconds: float,
                threads: int) -> Load:
    out, cpu = run_client(
        [str(binary), "127.0.0.1", str(port), str(connections), str(size), "0", str(seconds),
         str(threads)], timeout=seconds + 120)
    fields = dict(zip(out.split()[::2], out.split()[1::2], strict=True))
    measured = float(fields["seconds"])
    stalled, ramp = int(fields["stalled"]), float(fields["ramp"])
    details = [f"{stalled} of {connections} connections stalled"] if stalled else []
    if ramp >= 1:  # a busy server accepting its backlog slowly
        details.append(f"every connection answered after {ramp:.1f} s")
    return Load(int(fields["messages"]) / measured, measured, cpu, int(fields["errors"]),
                ", ".join(details))


def build_c(source: str) -> Path | None:
    """Compile ``net/<source>`` once per content into the temp dir; None without gcc."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return None
    path = NET / source
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    binary = Path(tempfile.gettempdir()) / f"stackful-bench-{path.stem}-{digest}"
    if not binary.exists():
        partial = binary.with_suffix(f".{os.getpid()}")
        subprocess.run([gcc, "-O2", "-pthread", "-o", str(partial), str(path)], check=True)
        partial.replace(binary)
    return binary


# -- one measurement -----------------------------------------------------------------------------


@dataclass
class Sample:
    rate: float
    peak_rss_kib: int
    server_cpu: float  # seconds, over the measured window
    server_wait: float  # seconds runnable but off CPU, over the measured window
    client_cpu: float  # seconds, over the measured window
    seconds: float
    errors: int
    detail: str


@dataclass(frozen=True)
class Table:
    """What the tables need of a workload (all that --raw saves of it)."""

    key: str
    title: str
    unit: str  # "requests" or "messages"


@dataclass(frozen=True)
class Workload(Table):
    run: Callable[[int], Load]  # port -> load (measured part)
    warm: Callable[[int], object] | None  # port -> warm-up load, or None
    server_workload: str  # "http" or "echo"


def measure(flavour: Flavour, workload: Workload) -> Sample:
    server = Server(flavour, workload.server_workload)
    try:
        if workload.warm is not None:
            workload.warm(server.port)
        cpu0, wait0 = server.cpu_seconds(), server.cpu_wait_seconds()
        load = workload.run(server.port)
        cpu, wait = server.cpu_seconds() - cpu0, server.cpu_wait_seconds() - wait0
        server.check_alive()
        peak = server.status_kib()["VmHWM"]
    finally:
        server.stop()
    return Sample(load.rate, peak, cpu, wait, load.client_cpu, load.seconds, load.errors,
                  load.detail)


def open_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` connections, each after one echo round trip (so its handler is parked)."""
    conns = []
    for _ in range(count):
        conn = socket.create_connection(("127.0.0.1", port), timeout=30)
        conn.sendall(PING)
        got = b""
        while len(got) < len(PING):
            chunk = conn.recv(len(PING) - len(got))
            if not chunk:
                raise RuntimeError("server closed an idle connection")
            got += chunk
        conns.append(conn)
    return conns


@dataclass
class IdleSample:
    rss_kib: float  # per connection
    pte_kib: float  # per connection
    before_kib: int  # RSS + page tables before

    @property
    def total(self) -> float:
        return self.rss_kib + self.pte_kib


# Seconds the idle connections are left alone before memory is read: past stackful's
# trimming of parked stacks (half a second of an idle hub), the same wait for every server.
IDLE_SETTLE = 1.0


def measure_idle(flavour: Flavour, count: int) -> IdleSample:
    server = Server(flavour, "echo")
    try:
        # A few connections first, so what the first one loads (modules, the poller) is
        # not counted; few enough that no pool of stacks or buffers is grown in advance.
        for conn in open_idle(server.port, 10):
            conn.close()
        time.sleep(0.2)
        before = server.status_kib()
        conns = open_idle(server.port, count)
        time.sleep(IDLE_SETTLE)
        server.check_alive()
        after = server.status_kib()
        for conn in conns:
            conn.close()
    finally:
        server.stop()
    return IdleSample((after["VmRSS"] - before["VmRSS"]) / count,
                      (after["VmPTE"] - before["VmPTE"]) / count,
                      before["VmRSS"] + before["VmPTE"])


# -- the tables ----------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    mid = median(values)
    if len(values) < 2 or mid == 0:
        return "-"
    return f"{(max(values) - min(values)) / mid * 100:.0f}%"


def times(a: float | None, b: float | None) -> str:
    """``a / b`` as ``"0.42x"``, or ``"-"`` when either side was not measured."""
    if a is None or b is None or b <= 0:
        return "-"
    value = a / b
    return f"{value:.1f}x" if value >= 10 else f"{value:.2f}x"


def paired(ours: list[Sample] | None, theirs: list[Sample],
           value: Callable[[Sample], float]) -> list[float]:
    """Round by round, ``value(ours) / value(theirs)``: each pair was measured within the same
    round, minutes apart at most, so drift on a shared machine cancels out of each ratio."""
    if not ours:
        return []
    return [value(a) / value(b) for a, b in zip(ours, theirs, strict=True) if value(b) > 0]


def ratio_cells(ratios: list[float]) -> tuple[str, str]:
    """(median ratio, range over the rounds) as ``("1.09x", "1.02-1.15x")``."""
    if not ratios:
        return "-", "-"
    low, high = min(ratios), max(ratios)
    return times(median(ratios), 1.0), f"{low:.2f}-{high:.2f}x"


def cost(sample: Sample) -> float:
    """Server CPU seconds per request: steadier than requests/s when the CPU is shared."""
    return sample.server_cpu / (sample.rate * sample.seconds)


def by_rate(sample: Sample) -> float:
    """Requests per second: what a plain ratio compares."""
    return sample.rate


def per_request(sample: Sample) -> float:
    """Requests per server CPU second: what a "by CPU" ratio compares."""
    return 1 / cost(sample)


def against(results: dict[str, list[Sample]], name: str,
            value: Callable[[Sample], float]) -> list[float]:
    """stackful's paired ratios against server ``name`` (none if either was not measured)."""
    return paired(results.get("stackful"), results[name], value) if name in results else []


def load_table(workload: Table, results: dict[str, list[Sample]]) -> str:
    per = "req" if workload.unit == "requests" else "msg"
    header = ["server", f"{workload.unit}/s", "spread", f"server CPU, µs/{per}", "CPU spread",
              "stackful / this", "rounds", "same, by CPU", "peak RSS, MiB",
              "server on CPU / waiting for one", "client CPU / server CPU"]
    if workload.unit == "messages":
        header.insert(2, "MB/s each way")
    stackful = results.get("stackful")
    rows = []
    for name, samples in results.items():
        rate = median([s.rate for s in samples])
        costs = [cost(s) for s in samples]
        rate_ratio = ratio_cells(paired(stackful, samples, by_rate))
        cpu_ratio = ratio_cells(paired(stackful, samples, per_request))[0]
        row = [
            name,
            f"{rate:,.0f}",
            spread([s.rate for s in samples]),
            f"{median(costs) * 1e6:.1f}",
            spread(costs),
            *(rate_ratio if name != "stackful" else ("1.00x", "")),
            cpu_ratio if name != "stackful" else "1.00x",
            f"{median([s.peak_rss_kib for s in samples]) / 1024:.1f}",
            f"{median([s.server_cpu / s.seconds for s in samples]) * 100:.0f}% / "
            f"{median([s.server_wait / s.seconds for s in samples]) * 100:.0f}%",
            f"{median([s.client_cpu / s.server_cpu for s in samples if s.server_cpu]):.2f}"
            if any(s.server_cpu for s in samples) else "-",
        ]
        if workload.unit == "messages":
            row.insert(2, f"{rate * ECHO_SIZE / 1e6:.1f}")
        rows.append(row)
    return render(header, rows)


def idle_table(results: dict[str, list[IdleSample]]) -> str:
    header = ["server", "KiB per connection", "spread", "RSS KiB", "page tables KiB",
              "before, MiB", "stackful / this"]
    stackful = results.get("stackful")
    ours = median([s.total for s in stackful]) if stackful else None
    rows = []
    for name, samples in results.items():
        total = median([s.total for s in samples])
        rows.append([
            name,
            f"{total:.2f}",
            spread([s.total for s in samples]),
            f"{median([s.rss_kib for s in samples]):.2f}",
            f"{median([s.pte_kib for s in samples]):.2f}",
            f"{median([s.before_kib for s in samples]) / 1024:.1f}",
            times(ours, total) if name != "stackful" else "1.00x",
        ])
    return render(header, rows)


def summary_table(loads: list[tuple[Table, dict[str, list[Sample]]]],
                  idle: dict[str, list[IdleSample]] | None, idle_count: int) -> str:
    """The issue's one table: stackful against uvloop and gevent, with the targets."""
    header = ["workload", "stackful", "uvloop protocol", "gevent", "stackful / uvloop",
              "rounds", "stackful / gevent", "rounds", "by CPU: / uvloop", "by CPU: / gevent",
              "target (issue 8)"]
    rows = []

    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for workload, results in loads:
        rate = {name: median([s.rate for s in samples]) for name, samples in results.items()}
        ours, uv, gv = rate.get("stackful"), rate.get("uvloop protocol"), rate.get("gevent")
        target = ("≥ 1x uvloop, ≥ 2x gevent" if workload.unit == "requests" else "≥ 1x uvloop")
        rows.append([f"{workload.title}, {workload.unit}/s", cell(ours, ",.0f"), cell(uv, ",.0f"),
                     cell(gv, ",.0f"),
                     *ratio_cells(against(results, "uvloop protocol", by_rate)),
                     *ratio_cells(against(results, "gevent", by_rate)),
                     ratio_cells(against(results, "uvloop protocol", per_request))[0],
                     ratio_cells(against(results, "gevent", per_request))[0], target])
    if idle is not None:
        kib = {name: median([s.total for s in samples]) for name, samples in idle.items()}
        ours, uv, gv = kib.get("stackful"), kib.get("uvloop protocol"), kib.get("gevent")
        rows.append([f"idle connection ({idle_count:,}), KiB RSS + page tables",
                     cell(ours, ".2f"), cell(uv, ".2f"), cell(gv, ".2f"), times(ours, uv), "",
                     times(ours, gv), "", "", "", "≤ 6 KiB"])
    return render(header, rows)


# -- main ----------------------------------------------------------------------------------------

ECHO_SIZE = 1024


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"bench_net needs {needed} file descriptors; the hard limit is {hard} "
                         "(lower --idle, or raise it with ulimit -Hn as root)")
    # The servers inherit it.
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def versions(servers: list[Flavour]) -> str:
    parts = [f"Python {platform.python_version()}"]
    for module in ("uvloop", "gevent"):
        if any(s.needs == module for s in servers):
            try:
                parts.append(f"{module} {importlib.metadata.version(module)}")
            except importlib.metadata.PackageNotFoundError:
                parts.append(f"{module} (version unknown)")
    if shutil.which("wrk"):
        head = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
        parts.append(f"wrk {head[1] if len(head) > 1 else '?'}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Measure every installed server on every workload and print the tables."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="measurements per cell (median)")
    parser.add_argument("--duration", type=int, default=3, help="seconds of load per measure")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of load before it")
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections")
    parser.add_argument("--servers", default=",".join(SERVER_KEYS),
                        help=f"comma-separated, among {', '.join(SERVER_KEYS)}")
    parser.add_argument("--client-threads", type=int, default=2,
                        help="threads of the load clients (wrk -t, echo_client)")
    parser.add_argument("--raw", type=Path, help="also write every sample to this JSON file")
    parser.add_argument("--from-raw", type=Path, metavar="RAW",
                        help="measure nothing: print the tables of a run saved with --raw")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: one round, 1 s loads, few connections")
    args = parser.parse_args(argv)
    if args.from_raw is not None:
        saved = json.loads(args.from_raw.read_text())
        print(f"# {saved['header']}")
        report([Table(**w) for w in saved["workloads"]],
               {key: {name: [Sample(**s) for s in samples] for name, samples in by.items()}
                for key, by in saved["loads"].items()},
               {name: [IdleSample(**s) for s in samples]
                for name, samples in saved["idle"].items()},
               saved["idle_count"])
        return 0
    wanted = args.servers.split(",")
    if unknown := set(wanted) - set(SERVER_KEYS):
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    if args.quick:
        args.rounds, args.duration, args.warmup, args.idle = 1, 1, 0, 200
    http_conns = (20, 100) if args.quick else (100, 1000)
    echo_conns = 100 if args.quick else 1000
    echo_seconds = 0.3 if args.quick else float(args.duration)
    raise_fd_limit(max(args.idle, *http_conns, echo_conns) + 1000)

    notes = []
    have_wrk = shutil.which("wrk") is not None
    if not have_wrk:
        notes.append("wrk not found: the HTTP workloads are skipped (apt-get install wrk)")
    echo_binary = build_c("echo_client.c")
    ceiling = build_c("ceiling_server.c")
    if echo_binary is None:
        notes.append("gcc not found: the echo workload and the C ceiling are skipped")
    servers = []
    for flavour in flavours(ceiling):
        if flavour.key not in wanted:
            continue
        if installed(flavour):
            servers.append(flavour)
        else:
            notes.append(f"{flavour.name}: {flavour.needs} not installed, skipped "
                         f"(pip install {flavour.needs})")

    workloads = []
    if have_wrk:
        for conns in http_conns:
            def run(port: int, c: int = conns) -> Load:
                return wrk(port, c, args.duration, args.client_threads)

            def warm(port: int, c: int = conns) -> Load:
                return wrk(port, c, args.warmup, args.client_threads)

            workloads.append(Workload(
                f"http{conns}", f"HTTP keep-alive hello world, {conns:,} connections",
                "requests", run, warm if args.warmup else None, "http"))
    if echo_binary is not None:
        binary = echo_binary

        def run_echo(port: int) -> Load:
            return echo_client(binary, port, echo_conns, ECHO_SIZE, echo_seconds,
                               args.client_threads)

        def warm_echo(port: int) -> Load:
            return echo_client(binary, port, echo_conns, ECHO_SIZE, float(args.warmup),
                               args.client_threads)

        workloads.append(Workload(
            "echo", f"echo {ECHO_SIZE} B, {echo_conns:,} connections", "messages", run_echo,
            warm_echo if args.warmup else None, "echo"))

    print(f"# {versions(servers)}; {os.cpu_count()} CPUs; median of {args.rounds} round(s), "
          f"{args.duration} s of load after {args.warmup} s of warm-up; each server "
          f"single-threaded in its own process; load clients on {args.client_threads} threads")
    for note in notes:
        print(f"# note: {note}")
    sys.stdout.flush()

    loads: dict[str, dict[str, list[Sample]]] = {w.key: {s.name: [] for s in servers}
                                                 for w in workloads}
    idle: dict[str, list[IdleSample]] = {s.name: [] for s in servers if s.contender}
    for round_no in range(args.rounds):
        order = servers[round_no % len(servers):] + servers[:round_no % len(servers)]
        for workload in workloads:
            for flavour in order:
                print(f"round {round_no + 1}/{args.rounds}: {workload.key} {flavour.name}",
                      file=sys.stderr, flush=True)
                loads[workload.key][flavour.name].append(measure(flavour, workload))
        for flavour in order:
            if flavour.contender:
                print(f"round {round_no + 1}/{args.rounds}: idle {flavour.name}",
                      file=sys.stderr, flush=True)
                idle[flavour.name].append(measure_idle(flavour, args.idle))

    if args.raw is not None:
        args.raw.write_text(json.dumps({
            "header": versions(servers) + f"; load clients on {args.client_threads} threads",
            "workloads": [asdict(Table(w.key, w.title, w.unit)) for w in workloads],
            "loads": {key: {name: [asdict(s) for s in samples] for name, samples in by.items()}
                      for key, by in loads.items()},
            "idle": {name: [asdict(s) for s in samples] for name, samples in idle.items()},
            "idle_count": args.idle,
        }, indent=1))
    report(workloads, loads, idle, args.idle)
    return 0


def report(workloads: Sequence[Table], loads: dict[str, dict[str, list[Sample]]],
           idle: dict[str, list[IdleSample]], idle_count: int) -> None:
    """Print every table: one per workload, the idle memory, the issue's summary."""
    for workload in workloads:
        print(f"\n### {workload.title}\n")
        print(load_table(workload, loads[workload.key]))
        for name, samples in loads[workload.key].items():
            errors = sum(s.errors for s in samples)
            details = [f"round {i + 1}: {s.detail}" for i, s in enumerate(samples) if s.detail]
            if notes := ([f"{errors} client errors"] if errors else []) + details:
                print(f"\n{name}: " + "; ".join(notes))
    print(f"\n### Memory per idle connection ({idle_count:,} connections, one echo each)\n")
    print(idle_table(idle))
    print("\n### Summary: stackful / uvloop and stackful / gevent\n")
    contenders = [(w, {n: s for n, s in loads[w.key].items() if n != CEILING})
                  for w in workloads]
    print(summary_table(contenders, idle, idle_count))


if __name__ == "__main__":
    sys.exit(main())
