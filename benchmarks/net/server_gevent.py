"""gevent server (``gevent.server.StreamServer``): a greenlet per connection, no monkey-patching
(StreamServer hands each handler a gevent socket)."""

from __future__ import annotations

import socket
from typing import Any

from gevent.server import StreamServer  # type: ignore[import-untyped]
from protocol import BACKLOG, HOST, RECV_SIZE, announce, http_replies, parse_args


def serve_http(conn: Any, address: object) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio's transports
    pending = b""
    try:
        while data := conn.recv(RECV_SIZE):
            replies, pending = http_replies(pending + data)
            if replies:
                conn.sendall(replies)
    except ConnectionError:
        pass
    finally:
        conn.close()


def serve_echo(conn: Any, address: object) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while data := conn.recv(RECV_SIZE):
            conn.sendall(data)
    except ConnectionError:
        pass
    finally:
        conn.close()


def main() -> None:
    workload, port = parse_args(__doc__ or "")
    handler = serve_http if workload == "http" else serve_echo
    server = StreamServer((HOST, port), handler, backlog=BACKLOG)
    server.start()
    announce(server.address[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
