"""stackful server: ``stackful.server.serve_tcp``, one task per connection.

The handlers are plain blocking code on ``stackful.socket`` sockets (their recv and sendall
park the task and are one C call each); ``serve_http`` and ``serve_echo`` are the same
handler logic as the gevent server's, written the same way (bound methods are not cached
in locals: that would hold two more objects per connection).
"""

from __future__ import annotations

from protocol import BACKLOG, HOST, RECV_SIZE, announce, http_replies, parse_args

import stackful
from stackful import socket
from stackful.server import Server, serve_tcp


def serve_http(conn: socket.socket, addr: object) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio's transports
    pending = b""
    try:
        while data := conn.recv(RECV_SIZE):
            replies, pending = http_replies(pending + data)
            if replies:
                conn.sendall(replies)
    except ConnectionError:
        pass


def serve_echo(conn: socket.socket, addr: object) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while data := conn.recv(RECV_SIZE):
            conn.sendall(data)
    except ConnectionError:
        pass


def main() -> None:
    workload, port = parse_args(__doc__ or "")
    handler = serve_http if workload == "http" else serve_echo

    def ready(server: Server) -> None:
        announce(server.port)

    stackful.run(serve_tcp, handler, HOST, port, backlog=BACKLOG, ready=ready)


if __name__ == "__main__":
    main()
