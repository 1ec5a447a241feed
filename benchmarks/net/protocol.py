"""The handler logic every server of bench_net.py shares: a fixed HTTP reply and an echo.

HTTP/1.1 hello world, as minimal as a real server can be: bytes are collected until a request's
head ends (a blank line, ``\\r\\n\\r\\n``), and each complete request gets the same 200 response
with a Content-Length, so the connection stays open (keep-alive is HTTP/1.1's default).
Requests have no body (``wrk`` sends GETs); pipelined requests each get their reply.

Echo: whatever arrives is sent back.
"""

from __future__ import annotations

HOST = "127.0.0.1"
BACKLOG = 2048  # same for every server; wrk opens 1,000 connections at once
RECV_SIZE = 65536

_BODY = b"Hello, world!\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n"
    b"\r\n" + _BODY
)
END_OF_HEAD = b"\r\n\r\n"


def http_replies(pending: bytes) -> tuple[bytes, bytes]:
    """Split ``pending`` (received, unanswered bytes) into (replies to send, bytes kept).

    The replies are one ``RESPONSE`` per complete request head; what follows the last one is
    an incomplete request, kept for the next read.
    """
    count = pending.count(END_OF_HEAD)
    if not count:
        return b"", pending
    rest = pending[pending.rindex(END_OF_HEAD) + len(END_OF_HEAD):]
    return RESPONSE * count, rest


def announce(port: int) -> None:
    """Tell the bench (reading our stdout) that the server listens on ``port``."""
    print(f"listening {port}", flush=True)


def parse_args(description: str) -> tuple[str, int]:
    """The servers' command line: ``--workload http|echo`` and ``--port`` (0: any free one)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workload", choices=("http", "echo"), required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    return args.workload, args.port
