"""Helpers of the monkey-patching tests: a fixture that patches and checks the restore, and
servers in plain threads that prove their clients ran at the same time."""

from __future__ import annotations

import http.server
import socketserver
import ssl
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from stackful import monkey

from ._net import BOUND

# Every (owner, attribute) some patch replaces, read afresh each time.
PATCHED_NAMES = {
    "time": [("time", "sleep")],
    "socket": [("socket", n) for n in
               ("socket", "create_connection", "create_server", "socketpair", "fromfd")],
    "ssl": [("ssl.SSLContext", "sslsocket_class"), ("ssl", "create_connection")],
    "select": [("select", "select"), ("select", "poll"), ("select", "epoll"),
               ("selectors.PollSelector", "_selector_cls"),
               ("selectors.EpollSelector", "_selector_cls"),
               ("selectors.SelectSelector", "_select")],
    "dns": [("socket", n) for n in ("getaddrinfo", "getnameinfo", "gethostbyname",
                                    "gethostbyname_ex", "gethostbyaddr")],
    "threading": [("threading", "Lock"), ("threading", "_allocate_lock"), ("threading", "RLock"),
                  ("threading.Thread", "join")],
    "queue": [("queue", "SimpleQueue")],
    "subprocess": [("subprocess", n) for n in ("Popen", "run", "call", "check_call",
                                               "check_output", "getoutput", "getstatusoutput")],
}


def _owner(path: str) -> Any:
    import importlib

    module, _, cls = path.partition(".")
    obj = importlib.import_module(module)
    return getattr(obj, cls) if cls else obj


def snapshot() -> dict[tuple[str, str], Any]:
    """What each patched attribute holds now."""
    return {(owner, attr): getattr(_owner(owner), attr)
            for names in PATCHED_NAMES.values() for owner, attr in names}


@pytest.fixture(name="patched")
def patched_fixture() -> Iterator[None]:
    """Everything patched for the test; afterwards every original is back (checked)."""
    before = snapshot()
    monkey.patch_all()
    try:
        yield
    finally:
        monkey.unpatch_all()
        after = snapshot()
        changed = [key for key in before if after[key] is not before[key]]
        assert not changed, f"unpatch_all left {changed} replaced"


class Gate:
    """Holds each caller until ``n`` callers have arrived (bounded): a server handler that
    passes it proves ``n`` requests were in the server at the same time."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.arrived = 0
        self._cond = threading.Condition(threading.Lock())

    def wait(self) -> bool:
        """False if the others did not all arrive within BOUND seconds."""
        with self._cond:
            self.arrived += 1
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self.arrived >= self.n, BOUND)


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    gate: Gate
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802  (the stdlib's name)
        passed = self.gate.wait()
        body = f"{self.path} {'together' if passed else 'alone'}".encode()
        self.send_response(200 if passed else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 512  # every client's connect is in the backlog at once
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that only fetched the certificate resets the connection: not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _stop(server: socketserver.BaseServer, thread: threading.Thread) -> None:
    """Stop ``server``, which serves in ``thread``, within BOUND seconds or fail.

    ``shutdown()`` waits for ``serve_forever`` to return with no limit: it is called on a
    helper thread, and the bounded wait is the join of the serving thread."""
    threading.Thread(target=server.shutdown, daemon=True).start()
    thread.join(BOUND)
    server.server_close()
    assert not thread.is_alive(), "the server thread did not stop"


@contextmanager
def http_server(n: int, context: ssl.SSLContext | None = None) -> Iterator[int]:
    """A threading HTTP server in a plain thread, on 127.0.0.1; yields its port.  Each GET
    answers ``"<path> together"`` once ``n`` requests are in at the same time (503 and
    ``"alone"`` if they never are)."""
    handler = type("Handler", (_QuietHandler,), {"gate": Gate(n)})
    server = _Server(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        _stop(server, thread)


class _LineHandler(socketserver.StreamRequestHandler):
    """A tiny SMTP (or FTP control) responder: enough of the protocol for the stdlib client's
    connect, greeting, one exchange and QUIT."""

    gate: Gate
    greeting: bytes
    replies: dict[bytes, bytes]

    def handle(self) -> None:
        self.wfile.write(self.greeting)
        in_data = False
        for line in self.rfile:
            if in_data:
                if line.rstrip(b"\r\n") == b".":
                    in_data = False
                    ok = self.gate.wait()
                    self.wfile.write(b"250 queued\r\n" if ok else b"451 alone\r\n")
                continue
            verb = line.split(None, 1)[0].upper() if line.strip() else b""
            if verb == b"DATA":
                in_data = True
                self.wfile.write(b"354 go ahead\r\n")
            elif verb == b"NOOP":
                ok = self.gate.wait()
                self.wfile.write(b"200 together\r\n" if ok else b"451 alone\r\n")
            else:
                self.wfile.write(self.replies.get(verb, b"250 ok\r\n"))
            if verb == b"QUIT":
                return


class _LineServer(socketserver.ThreadingTCPServer):
    request_queue_size = 512
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def line_server(n: int, greeting: bytes, replies: dict[bytes, bytes]) -> Iterator[int]:
    """A line protocol server (see _LineHandler) in a plain thread; yields its port."""
    handler = type("Handler", (_LineHandler,),
                   {"gate": Gate(n), "greeting": greeting, "replies": replies})
    server = _LineServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        _stop(server, thread)
