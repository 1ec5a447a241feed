"""stackful.server: a task per connection, errors contained, bounded accepting, graceful stop,
1,000 concurrent connections, TLS, and the connection tasks' small stacks."""

from __future__ import annotations

import math
import random
import resource
import select
import shutil
import signal
import socket as std_socket
import ssl as std_ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import stackful
from stackful import socket, ssl
from stackful.runtime_api import Cancelled, Runtime, TaskExceptHookArgs
from stackful.server import CONNECTION_STACK_SIZE, Server, serve_tcp

from ._net import BOUND, needs_ipv6, run_bounded
from ._support import child_env
from ._tls import certificate_fixture, client_context, server_context  # noqa: F401

Cert = tuple[Path, Path]


def start(handler: Callable[[socket.socket, Any], object], host: str | None = "127.0.0.1",
          **options: Any) -> tuple[stackful.Task, Server]:
    """Spawn ``serve_tcp`` in a task and return it with its server, once listening."""
    ready: list[Server] = []
    task = stackful.spawn(lambda: serve_tcp(handler, host, 0, ready=ready.append, **options),
                          name="server")
    while not ready:
        stackful.sleep(0.001)
        assert not task.done(), task.result()
    return task, ready[0]


def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (bounded by the test's timeout scope)."""
    while not condition():
        stackful.sleep(0.002)


def echo(conn: socket.socket, addr: Any) -> None:
    while data := conn.recv(4096):
        conn.sendall(data)


def roundtrip(port: int, message: bytes, host: str = "127.0.0.1") -> bytes:
    with socket.create_connection((host, port)) as c:
        c.sendall(message)
        got = b""
        while len(got) < len(message):
            chunk = c.recv(4096)
            if not chunk:
                break
            got += chunk
        return got


# -- serving --------------------------------------------------------------------------------------


def test_echo_server_serves_clients_and_close_ends_serve_tcp() -> None:
    def main() -> None:
        task, server = start(echo)
        assert server.port > 0 and server.address[0] == "127.0.0.1"
        results = [stackful.spawn(roundtrip, server.port, f"client {i}".encode())
                   for i in range(20)]
        assert [t.join() for t in results] == [f"client {i}".encode() for i in range(20)]
        server.close()
        assert task.join() is None
        assert server.closing and server.connections == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port))

    run_bounded(main)


def test_handlers_run_in_their_own_tasks_with_small_stacks() -> None:
    def main() -> None:
        fibers: list[stackful.Fiber] = []
        names: list[str] = []

        def handler(conn: socket.socket, addr: Any) -> None:
            fibers.append(stackful.current())
            names.append(stackful.current_task().name)
            conn.recv(1)  # blocks until the client goes

        task, server = start(handler)
        clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        wait_until(lambda: server.connections == 3)
        stackful.sleep(0.01)  # each handler is blocked in recv now
        assert len(set(fibers)) == 3 and names == ["conn-1", "conn-2", "conn-3"]
        for fiber in fibers:
            assert fiber.stack_size == CONNECTION_STACK_SIZE
            info = fiber.stack_info()
            assert info is not None
            # What a handler blocked in recv has touched: a few KiB (README, "Sizing
            # stacks"); far below the size, which is there for the handler's own calls.
            assert info.used <= 16 * 1024, info
        for c in clients:
            c.close()
        server.close()
        task.join()

    run_bounded(main)


def test_a_failing_handler_is_reported_and_the_server_goes_on() -> None:
    reported: list[TaskExceptHookArgs] = []

    def handler(conn: socket.socket, addr: Any) -> None:
        if conn.recv(4) == b"boom":
            raise ValueError("handler failed")
        conn.sendall(b"fine")

    def main() -> None:
        with stackful.timeout(BOUND):
            task, server = start(handler)
            with socket.create_connection(("127.0.0.1", server.port)) as c:
                c.sendall(b"boom")
                assert c.recv(10) == b""  # the failed handler's socket was closed
            wait_until(lambda: bool(reported))
            assert roundtrip(server.port, b"good") == b"fine"
            server.close()
            task.join()

    Runtime(excepthook=reported.append).run(main)
    assert len(reported) == 1
    assert isinstance(reported[0].exc_value, ValueError)
    assert reported[0].task.name == "conn-1"


def test_a_too_small_stack_is_a_recursion_error_in_that_handler_only() -> None:
    reported: list[TaskExceptHookArgs] = []

    def handler(conn: socket.socket, addr: Any) -> None:
        conn.recv(1)
        nested: list[Any] = []
        for _ in range(100_000):
            nested = [nested]
        conn.sendall(repr(nested).encode()[:10])  # recursion in C

    def main() -> None:
        with stackful.timeout(BOUND):
            task, server = start(handler, stack_size=stackful.MIN_STACK_SIZE)
            assert roundtrip(server.port, b"x") == b""
            wait_until(lambda: bool(reported))
            server.close()
            task.join()

    Runtime(excepthook=reported.append).run(main)
    assert [type(r.exc_value) for r in reported] == [RecursionError]


def test_max_connections_stops_accepting_until_a_handler_ends() -> None:
    def main() -> None:
        gate = stackful.Event()
        peak = [0]

        def handler(conn: socket.socket, addr: Any) -> None:
            peak[0] = max(peak[0], server.connections)
            gate.wait()
            conn.sendall(b"done")

        task, server = start(handler, max_connections=2)
        clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        wait_until(lambda: server.connections == 2)
        stackful.sleep(0.05)
        assert server.connections == 2  # the third waits in the kernel's backlog
        gate.set()
        for c in clients:
            assert c.recv(4) == b"done"
            c.close()
        assert peak[0] == 2
        server.close()
        task.join()

    run_bounded(main)


# -- stopping -------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "cancel"])
def test_graceful_stop_lets_handlers_finish_then_cancels_the_rest(how: str) -> None:
    def main() -> None:
        finished = stackful.Event()
        outcome: dict[str, str] = {}

        def handler(conn: socket.socket, addr: Any) -> None:
            kind = conn.recv(5).decode()
            try:
                if kind == "quick":
                    finished.wait()  # finishes within the grace period
                    conn.sendall(b"bye")
                else:
                    conn.recv(1)  # never returns: cancelled after the grace period
                outcome[f"{kind}-{addr[1]}"] = "returned"
            except Cancelled:
                outcome[f"{kind}-{addr[1]}"] = "cancelled"
                raise
            finally:
                outcome[f"finally-{addr[1]}"] = "ran"

        task, server = start(handler, grace=1.0)
        clients = []
        for kind in (b"quick", b"stuck", b"quick", b"stuck"):
            c = socket.create_connection(("127.0.0.1", server.port))
            c.sendall(kind)
            clients.append(c)
        wait_until(lambda: server.connections == 4)
        if how == "close":
            server.close()
        else:
            task.cancel()
        stackful.sleep(0.01)
        with pytest.raises(ConnectionRefusedError):  # no longer accepting
            socket.create_connection(("127.0.0.1", server.port))
        assert server.connections == 4  # the handlers run on meanwhile
        finished.set()
        if how == "close":
            task.join()
        else:
            with pytest.raises(Cancelled):
                task.join()
        assert server.connections == 0
        ports = [c.getsockname()[1] for c in clients]
        assert outcome == {
            f"quick-{ports[0]}": "returned", f"stuck-{ports[1]}": "cancelled",
            f"quick-{ports[2]}": "returned", f"stuck-{ports[3]}": "cancelled",
            **{f"finally-{p}": "ran" for p in ports},
        }
        assert clients[0].recv(3) == b"bye"
        for c in clients:
            c.close()

    run_bounded(main)


def test_the_end_of_the_run_winds_the_server_and_its_handlers_down() -> None:
    ran: list[str] = []

    def handler(conn: socket.socket, addr: Any) -> None:
        ran.append("handler started")
        try:
            conn.recv(1)
        finally:
            ran.append("handler finally")

    def main() -> list[socket.socket]:
        _task, server = start(handler)
        c = socket.create_connection(("127.0.0.1", server.port))
        wait_until(lambda: bool(ran))
        # A second connection whose task is spawned but will not have run when the run ends.
        late = socket.create_connection(("127.0.0.1", server.port))
        wait_until(lambda: server.connections == 2)
        return [c, late]  # main ends with the server and the handlers still there

    clients = run_bounded(main)
    # Every handler that started ran its finally (the second may or may not have started).
    assert ran.count("handler started") == ran.count("handler finally") >= 1
    for c in clients:
        c.settimeout(BOUND)
        assert c.recv(1) == b""  # the server closed both, the unstarted one's too
        c.close()


# -- many connections -----------------------------------------------------------------------------


@pytest.fixture
def many_files() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_thousand_concurrent_connections(many_files: None) -> None:
    n = 1000

    def main() -> None:
        all_in = stackful.Event()
        peak = [0]

        def handler(conn: socket.socket, addr: Any) -> None:
            line = conn.recv(64)
            peak[0] = max(peak[0], server.connections)
            if server.connections == n:
                all_in.set()
            all_in.wait()  # every connection is open at once
            conn.sendall(line.upper())

        def client(i: int) -> bytes:
            with socket.create_connection(("127.0.0.1", server.port)) as c:
                c.sendall(b"client %d" % i)
                return c.recv(64)

        task, server = start(handler, backlog=n)
        clients = [stackful.spawn(client, i, stack_size=CONNECTION_STACK_SIZE)
                   for i in range(n)]
        assert [t.join() for t in clients] == [b"CLIENT %d" % i for i in range(n)]
        assert peak[0] == n
        server.close()
        task.join()

    run_bounded(main, bound=120)


# -- TLS and addresses ----------------------------------------------------------------------------


def test_tls_server_handshakes_in_each_connection_task(certificate: Cert) -> None:
    reported: list[TaskExceptHookArgs] = []

    def handler(conn: socket.socket, addr: Any) -> None:
        assert isinstance(conn, ssl.SSLSocket)
        echo(conn, addr)

    def tls_client(port: int, message: bytes) -> bytes:
        raw = socket.create_connection(("127.0.0.1", port))
        with ssl.wrap_socket(raw, client_context(certificate),
                             server_hostname="localhost") as tls:
            tls.sendall(message)
            return tls.recv(100)

    def main() -> None:
        with stackful.timeout(BOUND):
            task, server = start(handler, ssl=server_context(certificate),
                                 ssl_handshake_timeout=0.2)
            silent = socket.create_connection(("127.0.0.1", server.port))  # no handshake
            results = [stackful.spawn(tls_client, server.port, b"tls %d" % i) for i in range(5)]
            assert [t.join() for t in results] == [b"tls %d" % i for i in range(5)]
            wait_until(lambda: bool(reported))  # the silent one timed out on its own
            assert silent.recv(10) == b""
            silent.close()
            server.close()
            task.join()

    Runtime(excepthook=reported.append).run(main)
    assert [type(r.exc_value) for r in reported] == [TimeoutError]


def test_tls_server_against_the_stdlib_client(certificate: Cert) -> None:
    def main() -> None:
        task, server = start(echo, ssl=server_context(certificate))
        port = server.port
        got: list[bytes] = []

        def std_client() -> None:
            ctx = std_ssl.create_default_context(cafile=str(certificate[0]))
            raw = std_socket.create_connection(("127.0.0.1", port), timeout=BOUND)
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"from a thread")
                got.append(tls.recv(100))

        t = threading.Thread(target=std_client)
        t.start()
        wait_until(lambda: not t.is_alive())
        t.join()
        assert got == [b"from a thread"]
        server.close()
        task.join()

    run_bounded(main)


@needs_ipv6
def test_host_none_listens_on_ipv6_and_ipv4() -> None:
    if not std_socket.has_dualstack_ipv6():
        pytest.skip("no dual-stack IPv6")

    def main() -> None:
        task, server = start(echo, host=None)
        assert roundtrip(server.port, b"v4", "127.0.0.1") == b"v4"
        assert roundtrip(server.port, b"v6", "::1") == b"v6"
        server.close()
        task.join()

    run_bounded(main)


@needs_ipv6
def test_an_ipv6_host() -> None:
    def main() -> None:
        task, server = start(echo, host="::1")
        assert server.address[0] == "::1"
        assert roundtrip(server.port, b"six", "::1") == b"six"
        server.close()
        task.join()

    run_bounded(main)


def test_bad_arguments_are_clear_errors() -> None:
    def main() -> None:
        with pytest.raises(TypeError, match="callable"):
            serve_tcp("not a handler", "127.0.0.1", 0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_connections"):
            serve_tcp(echo, "127.0.0.1", 0, max_connections=0)
        with pytest.raises(ValueError, match="grace"):
            serve_tcp(echo, "127.0.0.1", 0, grace=-1)

    run_bounded(main)


# -- a socket already listening ------------------------------------------------------------------


def std_listener() -> std_socket.socket:
    """A plain stdlib socket listening on loopback, as a parent process would hand one over."""
    listener = std_socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener


@pytest.mark.parametrize("kind", ["stdlib", "stdlib-non-blocking", "stackful-with-timeout"])
def test_serve_tcp_on_a_socket_already_listening(kind: str) -> None:
    """``sock=`` takes over a listening socket.  A stdlib one becomes a stackful socket on
    the same fd: its own accept would block the thread, and the clients below (tasks of the
    same thread) could never connect.  A timeout it had no longer applies: the quiet spell
    below would otherwise end the server with TimeoutError."""
    given: std_socket.socket = std_listener()
    if kind == "stdlib-non-blocking":
        given.setblocking(False)
    if kind == "stackful-with-timeout":
        given = socket.socket(fileno=given.detach())
        given.settimeout(0.01)
    port = given.getsockname()[1]

    def main() -> None:
        servers: list[Server] = []
        task = stackful.spawn(serve_tcp, echo, sock=given, ready=servers.append)
        stackful.sleep(0.05)  # past the timeout, with no connection
        assert [roundtrip(port, b"hello") for _ in range(3)] == [b"hello"] * 3
        (server,) = servers
        assert server.port == port and isinstance(server.listener, socket.socket)
        server.close()
        task.join()
        assert server.listener.fileno() == -1  # the server closed what it took over

    run_bounded(main)
    assert given.fileno() == -1  # detached (stdlib) or closed (stackful): not ours any more


def test_a_server_made_directly_on_a_stdlib_listener_serves_cooperatively() -> None:
    given = std_listener()
    server = Server(given, echo)
    assert given.fileno() == -1 and isinstance(server.listener, socket.socket)

    def main() -> None:
        task = stackful.spawn(server.serve)
        assert roundtrip(server.port, b"direct") == b"direct"
        server.close()
        task.join()

    run_bounded(main)


def test_serve_tcp_on_a_unix_socket_listening(tmp_path: Path) -> None:
    """A pre-fork parent may hand over a Unix stream socket as well."""
    path = str(tmp_path / "server.sock")
    given = std_socket.socket(std_socket.AF_UNIX)
    given.bind(path)
    given.listen(8)

    def main() -> None:
        servers: list[Server] = []
        task = stackful.spawn(serve_tcp, echo, sock=given, ready=servers.append)
        stackful.sleep(0)
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(path)
            c.sendall(b"over unix")
            assert c.recv(64) == b"over unix"
        (server,) = servers
        assert server.address == path
        with pytest.raises(ValueError, match="no port"):
            server.port  # noqa: B018
        server.close()
        task.join()

    run_bounded(main)


def test_a_socket_that_cannot_be_a_listener_is_a_clear_error_and_stays_the_callers() -> None:
    def main() -> None:
        unbound = std_socket.socket()
        bound = std_socket.socket()
        bound.bind(("127.0.0.1", 0))
        udp = std_socket.socket(std_socket.AF_INET, std_socket.SOCK_DGRAM)
        closed = std_listener()
        closed.close()
        with unbound, bound, udp:
            for sock, error in [(unbound, "not listening"), (bound, "not listening"),
                                (udp, "SOCK_STREAM"), (closed, "closed")]:
                with pytest.raises(ValueError, match=error):
                    serve_tcp(echo, sock=sock)
                with pytest.raises(ValueError, match=error):
                    Server(sock, echo)
                assert sock is closed or sock.fileno() >= 0  # left as it was
        with pytest.raises(TypeError, match="must be a socket"):
            Server(3, echo)  # type: ignore[arg-type]
        context = std_ssl.SSLContext(std_ssl.PROTOCOL_TLS_SERVER)
        with context.wrap_socket(std_listener(), server_side=True) as tls:
            with pytest.raises(TypeError, match="ssl="):
                serve_tcp(echo, sock=tls)
            assert tls.fileno() >= 0
        with std_listener() as listening:
            with pytest.raises(ValueError, match="not both"):
                serve_tcp(echo, "127.0.0.1", sock=listening)
            with pytest.raises(ValueError, match="not both"):
                serve_tcp(echo, port=0, sock=listening)
            assert listening.fileno() >= 0
        with pytest.raises(TypeError, match="needs a port"):
            serve_tcp(echo, "127.0.0.1")

    run_bounded(main)


# -- stopping a loaded server with a signal -------------------------------------------------------

GRACEFUL_SERVER = Path(__file__).parent / "_graceful_server.py"
SIGNAL_TRIALS = 50


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt install wrk)")
@pytest.mark.parametrize("connections", ["keep-alive", "close"])
def test_a_server_under_load_stopped_by_a_signal_runs_every_handlers_finally(
        connections: str) -> None:
    """50 trials, SIGINT and SIGTERM in turn, each landing at a random moment while wrk (in
    its own process) keeps 32 connections busy: every handler that entered its ``try``
    reaches its ``finally``, and run() raises the signal's exception.  With ``close`` each
    handler returns after one answer, so the signal often lands in a handler that ends
    before it would block again (it was lost there, and the server served on)."""
    rng = random.Random(8)
    served = 0
    args = ["--close"] if connections == "close" else []
    for trial in range(SIGNAL_TRIALS):
        signum = signal.SIGINT if trial % 2 == 0 else signal.SIGTERM
        server = subprocess.Popen([sys.executable, str(GRACEFUL_SERVER), *args],
                                  env=child_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        load = None
        try:
            assert server.stdout is not None
            # A server that never gets as far as printing its port fails the trial, not hangs.
            printed, _, _ = select.select([server.stdout], [], [], BOUND)
            assert printed, (trial, "the server did not print its port")
            port = int(server.stdout.readline())
            load = subprocess.Popen(["wrk", "-t1", "-c32", "-d30s",
                                     f"http://127.0.0.1:{port}/"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.05, 0.3))
            server.send_signal(signum)
            out, err = server.communicate(timeout=BOUND)
        finally:
            if load is not None:
                load.kill()
                load.wait()
            if server.poll() is None:
                server.kill()
                server.wait()
        assert server.returncode == 0, err
        counts = dict(part.split("=") for part in out.split()[:2])
        expected = "KeyboardInterrupt" if signum == signal.SIGINT else "SystemExit(143)"
        assert out.split()[2] == expected, (trial, out, err)
        assert counts["left"] == "0", (trial, out, err)  # every finally ran
        served += int(counts["served"])
    assert served > SIGNAL_TRIALS  # the load reached the handlers, trial after trial


# -- many idle connections ------------------------------------------------------------------------

IDLE_CONNECTIONS = 100_000
PER_PORT = 25_000  # one listening port's share: its ephemeral port range is ~28,000


def test_a_hundred_thousand_idle_connections() -> None:
    """100,000 connections open at once, each with its handler task parked in recv: every
    one is accepted, a sample answers, and closing the clients winds every handler down.
    The test raises its own fd limit; where the hard limit is lower and cannot be raised
    (no CAP_SYS_RESOURCE), it opens as many as that limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * IDLE_CONNECTIONS + 1000  # both ends are in this process
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
        count = IDLE_CONNECTIONS
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        count = min(IDLE_CONNECTIONS, (hard - 1000) // 2 // 1000 * 1000)
        if count < 1000:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low")
    clients: list[std_socket.socket] = []

    def main() -> None:
        servers: list[Server] = []
        tasks = []
        for _ in range(-(-count // PER_PORT)):
            task, server = start(echo, backlog=4096)
            tasks.append(task)
            servers.append(server)
        for index, server in enumerate(servers):
            share = min(PER_PORT, count - index * PER_PORT)
            for first in range(0, share, 2000):
                for _ in range(min(2000, share - first)):
                    c = std_socket.socket()
                    c.setblocking(False)
                    c.connect_ex(("127.0.0.1", server.port))
                    clients.append(c)
                wait_until(lambda: sum(s.connections for s in servers) == len(clients))
        assert sum(s.connections for s in servers) == count
        for c in clients[:: count // 50]:  # a sample, across every port
            c.send(b"ping")
            stackful.wait_readable(c)  # (a plain socket: recv would block the thread)
            assert c.recv(16) == b"ping"
        for c in clients:
            c.close()
        clients.clear()
        wait_until(lambda: sum(s.connections for s in servers) == 0)
        for server, task in zip(servers, tasks, strict=True):
            server.close()
            task.join()

    try:
        run_bounded(main, bound=600)
    finally:
        for c in clients:
            c.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_server_started_in_a_task_group_stops_with_it() -> None:
    # TaskGroup.start returns the Server once it listens; cancelling the group stops the
    # server, and the group's end waits for every handler's finally (grace 0: cancel at once).
    finished: list[str] = []

    def handler(conn: socket.socket, addr: Any) -> None:
        try:
            conn.sendall(b"hello")
            stackful.sleep(math.inf)
        finally:
            finished.append("handler")

    def main() -> None:
        with stackful.TaskGroup() as tg:
            server = tg.start(serve_tcp, handler, "127.0.0.1", 0, grace=0)
            assert isinstance(server, Server) and server.port > 0
            clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
            for c in clients:
                assert c.recv(5) == b"hello"
            wait_until(lambda: server.connections == 3)
            tg.cancel()
        assert finished == ["handler"] * 3 and server.closing and server.connections == 0
        for c in clients:
            c.close()

    run_bounded(main)
