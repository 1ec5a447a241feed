"""stackful.ssl: TLS on cooperative sockets, against the stdlib's own blocking TLS peer in a
thread (client and server side), inside and outside a runtime; every wait bounded."""

from __future__ import annotations

import os
import socket as std_socket
import ssl as std_ssl
from pathlib import Path
from typing import Any

import pytest

import stackful
from stackful import socket, ssl
from stackful.runtime_api import Cancelled, ClosedResourceError

from ._net import BOUND, WORLDS, in_world, run_bounded, thread
from ._tls import certificate_fixture, client_context, server_context  # noqa: F401

Cert = tuple[Path, Path]


def ticker(counter: list[int]) -> None:
    while True:
        counter[0] += 1
        stackful.sleep(0.001)


def std_listener() -> std_socket.socket:
    s = std_socket.create_server(("127.0.0.1", 0))
    s.settimeout(BOUND)
    return s


def tls_pair(certificate: Cert,
             client_ctx: std_ssl.SSLContext | None = None) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
    """Both ends cooperative, in the running runtime: (client, server)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        plain = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
    for s in (plain, conn):  # small records go at once (no Nagle wait for an ACK)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server_side = stackful.spawn(ssl.wrap_socket, conn, server_context(certificate),
                                 server_side=True)
    client = ssl.wrap_socket(plain, client_ctx or client_context(certificate),
                             server_hostname="localhost")
    return client, server_side.join()


# -- the module -------------------------------------------------------------------------------


def test_module_stands_in_for_the_stdlib_ssl() -> None:
    assert ssl.SSLError is std_ssl.SSLError
    assert ssl.PROTOCOL_TLS_CLIENT is std_ssl.PROTOCOL_TLS_CLIENT
    assert ssl.SSLWantReadError is std_ssl.SSLWantReadError
    assert issubclass(ssl.SSLSocket, std_ssl.SSLSocket)
    assert issubclass(ssl.SSLSocket, socket.socket)
    assert issubclass(ssl.SSLContext, std_ssl.SSLContext)
    ctx = ssl.create_default_context()
    assert type(ctx) is ssl.SSLContext and ctx.check_hostname
    assert ctx.verify_mode == std_ssl.CERT_REQUIRED
    with pytest.raises(AttributeError, match="stackful.ssl"):
        ssl.no_such_name  # noqa: B018


# -- client against the stdlib's server, server against the stdlib's client ----------------------


@WORLDS
def test_client_against_the_stdlib_server(world: str, certificate: Cert) -> None:
    server_ctx = server_context(certificate)
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda _obj, name, _ctx: sni.append(name)  # type: ignore[assignment, misc, func-returns-value]
    listener = std_listener()

    def std_server() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(tls.recv(100).upper())
            plain = tls.unwrap()
            plain.sendall(b"in clear")
            plain.close()

    def main() -> None:
        counter = [0]
        tick = stackful.spawn(ticker, counter) if world == "runtime" else None
        sock = socket.create_connection(listener.getsockname(), timeout=BOUND)
        tls = ssl.wrap_socket(sock, client_context(certificate), server_hostname="localhost")
        assert isinstance(tls, std_ssl.SSLSocket) and type(tls) is ssl.SSLSocket
        assert sock.fileno() == -1  # detached into tls
        assert tls.version() is not None and tls.version().startswith("TLS")  # type: ignore[union-attr]
        assert dict(x[0] for x in tls.getpeercert()["subject"])["commonName"] == "localhost"  # type: ignore[index, misc]
        tls.sendall(b"hello tls")
        assert tls.recv(100) == b"HELLO TLS"
        plain = tls.unwrap()
        assert plain is tls and tls._sslobj is None
        got = b""
        while len(got) < 8:
            got += plain.recv(100)
        assert got == b"in clear"
        plain.close()
        if tick is not None:
            tick.cancel()
            assert counter[0] > 0

    with listener, thread(std_server):
        in_world(world, main)
    assert sni == ["localhost"]


@WORLDS
def test_server_against_the_stdlib_client_with_client_certificates(
        world: str, certificate: Cert) -> None:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*certificate)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(certificate[0])
    client_ctx = client_context(certificate)
    client_ctx.load_cert_chain(*certificate)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(BOUND)
    received: list[bytes] = []

    def std_client() -> None:
        raw = std_socket.create_connection(listener.getsockname(), timeout=BOUND)
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"x" * 300_000)
            got = b""
            while len(got) < 300_000:
                got += tls.recv(65536)
            received.append(got)

    def main() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            assert type(tls) is ssl.SSLSocket
            peer = tls.getpeercert()
            assert dict(x[0] for x in peer["subject"])["commonName"] == "localhost"  # type: ignore[index, misc]
            got = b""
            while len(got) < 300_000:
                got += tls.recv(65536)
            tls.sendall(got)

    with listener, thread(std_client):
        in_world(world, main)
    assert received == [b"x" * 300_000]


@WORLDS
def test_accept_on_a_tls_listener(world: str, certificate: Cert) -> None:
    listener = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    listener.load_cert_chain(*certificate)
    plain = socket.create_server(("127.0.0.1", 0))
    plain.settimeout(BOUND)
    tls_listener = listener.wrap_socket(plain, server_side=True)
    client_ctx = client_context(certificate)

    def std_client() -> None:
        raw = std_socket.create_connection(tls_listener.getsockname(), timeout=BOUND)
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"over an accepted TLS socket\n")
            tls.recv(1)

    def main() -> None:
        conn, _ = tls_listener.accept()
        with conn:
            assert type(conn) is ssl.SSLSocket and conn.server_side
            with conn.makefile("rb") as f:
                assert f.readline() == b"over an accepted TLS socket\n"
            conn.sendall(b"!")

    with tls_listener, thread(std_client):
        in_world(world, main)


# -- both ends in one runtime: full duplex, want-read/want-write ----------------------------------


def test_full_duplex_transfer_between_two_cooperative_ends(certificate: Cert) -> None:
    payload = os.urandom(2 << 20)

    def main() -> None:
        client, server = tls_pair(certificate)

        def write(sock: ssl.SSLSocket) -> None:
            sock.sendall(payload)

        def read(sock: ssl.SSLSocket) -> bytes:
            buf = bytearray()
            chunk = bytearray(65536)
            while len(buf) < len(payload):
                n = sock.recv_into(chunk)
                assert n
                buf += chunk[:n]
            return bytes(buf)

        with client, server:
            tasks = [stackful.spawn(write, client), stackful.spawn(write, server)]
            readers = [stackful.spawn(read, client), stackful.spawn(read, server)]
            for t in tasks:
                t.join()
            assert [r.join() for r in readers] == [payload, payload]

    run_bounded(main)


class WantFirst:
    """The real OpenSSL object, except that the first call of ``method`` raises ``exc``: the
    want-write-on-read (renegotiation, key update) and want-read-on-write cases on demand."""

    def __init__(self, real: Any, method: str, exc: type[BaseException]) -> None:
        self.real, self.method, self.exc = real, method, exc

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.real, name)
        if name == self.method and self.exc is not None:
            def first(*args: Any) -> Any:
                exc, self.exc = self.exc, None  # type: ignore[assignment]
                raise exc()
            return first
        return attr


def test_want_write_during_read_and_want_read_during_write_are_waited_for(
        certificate: Cert, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[str] = []
    for name in ("_wait_readable", "_wait_writable"):
        real_wait = getattr(socket.socket, name)

        def counting(self: socket.socket, deadline: float | None, _real: Any = real_wait,
                     _name: str = name) -> None:
            waits.append(_name)
            _real(self, deadline)

        monkeypatch.setattr(socket.socket, name, counting)

    def main() -> None:
        client, server = tls_pair(certificate)
        with client, server:
            server.sendall(b"data")
            waits.clear()
            client._sslobj = WantFirst(client._sslobj, "read", ssl.SSLWantWriteError)
            assert client.recv(10) == b"data"
            assert waits[0] == "_wait_writable"  # then readable, if the data was late
            waits.clear()
            client._sslobj = WantFirst(client._sslobj.real, "write", ssl.SSLWantReadError)
            server.sendall(b"makes the client readable")
            assert client.send(b"back") == 4
            assert waits[0] == "_wait_readable"
            assert server.recv(10) == b"back"

    run_bounded(main)


def test_post_handshake_client_auth_writes_during_a_read(certificate: Cert) -> None:
    """TLS 1.3 post-handshake auth: the client's read must answer a CertificateRequest."""
    server_ctx = server_context(certificate)
    server_ctx.verify_mode = std_ssl.CERT_OPTIONAL
    server_ctx.load_verify_locations(certificate[0])
    server_ctx.post_handshake_auth = True
    server_ctx.minimum_version = std_ssl.TLSVersion.TLSv1_3
    listener = std_listener()
    seen: list[Any] = []

    def std_server() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            seen.append(tls.getpeercert())
            tls.verify_client_post_handshake()
            tls.sendall(b"hello")
            assert tls.recv(3) == b"ack"
            seen.append(tls.getpeercert())

    def main() -> None:
        ctx = client_context(certificate)
        ctx.load_cert_chain(*certificate)
        ctx.post_handshake_auth = True
        sock = socket.create_connection(listener.getsockname())
        with ssl.wrap_socket(sock, ctx, server_hostname="localhost") as tls:
            assert tls.recv(5) == b"hello"
            tls.sendall(b"ack")
            tls.recv(1)  # the server closes

    with listener, thread(std_server):
        run_bounded(main)
    assert not seen[0] and seen[1]["subject"]  # no certificate until asked after the handshake


# -- timeouts, cancellation, non-blocking mode ----------------------------------------------------


@WORLDS
def test_handshake_and_recv_time_out(world: str, certificate: Cert) -> None:
    def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as silent:  # never speaks TLS
            sock = socket.create_connection(silent.getsockname(), timeout=0.05)
            with pytest.raises(TimeoutError):
                ssl.wrap_socket(sock, client_context(certificate), server_hostname="localhost")
            assert sock.fileno() == -1
        if world == "runtime":
            client, server = tls_pair(certificate)
        else:
            return
        with client, server:
            client.settimeout(0.05)
            with pytest.raises(TimeoutError):
                client.recv(10)
            server.sendall(b"still fine")
            assert client.recv(10) == b"still fine"

    in_world(world, main)


def test_handshake_times_out_outside_a_runtime_against_a_silent_server(
        certificate: Cert) -> None:
    listener = std_listener()
    with listener:
        sock = socket.create_connection(listener.getsockname())
        sock.settimeout(0.05)
        with pytest.raises(TimeoutError):
            ssl.wrap_socket(sock, client_context(certificate), server_hostname="localhost")


def test_cancel_during_the_handshake_closes_the_socket(certificate: Cert) -> None:
    def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as silent:
            sock = socket.create_connection(silent.getsockname())
            fds: list[int] = []

            def handshake() -> None:
                fds.append(sock.fileno())
                ssl.wrap_socket(sock, client_context(certificate), server_hostname="localhost")

            t = stackful.spawn(handshake)
            stackful.sleep(0.05)
            assert t.state == "blocked"
            t.cancel()
            with pytest.raises(Cancelled):
                t.join()
            with pytest.raises(OSError):
                os.fstat(fds[0])  # closed, not leaked

    run_bounded(main)


def test_nonblocking_tls_raises_the_want_errors(certificate: Cert) -> None:
    def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            sock = socket.create_connection(listener.getsockname())
            conn, _ = listener.accept()
            sock.setblocking(False)
            with pytest.raises(ValueError, match="non-blocking"):
                ssl.wrap_socket(sock.dup(), client_context(certificate),
                                server_hostname="localhost")
            tls = ssl.wrap_socket(sock, client_context(certificate),
                                  server_hostname="localhost", do_handshake_on_connect=False)
            with pytest.raises(ssl.SSLWantReadError):
                tls.do_handshake()
            server = stackful.spawn(ssl.wrap_socket, conn, server_context(certificate),
                                    server_side=True)
            tls.do_handshake(block=True)
            with server.join() as srv, tls:
                with pytest.raises(ssl.SSLWantReadError):
                    tls.recv(10)
                srv.sendall(b"now")
                tls.setblocking(True)
                assert tls.recv(10) == b"now"

    run_bounded(main)


# -- end of stream, closing -----------------------------------------------------------------------


def test_ragged_eof(certificate: Cert) -> None:
    def main() -> None:
        client, server = tls_pair(certificate)
        server.close()  # no close_notify: a ragged end
        with client:
            assert client.recv(10) == b""
        # Older 3.11 releases (Debian 12's 3.11.2) set OP_IGNORE_UNEXPECTED_EOF by default,
        # which makes a ragged end a clean one whatever suppress_ragged_eofs says.
        strict = client_context(certificate)
        strict.options &= ~std_ssl.OP_IGNORE_UNEXPECTED_EOF
        client, server = tls_pair(certificate, strict)
        client.suppress_ragged_eofs = False
        server.close()
        with client, pytest.raises(ssl.SSLError) as raised:
            client.recv(10)
        # An SSLEOFError; older 3.11 releases give OpenSSL 3's reason in a plain SSLError,
        # as the stdlib's own socket does there.
        assert (isinstance(raised.value, ssl.SSLEOFError)
                or raised.value.reason == "UNEXPECTED_EOF_WHILE_READING"), raised.value

    run_bounded(main)


def test_close_wakes_a_task_waiting_in_a_tls_read(certificate: Cert) -> None:
    def main() -> None:
        client, server = tls_pair(certificate)
        waiter = stackful.spawn(client.recv, 10)
        stackful.sleep(0.02)
        assert waiter.state == "blocked"
        client.close()
        with pytest.raises(ClosedResourceError):
            waiter.join()
        server.close()

    run_bounded(main)


def test_a_stdlib_socket_is_converted_and_sendfile_goes_through_tls(
        certificate: Cert, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(os.urandom(200_000))

    def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            raw = std_socket.create_connection(listener.getsockname(), timeout=BOUND)
            conn, _ = listener.accept()
            server = stackful.spawn(ssl.wrap_socket, conn, server_context(certificate),
                                    server_side=True)
            tls = ssl.wrap_socket(raw, client_context(certificate), server_hostname="localhost")
            assert type(tls) is ssl.SSLSocket and tls.gettimeout() == BOUND
            with server.join() as srv, tls:
                def read_all() -> bytes:
                    got = b""
                    while len(got) < 200_000:
                        got += srv.recv(65536)
                    return got

                reader = stackful.spawn(read_all)
                with data.open("rb") as f:
                    assert tls.sendfile(f) == 200_000
                assert reader.join() == data.read_bytes()

    run_bounded(main)
