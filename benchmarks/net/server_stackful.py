"""stackful server: an accept loop and one task per connection.

Written against today's API: stdlib sockets in non-blocking mode, parked with
``stackful.wait_readable`` / ``wait_writable`` when they would block.  Only this file knows
that: the three socket helpers (``accept``, ``recv``, ``sendall``) and ``main`` are what a
cooperative socket API replaces; ``serve_http`` and ``serve_echo`` are the handler logic, the
same blocking-style code as the gevent server's.
"""

from __future__ import annotations

import socket

from protocol import BACKLOG, HOST, RECV_SIZE, announce, http_replies, parse_args

import stackful

# -- the socket helpers (today: non-blocking stdlib sockets + wait_readable/wait_writable) -----


def accept(listener: socket.socket) -> socket.socket:
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            stackful.wait_readable(listener)
            continue
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio's transports
        return conn


def recv(conn: socket.socket, size: int) -> bytes:
    while True:
        try:
            return conn.recv(size)
        except BlockingIOError:
            stackful.wait_readable(conn)


def sendall(conn: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[conn.send(view):]
        except BlockingIOError:
            stackful.wait_writable(conn)


# -- the handlers --------------------------------------------------------------------------------


def serve_http(conn: socket.socket) -> None:
    pending = b""
    try:
        while data := recv(conn, RECV_SIZE):
            replies, pending = http_replies(pending + data)
            if replies:
                sendall(conn, replies)
    except ConnectionError:
        pass
    finally:
        conn.close()


def serve_echo(conn: socket.socket) -> None:
    try:
        while data := recv(conn, RECV_SIZE):
            sendall(conn, data)
    except ConnectionError:
        pass
    finally:
        conn.close()


def main() -> None:
    workload, port = parse_args(__doc__ or "")
    handler = serve_http if workload == "http" else serve_echo
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, port))
    listener.listen(BACKLOG)
    listener.setblocking(False)

    def accept_loop() -> None:
        announce(listener.getsockname()[1])
        while True:
            stackful.spawn(handler, accept(listener))

    stackful.run(accept_loop)


if __name__ == "__main__":
    main()
