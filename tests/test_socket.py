"""stackful.socket: the stdlib's socket API, parking the task inside a runtime and blocking
the thread outside one.  Real sockets on loopback; every wait is bounded."""

from __future__ import annotations

import array
import errno
import fcntl
import io
import os
import socket as std_socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import stackful
from stackful import socket
from stackful.lowlevel import current_runtime
from stackful.runtime_api import BusyResourceError, Cancelled, ClosedResourceError

from ._net import BOUND, WORLDS, in_world, needs_ipv6, run_bounded, thread


def is_nonblocking_fd(sock: std_socket.socket) -> bool:
    return bool(fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)


def pair() -> tuple[socket.socket, socket.socket]:
    """A connected TCP pair on 127.0.0.1, both cooperative."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=BOUND)
        conn, _ = listener.accept()
    client.settimeout(socket.getdefaulttimeout())
    return client, conn


def ticker(counter: list[int]) -> None:
    """A task that counts while others wait: proof that a wait parks the task, not the thread."""
    while True:
        counter[0] += 1
        stackful.sleep(0.001)


# -- the module stands in for the stdlib's --------------------------------------------------------


def test_module_has_the_stdlib_names_and_its_own_socket_type() -> None:
    for name in ("AF_INET", "AF_INET6", "AF_UNIX", "SOCK_STREAM", "SOCK_DGRAM", "SOL_SOCKET",
                 "SO_REUSEADDR", "timeout", "error", "gaierror", "herror", "has_ipv6",
                 "inet_aton", "gethostname", "SocketType", "send_fds", "recv_fds"):
        assert getattr(socket, name) is getattr(std_socket, name), name
    for name in ("socket", "socketpair", "fromfd", "create_connection", "create_server",
                 "getaddrinfo", "getnameinfo"):
        assert getattr(socket, name) is not getattr(std_socket, name), name
        assert name in socket.__all__
    assert socket.timeout is TimeoutError


def test_socket_is_a_stdlib_socket() -> None:
    with socket.socket() as s:
        assert isinstance(s, std_socket.socket)
        assert isinstance(s, std_socket.SocketType)
        assert s.family == std_socket.AF_INET and s.type == std_socket.SOCK_STREAM
        assert type(s.family) is std_socket.AddressFamily


def test_the_hot_methods_are_c_methods_with_the_stdlib_calling_conventions() -> None:
    """recv, recv_into, send and sendall are C methods of the class (no Python frame per
    call), taking what the stdlib's take, and refusing what it refuses."""
    from stackful._native import _install_socket_methods

    for name in ("recv", "recv_into", "send", "sendall"):
        assert type(vars(socket.socket)[name]).__name__ == "method_descriptor", name
        assert vars(socket.socket)[name].__doc__, name

    class Sub(socket.socket):
        pass

    def main() -> None:
        a, b = socket.socketpair()
        with a, b:
            assert a.send(b"abc") == 3
            assert b.recv(2) == b"ab"
            buf = bytearray(8)
            assert b.recv_into(buf, nbytes=1) == 1 and buf[:1] == b"c"  # keywords: fine
            a.sendall(memoryview(b"xyz")[1:])
            assert b.recv_into(buffer=buf) == 2 and buf[:2] == b"yz"
            with pytest.raises(TypeError, match="recv"):
                b.recv()  # type: ignore[call-arg]
            with pytest.raises(TypeError, match="sendall"):
                a.sendall(b"1", 0, 0)  # type: ignore[call-arg]
            with pytest.raises(ValueError, match="negative"):
                b.recv(-1)
            with pytest.raises(TypeError):
                a.send("text")  # type: ignore[arg-type]
            with std_socket.socket() as plain, pytest.raises(TypeError):
                socket.socket.recv(plain, 1)  # not one of ours
        x, y = socket.socketpair()
        with Sub(fileno=x.detach()) as s, y:  # a subclass goes through the same C methods
            y.sendall(b"sub")
            assert s.recv(10) == b"sub"
        half_made = Sub.__new__(Sub)  # no __init__: no fd, no timeout slot
        with pytest.raises((OSError, AttributeError)):
            half_made.recv(1)

    run_bounded(main)
    with pytest.raises(RuntimeError, match="already"):
        _install_socket_methods(socket.socket)


# -- timeouts: the stdlib's semantics, the fd always non-blocking ---------------------------------


def test_timeout_api_mirrors_the_stdlib() -> None:
    with socket.socket() as ours, std_socket.socket() as theirs:
        for s in (ours, theirs):
            assert s.gettimeout() is None and s.timeout is None and s.getblocking()
            s.settimeout(1.5)
            assert s.gettimeout() == 1.5 and s.timeout == 1.5 and s.getblocking()
            s.settimeout(2)
            assert s.gettimeout() == 2.0
            s.setblocking(False)
            assert s.gettimeout() == 0.0 and not s.getblocking()
            s.setblocking(True)
            assert s.gettimeout() is None
            with pytest.raises(ValueError):
                s.settimeout(-1)
            with pytest.raises(ValueError):
                s.settimeout(float("nan"))
            with pytest.raises(TypeError):
                s.settimeout("1")  # type: ignore[arg-type]
            for too_long in (float("inf"), 1e300, 10**20):
                with pytest.raises(OverflowError):
                    s.settimeout(too_long)
        assert is_nonblocking_fd(ours)


def test_default_timeout_and_sock_nonblock_flag() -> None:
    old = std_socket.getdefaulttimeout()
    std_socket.setdefaulttimeout(3.0)
    try:
        with socket.socket() as s:
            assert s.gettimeout() == 3.0
    finally:
        std_socket.setdefaulttimeout(old)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK) as s:
        assert s.gettimeout() == 0.0
        assert s.type == socket.SOCK_STREAM  # the flag is not part of the type, as in stdlib


def test_detach_gives_the_fd_back_in_the_stdlib_mode() -> None:
    s = socket.socket()
    fd = s.detach()
    with std_socket.socket(fileno=fd) as plain:
        assert not is_nonblocking_fd(plain)  # timeout None: a blocking fd
    s = socket.socket()
    s.settimeout(1.0)
    fd = s.detach()
    with std_socket.socket(fileno=fd) as plain:
        assert is_nonblocking_fd(plain)  # a timeout: non-blocking, as the stdlib leaves it


def test_from_stdlib_socket_dup_and_fromfd_keep_the_socket_usable() -> None:
    std = std_socket.socket()
    std.settimeout(4.0)
    ours = socket.from_stdlib_socket(std)
    assert std.fileno() == -1 and ours.gettimeout() == 4.0 and is_nonblocking_fd(ours)
    twin = ours.dup()
    assert type(twin) is socket.socket and twin.gettimeout() == 4.0
    other = socket.fromfd(ours.fileno(), socket.AF_INET, socket.SOCK_STREAM)
    assert type(other) is socket.socket and other.fileno() != ours.fileno()
    for s in (ours, twin, other):
        s.close()


# -- the basic calls, in both worlds --------------------------------------------------------------


@WORLDS
def test_tcp_echo(world: str) -> None:
    def main() -> None:
        client, conn = pair()
        with client, conn:
            client.sendall(b"ping")
            assert conn.recv(100) == b"ping"
            conn.send(b"pong")
            buf = bytearray(10)
            assert client.recv_into(buf) == 4 and bytes(buf[:4]) == b"pong"
            conn.sendall(memoryview(b"abcdef")[2:])
            assert client.recv(100, socket.MSG_PEEK) == b"cdef"
            assert client.recv(100) == b"cdef"
            conn.shutdown(socket.SHUT_WR)
            assert client.recv(100) == b""

    in_world(world, main)


def test_recv_parks_the_task_not_the_thread() -> None:
    def main() -> None:
        counter = [0]
        tick = stackful.spawn(ticker, counter)
        client, conn = pair()
        with client, conn:
            def late_send() -> None:
                stackful.sleep(0.05)
                conn.sendall(b"late")

            stackful.spawn(late_send)
            before = counter[0]
            assert client.recv(10) == b"late"
            assert counter[0] > before  # the ticker ran while recv waited
        tick.cancel()

    run_bounded(main)


def test_a_read_after_a_short_read_waits_first_and_misses_nothing() -> None:
    """A short read of a stream socket empties it; the next read may wait for the poller's
    edge instead of trying first.  Data that came in between -- from another task, from
    another thread, or before a read with MSG_PEEK -- is still found at once."""
    def main() -> None:
        client, conn = pair()
        with client, conn:
            for round_no in range(200):  # request-reply: each recv after a short one
                conn.sendall(b"q%d" % round_no)
                assert client.recv(100) == b"q%d" % round_no
                client.sendall(b"a")
                assert conn.recv(100) == b"a"
            # Data sent while the reader is not waiting, before its next recv.
            conn.sendall(b"early")
            stackful.yield_now()
            assert client.recv(100) == b"early"
            conn.sendall(b"x")
            assert client.recv(100) == b"x"  # short: marked empty
            done = threading.Event()

            def from_a_thread() -> None:
                conn.sendall(b"threaded")  # cooperative sockets block the thread outside a run
                done.set()

            with thread(from_a_thread):
                assert client.recv(100) == b"threaded"
            conn.sendall(b"peek")
            assert client.recv(100, socket.MSG_PEEK) == b"peek"  # short, but data stays
            assert client.recv(100) == b"peek"
            conn.sendall(b"into")
            buf = bytearray(100)
            assert client.recv_into(buf) == 4  # short
            conn.sendall(b"more")
            assert client.recv_into(buf, 2) == 2 and bytes(buf[:2]) == b"mo"
            assert client.recv(100) == b"re"

    run_bounded(main)


def test_the_end_of_the_stream_after_a_short_read_is_seen_at_once() -> None:
    """Data and the peer's FIN seen by the poller while nobody waited: the read of the data
    is short, and the next read returns b"" at once (no edge is coming to wake a wait)."""
    def main() -> None:
        client, conn = pair()
        with client, conn:
            def later() -> None:
                stackful.sleep(0.01)
                conn.sendall(b"first")

            stackful.spawn(later)
            assert client.recv(100) == b"first"  # waited: the poller now follows the fd
            conn.sendall(b"last")
            conn.shutdown(socket.SHUT_WR)
            stackful.sleep(0.01)  # the hub polls: data and hang-up, nobody waiting
            assert client.recv(100) == b"last"
            assert client.recv(100) == b""

    run_bounded(main)


def test_datagrams_left_after_a_short_read_are_read_without_waiting() -> None:
    """A short read of a datagram socket says nothing about what else is queued: two
    datagrams sent before the first read are both read (none waits for a new edge)."""
    def main() -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with a, b:
            def later() -> None:
                stackful.sleep(0.01)
                b.send(b"zero")

            stackful.spawn(later)
            assert a.recv(100) == b"zero"  # waited: the poller now follows a's fd
            b.send(b"one")
            b.send(b"two")
            assert a.recv(100) == b"one"
            assert a.recv(100) == b"two"

    run_bounded(main)


# -- the read plan: waiting before a read that would most likely find nothing ---------------------


needs_epoll = pytest.mark.skipif(os.environ.get("STACKFUL_POLLER") == "selectors",
                                 reason="the read plan is the epoll poller's")


def read_state(sock: socket.socket) -> tuple[int, int, int, int] | None:
    """The read plan of ``sock``: (tcp, drained, irregular, misses); see poller_epoll.c."""
    return current_runtime().io._read_state(sock.fileno())  # type: ignore[no-any-return]


def ping_pong(client: socket.socket, conn: socket.socket) -> None:
    """Request-reply rounds in which every read of ``conn`` after a short one finds nothing
    (the next request comes only after the reply)."""
    def replier() -> None:
        for _ in range(24):
            assert conn.recv(100) == b"q"
            conn.sendall(b"a")

    helper = stackful.spawn(replier)
    for _ in range(24):
        client.sendall(b"q")
        assert client.recv(100) == b"a"
    helper.join()


def train_to_wait_first(client: socket.socket, conn: socket.socket) -> None:
    """After ping_pong on a TCP pair, the plan waits before ``conn``'s reads after short ones."""
    ping_pong(client, conn)
    state = read_state(conn)
    assert state is not None and state[0] == 1 and state[3] >= 12, state  # TCP, waits first


@needs_epoll
def test_reads_that_keep_finding_nothing_wait_first_and_miss_nothing() -> None:
    """Once the reads after a short one keep failing, the plan waits first; the first read
    then costs no failed system call, and data that came in between is still read at once."""
    def main() -> None:
        client, conn = pair()
        with client, conn:
            train_to_wait_first(client, conn)
            client.sendall(b"while nobody reads")
            stackful.yield_now()  # no poll yet: the edge is still in epoll
            assert conn.recv(100) == b"while nobody reads"
            client.sendall(b"x")
            stackful.sleep(0.01)  # the hub polls: the edge is remembered, nobody waiting
            assert conn.recv(100) == b"x"
            for size in (1, 2):  # reads that are not short: the next one tries
                client.sendall(b"yz")
                assert conn.recv(size) == b"yz"[:size]
                if size == 1:
                    assert conn.recv(100) == b"z"

    run_bounded(main)


@needs_epoll
def test_reads_that_find_data_again_bring_the_plan_back_to_trying_first() -> None:
    """The plan still tries one read in eight while it waits first; when those find data
    (the peer answers before the next read), the score falls and reads try first again."""
    def main() -> None:
        client, conn = pair()
        with client, conn:
            train_to_wait_first(client, conn)
            for round_no in range(40):  # the data is there before each read: every probe hits
                client.sendall(b"%d;" % round_no)
                assert conn.recv(100) == b"%d;" % round_no
            state = read_state(conn)
            assert state is not None and state[3] == 0, state

    run_bounded(main)


@needs_epoll
def test_waiting_first_still_sees_the_end_of_the_stream_that_came_with_the_data() -> None:
    """Data and the peer's FIN in one edge that woke the reader: its read of the data is short,
    yet the next read must not wait for an edge that will never come."""
    def main() -> None:
        client, conn = pair()
        with client, conn:
            train_to_wait_first(client, conn)

            def last_words() -> None:
                client.sendall(b"last")
                client.shutdown(socket.SHUT_WR)  # no yield in between: one edge for both

            stackful.spawn(last_words)
            with stackful.timeout(5):
                assert conn.recv(100) == b"last"  # parked first, woken by that edge
                assert conn.recv(100) == b""

    run_bounded(main)


@needs_epoll
def test_waiting_first_still_reads_the_data_past_an_urgent_byte() -> None:
    """A TCP read stops at urgent data's mark, short with more queued: the poller's urgent
    event makes the plan try first from then on."""
    def main() -> None:
        client, conn = pair()
        with client, conn:
            train_to_wait_first(client, conn)

            def burst() -> None:
                client.sendall(b"12")
                client.send(b"U", socket.MSG_OOB)
                client.sendall(b"34")

            stackful.spawn(burst)
            with stackful.timeout(5):
                got = conn.recv(100)
                while not got.endswith(b"34"):
                    got += conn.recv(100)
            assert got == b"1234"  # the urgent byte stays out of band

    run_bounded(main)


@needs_epoll
def test_a_read_with_a_timeout_between_plain_reads_leaves_no_stale_plan() -> None:
    """A read with a timeout waits its own way and may leave data queued; the plain read after
    it must try first, not wait for the edge the timed wait used up."""
    def main() -> None:
        client, conn = pair()
        with client, conn:
            train_to_wait_first(client, conn)

            def later() -> None:
                stackful.sleep(0.01)
                client.sendall(b"x" * 200)

            stackful.spawn(later)
            conn.settimeout(5)
            assert conn.recv(100) == b"x" * 100  # waited, then read half
            conn.settimeout(None)
            with stackful.timeout(5):
                assert conn.recv(100) == b"x" * 100

    run_bounded(main)


@needs_epoll
def test_the_plan_never_waits_first_on_sockets_other_than_tcp() -> None:
    """A short read of a Unix stream socket can leave data queued (the kernel does not join
    data sent with file descriptors to what follows): such sockets always try first."""
    def main() -> None:
        a, b = socket.socketpair()
        with a, b:
            ping_pong(a, b)
            assert read_state(b) == (2, 0, 0, 0)  # not TCP: no score is kept
            r, w = os.pipe()
            try:
                socket.send_fds(a, [b"with fd"], [r])
                a.sendall(b" and after")
                got = b.recv(100)  # stops after the data that carried the fd
                with stackful.timeout(5):
                    while got != b"with fd and after":
                        got += b.recv(100)
            finally:
                os.close(r)
                os.close(w)
            # (the fd the kernel passed in SCM_RIGHTS was dropped with the ancillary data)

    run_bounded(main)


def test_outside_a_runtime_recv_blocks_the_thread_until_data_arrives() -> None:
    client, conn = pair()
    assert client.gettimeout() is None  # the path without a deadline
    received = threading.Event()

    def late_send() -> None:
        time.sleep(0.05)
        conn.sendall(b"late")
        if not received.wait(BOUND):  # a safety net: end a stuck recv (b"") rather than hang
            conn.shutdown(socket.SHUT_WR)

    with client, conn, thread(late_send):
        assert client.recv(10) == b"late"
        received.set()


@WORLDS
def test_recv_timeout_raises_timeout_error(world: str) -> None:
    def main() -> None:
        client, conn = pair()
        with client, conn:
            client.settimeout(0.05)
            with pytest.raises(socket.timeout):
                client.recv(10)
            with pytest.raises(TimeoutError):
                client.recv_into(bytearray(4))
            conn.sendall(b"x")  # still usable after a timeout
            assert client.recv(10) == b"x"

    in_world(world, main)


@WORLDS
def test_nonblocking_mode_raises_blocking_io_error(world: str) -> None:
    def main() -> None:
        client, conn = pair()
        with client, conn:
            client.setblocking(False)
            with pytest.raises(BlockingIOError):
                client.recv(10)
            with socket.create_server(("127.0.0.1", 0)) as listener:
                listener.setblocking(False)
                with pytest.raises(BlockingIOError):
                    listener.accept()
                s = socket.socket()
                s.setblocking(False)
                with pytest.raises(BlockingIOError) as info:
                    s.connect(listener.getsockname())
                assert info.value.errno == errno.EINPROGRESS
                s.close()

    in_world(world, main)


@WORLDS
def test_connect_refused(world: str) -> None:
    def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            address = listener.getsockname()
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.connect(address)
        with socket.socket() as s:
            assert s.connect_ex(address) == errno.ECONNREFUSED
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=BOUND)

    in_world(world, main)


def stuck_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listener whose accept queue is full: a further connect() gets no answer."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(listener.getsockname())
        fillers.append(s)
    return listener, fillers


@WORLDS
def test_connect_timeout(world: str) -> None:
    def main() -> None:
        listener, fillers = stuck_listener()
        try:
            with socket.socket() as s:
                s.settimeout(0.1)
                with pytest.raises(TimeoutError):
                    s.connect(listener.getsockname())
            with socket.socket() as s:
                s.settimeout(0.1)
                assert s.connect_ex(listener.getsockname()) == errno.EAGAIN
        finally:
            for s in [listener, *fillers]:
                s.close()

    in_world(world, main)


def test_create_connection_tries_each_address(monkeypatch: pytest.MonkeyPatch) -> None:
    def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            with socket.create_server(("127.0.0.1", 0)) as gone:
                dead_port = gone.getsockname()[1]
            dead = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", dead_port))
            live = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))
            monkeypatch.setattr("stackful._sockets.getaddrinfo",
                                lambda *a: [dead, live])
            with socket.create_connection(("example.invalid", port), timeout=BOUND) as c:
                assert c.getpeername() == ("127.0.0.1", port)
            monkeypatch.setattr("stackful._sockets.getaddrinfo", lambda *a: [dead, dead])
            with pytest.raises(ExceptionGroup) as group:
                socket.create_connection(("example.invalid", 1), all_errors=True)
            assert len(group.value.exceptions) == 2
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("example.invalid", 1))

    run_bounded(main)


def test_create_server_reuse_port_and_the_resolver_functions() -> None:
    with socket.create_server(("127.0.0.1", 0), reuse_port=True) as first:
        port = first.getsockname()[1]
        with socket.create_server(("127.0.0.1", port), reuse_port=True) as second:
            assert type(second) is socket.socket and second.getsockname()[1] == port
    assert socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM) == \
        std_socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
    flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    assert socket.getnameinfo(("127.0.0.1", 80), flags) == ("127.0.0.1", "80")


def test_a_name_is_resolved_on_a_worker_thread_while_other_tasks_run(monkeypatch: Any) -> None:
    # The "name server" answers only after another task has run: a lookup that blocked the
    # runtime's thread would never return (the event's wait is bounded: it would fail).
    answered = threading.Event()
    lookups: list[tuple[Any, int]] = []
    real = std_socket.getaddrinfo

    def slow_resolver(host: Any, *args: Any) -> Any:
        lookups.append((host, threading.get_ident()))
        assert answered.wait(BOUND), "the other task never ran"
        return real("127.0.0.1", *args)

    monkeypatch.setattr("stackful._sockets._blocking_getaddrinfo", slow_resolver)

    def main() -> int:
        with socket.create_server(("127.0.0.1", 0)) as server:
            port = server.getsockname()[1]
            stackful.spawn(answered.set)
            with socket.create_connection(("a-name.test", port)) as conn:
                return conn.getpeername()[1]

    assert run_bounded(main) > 0
    assert [host for host, _ in lookups] == ["a-name.test"]
    assert lookups[0][1] != threading.get_ident()
    # An IP literal resolves at once, on the task's own thread (asking nobody).
    lookups.clear()
    answered.set()
    run_bounded(lambda: socket.getaddrinfo("::1", 80))
    assert lookups == [("::1", threading.get_ident())]


def test_connect_and_sendto_resolve_a_host_name_on_a_worker_thread(monkeypatch: Any) -> None:
    lookups: list[tuple[Any, int]] = []
    real = std_socket.getaddrinfo

    def resolver(host: Any, port: Any, *args: Any) -> Any:
        lookups.append((host, threading.get_ident()))
        return real("127.0.0.1", port, *args)

    monkeypatch.setattr("stackful._sockets._blocking_getaddrinfo", resolver)

    def main() -> bytes:
        with socket.create_server(("127.0.0.1", 0)) as server, \
                socket.socket() as client, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            client.connect(("tcp-peer.test", server.getsockname()[1]))
            rx.bind(("127.0.0.1", 0))
            tx.sendto(b"datagram", ("udp-peer.test", rx.getsockname()[1]))
            data, _ = rx.recvfrom(100)
            return data

    assert run_bounded(main) == b"datagram"
    assert [host for host, _ in lookups] == ["tcp-peer.test", "udp-peer.test"]
    assert all(ident != threading.get_ident() for _, ident in lookups)


def test_getnameinfo_in_a_task_runs_on_a_worker_thread(monkeypatch: Any) -> None:
    threads: list[int] = []

    def resolver(sockaddr: Any, flags: int) -> tuple[str, str]:
        threads.append(threading.get_ident())
        return ("host.test", "80")

    monkeypatch.setattr("stackful._sockets._blocking_getnameinfo", resolver)
    assert run_bounded(lambda: socket.getnameinfo(("127.0.0.1", 80), 0)) == ("host.test", "80")
    assert threads and threads[0] != threading.get_ident()


# -- accept ---------------------------------------------------------------------------------------


@WORLDS
def test_accept_returns_a_cooperative_socket_with_the_default_timeout(world: str) -> None:
    def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(BOUND)
            with socket.create_connection(listener.getsockname(), timeout=BOUND):
                conn, addr = listener.accept()
            with conn:
                assert type(conn) is socket.socket
                assert conn.gettimeout() == socket.getdefaulttimeout()
                assert is_nonblocking_fd(conn)
                assert addr[0] == "127.0.0.1"
            listener.settimeout(0.05)
            with pytest.raises(TimeoutError):
                listener.accept()

    in_world(world, main)


def test_accept_waits_for_a_connection_from_another_task() -> None:
    def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            def connect_later() -> socket.socket:
                stackful.sleep(0.02)
                return socket.create_connection(listener.getsockname())

            t = stackful.spawn(connect_later)
            conn, _ = listener.accept()
            client = t.join()
            with conn, client:
                client.sendall(b"hi")
                assert conn.recv(2) == b"hi"

    run_bounded(main)


# -- closing, cancelling and sharing --------------------------------------------------------------


@pytest.mark.parametrize("call", ["recv", "accept", "sendall", "recvfrom"])
def test_close_wakes_a_task_waiting_on_the_socket(call: str) -> None:
    def main() -> None:
        client, conn = pair()
        listener = socket.create_server(("127.0.0.1", 0))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        target, action = {
            "recv": (client, lambda: client.recv(10)),
            "accept": (listener, listener.accept),
            "sendall": (client, lambda: client.sendall(b"x" * (64 << 20))),
            "recvfrom": (udp, lambda: udp.recvfrom(10)),
        }[call]
        waiter = stackful.spawn(action)
        stackful.sleep(0.05)
        assert waiter.state == "blocked"
        fd = target.fileno()
        target.close()
        with pytest.raises(ClosedResourceError, match=f"fd {fd}"):
            waiter.join()
        # The number is free for the next socket, with no stale registration.
        a, b = socket.socketpair()
        with a, b:
            b.sendall(b"ok")
            assert a.recv(2) == b"ok"
        for s in (client, conn, listener, udp):
            s.close()

    run_bounded(main)


@pytest.mark.parametrize("call", ["connect", "accept", "recv", "sendall"])
def test_cancel_during_a_wait(call: str) -> None:
    def main() -> None:
        client, conn = pair()
        listener, fillers = stuck_listener()
        plain_listener = socket.create_server(("127.0.0.1", 0))
        fresh = socket.socket()
        action = {
            "connect": lambda: fresh.connect(listener.getsockname()),
            "accept": plain_listener.accept,
            "recv": lambda: client.recv(10),
            "sendall": lambda: client.sendall(b"x" * (64 << 20)),
        }[call]
        waiter = stackful.spawn(action)
        stackful.sleep(0.05)
        assert waiter.state == "blocked"
        waiter.cancel()
        with pytest.raises(Cancelled):
            waiter.join()
        # Nothing is left registered: another task can wait on the same socket at once.
        if call == "recv":
            conn.sendall(b"after")
            assert stackful.spawn(client.recv, 10).join() == b"after"
        for s in (client, conn, listener, plain_listener, fresh, *fillers):
            s.close()

    run_bounded(main)


def test_two_tasks_reading_one_socket_is_a_busy_resource_error() -> None:
    def main() -> None:
        client, conn = pair()
        with client, conn:
            first = stackful.spawn(client.recv, 10)
            stackful.sleep(0.01)
            with pytest.raises(BusyResourceError):
                client.recv(10)
            conn.sendall(b"one")
            assert first.join() == b"one"

    run_bounded(main)


def test_a_timeout_scope_around_recv_raises_and_leaves_the_socket_usable() -> None:
    def main() -> None:
        client, conn = pair()
        with client, conn:
            with pytest.raises(TimeoutError), stackful.timeout(0.05):
                client.recv(10)
            conn.sendall(b"z")
            assert client.recv(10) == b"z"

    run_bounded(main)


# -- sending: partial sends, a full buffer --------------------------------------------------------


def small_buffers(*socks: socket.socket) -> None:
    """Send buffers small enough that big sends go in many parts.  (Receive buffers stay as
    they are: one smaller than loopback's 64 KiB segment stalls TCP on zero-window probes.)"""
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)


@WORLDS
def test_sendall_through_a_full_buffer_sends_everything(world: str) -> None:
    payload = os.urandom(4 << 20)

    def main() -> None:
        client, conn = pair()
        small_buffers(client, conn)
        received = bytearray()

        def reader() -> None:
            while len(received) < len(payload):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received.extend(chunk)

        with client, conn:
            if world == "runtime":
                counter = [0]
                tick = stackful.spawn(ticker, counter)
                t = stackful.spawn(reader)
                client.sendall(payload)
                t.join()
                tick.cancel()
                assert counter[0] > 0
            else:
                conn.settimeout(BOUND)
                client.settimeout(BOUND)
                with thread(reader):
                    client.sendall(payload)
        assert received == payload

    in_world(world, main)


def fill(sock: socket.socket) -> int:
    """Send on ``sock`` (nobody reads the other end) until sends would block."""
    sock.setblocking(False)
    sent = 0
    try:
        while True:
            sent += sock.send(b"x" * 65536)
    except BlockingIOError:
        return sent


@WORLDS
def test_send_on_a_full_buffer_waits_times_out_or_raises(world: str) -> None:
    def main() -> None:
        # A Unix stream pair: once its buffer is full it stays full (TCP on loopback may
        # still move data into a receive buffer that grows).
        client, conn = socket.socketpair()
        with client, conn:
            assert fill(client) > 0
            with pytest.raises(BlockingIOError):
                client.send(b"x" * 65536)
            client.settimeout(0.05)
            with pytest.raises(TimeoutError):
                client.send(b"x" * 65536)
            with pytest.raises(TimeoutError):
                client.sendall(b"x" * 65536)

    in_world(world, main)


# -- peer reset -----------------------------------------------------------------------------------


@WORLDS
def test_peer_reset_raises_connection_reset(world: str) -> None:
    def main() -> None:
        client, conn = pair()
        conn.settimeout(BOUND)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST, not FIN
        with conn, pytest.raises(ConnectionResetError):
            conn.recv(10)

    in_world(world, main)


def test_peer_reset_wakes_a_waiting_reader() -> None:
    def main() -> None:
        client, conn = pair()
        waiter = stackful.spawn(conn.recv, 10)
        stackful.sleep(0.02)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        with conn, pytest.raises(ConnectionResetError):
            waiter.join()

    run_bounded(main)


# -- IPv6, Unix sockets, UDP ----------------------------------------------------------------------


@needs_ipv6
@WORLDS
def test_ipv6_echo(world: str) -> None:
    def main() -> None:
        with socket.create_server(("::1", 0), family=socket.AF_INET6) as listener:
            listener.settimeout(BOUND)
            with socket.create_connection(("::1", listener.getsockname()[1]),
                                          timeout=BOUND) as c:
                conn, addr = listener.accept()
                with conn:
                    assert addr[0] == "::1" and conn.family == socket.AF_INET6
                    c.sendall(b"six")
                    assert conn.recv(3) == b"six"

    in_world(world, main)


@needs_ipv6
def test_dual_stack_server_accepts_ipv4_and_ipv6() -> None:
    if not socket.has_dualstack_ipv6():
        pytest.skip("no dual-stack IPv6")

    def main() -> None:
        with socket.create_server(("", 0), family=socket.AF_INET6,
                                  dualstack_ipv6=True) as listener:
            port = listener.getsockname()[1]
            for host in ("127.0.0.1", "::1"):
                with socket.create_connection((host, port), timeout=BOUND):
                    conn, addr = listener.accept()
                    conn.close()
                    assert host in addr[0]

    run_bounded(main)


@WORLDS
def test_unix_stream_socket(world: str, tmp_path: Path) -> None:
    path = str(tmp_path / "sock")

    def main() -> None:
        with socket.create_server(path, family=socket.AF_UNIX) as listener:
            listener.settimeout(BOUND)
            with socket.socket(socket.AF_UNIX) as c:
                c.settimeout(BOUND)
                c.connect(path)
                conn, _ = listener.accept()
                with conn:
                    c.sendall(b"unix")
                    assert conn.recv(4) == b"unix"

    in_world(world, main)


@WORLDS
def test_socketpair_and_unix_datagrams(world: str) -> None:
    def main() -> None:
        a, b = socket.socketpair()
        with a, b:
            assert type(a) is socket.socket and a.family == socket.AF_UNIX
            a.sendall(b"pair")
            assert b.recv(4) == b"pair"
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with a, b:
            a.send(b"one")
            a.send(b"two")
            assert b.recv(10) == b"one" and b.recv(10) == b"two"

    in_world(world, main)


@WORLDS
def test_udp_sendto_recvfrom(world: str) -> None:
    def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            rx.bind(("127.0.0.1", 0))
            rx.settimeout(BOUND)
            tx.bind(("127.0.0.1", 0))
            tx.sendto(b"datagram", rx.getsockname())
            data, sender = rx.recvfrom(100)
            assert data == b"datagram" and sender == tx.getsockname()
            tx.sendto(b"flags", 0, rx.getsockname())
            buf = bytearray(10)
            n, sender = rx.recvfrom_into(buf)
            assert bytes(buf[:n]) == b"flags"
            rx.settimeout(0.05)
            with pytest.raises(TimeoutError):
                rx.recvfrom(100)

    in_world(world, main)


def test_udp_recvfrom_waits_for_a_datagram_from_another_task() -> None:
    def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            rx.bind(("127.0.0.1", 0))

            def send_later() -> None:
                stackful.sleep(0.02)
                tx.sendto(b"later", rx.getsockname())

            stackful.spawn(send_later)
            assert rx.recvfrom(10)[0] == b"later"

    run_bounded(main)


@WORLDS
def test_sendmsg_recvmsg_pass_file_descriptors(world: str) -> None:
    def main() -> None:
        a, b = socket.socketpair()
        r, w = os.pipe()
        try:
            with a, b:
                b.settimeout(BOUND)
                socket.send_fds(a, [b"fds"], [w])
                msg, fds, _flags, _addr = socket.recv_fds(b, 10, 1)
                assert msg == b"fds" and len(fds) == 1
                os.write(fds[0], b"!")
                assert os.read(r, 1) == b"!"
                os.close(fds[0])
                a.sendmsg([b"a", b"b"])
                buf = bytearray(2)
                nbytes, _anc, _flags, _addr = b.recvmsg_into([buf])
                assert nbytes == 2 and buf == b"ab"
                fds_size = array.array("i").itemsize
                a.sendmsg([b"x"])
                data, anc, _flags, _addr = b.recvmsg(1, socket.CMSG_LEN(fds_size))
                assert data == b"x" and anc == []
        finally:
            os.close(r)
            os.close(w)

    in_world(world, main)


# -- makefile and sendfile ------------------------------------------------------------------------


@WORLDS
def test_makefile_readline_text_and_binary(world: str) -> None:
    def main() -> None:
        client, conn = pair()
        conn.settimeout(BOUND)
        client.settimeout(BOUND)
        with client, conn:
            rfile = conn.makefile("rb")
            wfile = client.makefile("w", encoding="utf-8", newline="\n")
            wfile.write("first line\nsecond, ünïcode\n")
            wfile.flush()
            assert rfile.readline() == b"first line\n"
            assert rfile.readline() == "second, ünïcode\n".encode()
            text_in = client.makefile("r", encoding="utf-8")
            conn.sendall(b"a\nb\n")
            conn.shutdown(socket.SHUT_WR)
            assert list(text_in) == ["a\n", "b\n"]
            for f in (rfile, wfile, text_in):
                f.close()

    in_world(world, main)


def test_makefile_readline_waits_in_a_task() -> None:
    def main() -> None:
        client, conn = pair()
        with client, conn:
            def slow_lines() -> None:
                for part in (b"hel", b"lo\nwor", b"ld\n"):
                    stackful.sleep(0.01)
                    conn.sendall(part)

            stackful.spawn(slow_lines)
            with client.makefile("r", encoding="ascii") as f:
                assert f.readline() == "hello\n" and f.readline() == "world\n"

    run_bounded(main)


@WORLDS
def test_sendfile_regular_file_and_file_object(world: str, tmp_path: Path) -> None:
    content = os.urandom(1 << 20)
    path = tmp_path / "data"
    path.write_bytes(content)

    def main() -> None:
        client, conn = pair()
        small_buffers(client, conn)
        conn.settimeout(BOUND)
        received = bytearray()

        def reader(n: int) -> None:
            while len(received) < n:
                chunk = conn.recv(65536)
                assert chunk
                received.extend(chunk)

        with client, conn, path.open("rb") as f:
            if world == "runtime":
                t = stackful.spawn(reader, len(content) - 100)
                assert client.sendfile(f, offset=100) == len(content) - 100
                t.join()
            else:
                client.settimeout(BOUND)
                with thread(lambda: reader(len(content) - 100)):
                    assert client.sendfile(f, offset=100) == len(content) - 100
            assert f.tell() == len(content)
            assert received == content[100:]
            received.clear()
            client.sendfile(io.BytesIO(b"from a buffer"), count=6)  # no fileno: read/send
            if world == "runtime":
                stackful.spawn(reader, 6).join()
            else:
                reader(6)
            assert received == b"from a"

    in_world(world, main)


# -- the same sockets in one runtime after another ------------------------------------------------


def test_a_socket_outlives_a_runtime_and_works_outside_and_in_the_next() -> None:
    client, conn = pair()
    conn.settimeout(BOUND)
    with client, conn:
        run_bounded(lambda: client.sendall(b"one"))
        assert conn.recv(3) == b"one"
        client.sendall(b"two")
        assert run_bounded(lambda: conn.recv(3)) == b"two"


def test_many_tasks_echo_concurrently() -> None:
    def main() -> None:
        with socket.create_server(("127.0.0.1", 0), backlog=128) as listener:
            def server() -> None:
                while True:
                    conn, _ = listener.accept()
                    stackful.spawn(echo, conn)

            def echo(conn: socket.socket) -> None:
                with conn:
                    while data := conn.recv(1024):
                        conn.sendall(data)

            def client(i: int) -> bytes:
                with socket.create_connection(listener.getsockname()) as c:
                    msg = f"hello {i}".encode()
                    for _ in range(3):
                        c.sendall(msg)
                        got = b""
                        while len(got) < len(msg):
                            got += c.recv(1024)
                        assert got == msg
                    return msg

            srv = stackful.spawn(server)
            clients = [stackful.spawn(client, i) for i in range(100)]
            assert [t.join() for t in clients] == [f"hello {i}".encode() for i in range(100)]
            srv.cancel()

    run_bounded(main)


def test_waiting_outside_a_task_is_a_clear_error() -> None:
    client, conn = pair()

    def callback(_: Any) -> None:
        try:
            client.recv(10)
        except RuntimeError as exc:
            seen.append(str(exc))

    seen: list[str] = []

    def main() -> None:
        stackful.lowlevel.call_later(0, callback)
        stackful.sleep(0.01)

    with client, conn:
        run_bounded(main)
    assert seen and "task" in seen[0]


def test_waiting_in_a_timer_fired_at_the_end_of_a_batch_is_a_clear_error() -> None:
    # Tasks that keep yielding never let the hub run: their timers fire where a batch ends,
    # in a task's switch.  The callback must still see no task, not park that one.
    client, conn = pair()
    seen: list[str] = []

    def callback(_: Any) -> None:
        try:
            client.recv(10)
        except RuntimeError as exc:
            seen.append(str(exc))

    deadline = time.monotonic() + BOUND

    def spinner() -> None:
        while not seen:
            # Real time: run_bounded's timer would fire just where the callback's does, so
            # it cannot bound this loop if timers stop firing between yields.
            assert time.monotonic() < deadline, "the timer callback never ran"
            stackful.yield_now()

    def main() -> None:
        other = stackful.spawn(spinner)
        stackful.lowlevel.call_later(0, callback)
        spinner()
        other.join()

    with client, conn:
        run_bounded(main)
    assert seen and "task" in seen[0]


def test_thread_safety_is_not_claimed_but_threads_each_block_on_their_own() -> None:
    # A socket used from another thread (no runtime there) blocks that thread only.
    client, conn = pair()
    with client, conn:
        got: list[bytes] = []
        client.settimeout(BOUND)
        t = threading.Thread(target=lambda: got.append(client.recv(5)))
        t.start()

        def main() -> None:
            stackful.sleep(0.02)
            conn.sendall(b"hello")

        run_bounded(main)
        t.join(BOUND)
        assert got == [b"hello"]
