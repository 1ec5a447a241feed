"""A server for the signal trials in tests/test_server.py, run as a script.

HTTP/1.1 keep-alive hello world on serve_tcp, in a runtime that handles SIGINT and SIGTERM;
with ``--close``, each connection answers one request and closes (its handler returns).
Prints its port once listening; when a signal has ended the run, prints how many handlers
ran, how many are still inside their ``try`` (their ``finally`` did not run), and what run()
raised.
"""

from __future__ import annotations

import signal
import sys

import stackful
from stackful.server import serve_tcp

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\n"
            b"Hello, world!")
CLOSE = "--close" in sys.argv
served = [0]
# Handlers inside their try block.  Each registers itself first thing in the block: a signal's
# exception can land in the running handler before that (at its very first instruction, as
# in any Python function), and then there is no finally to run.
live: set[object] = set()


def handler(conn: stackful.socket.socket, addr: object) -> None:
    me = object()
    try:
        live.add(me)
        served[0] += 1
        pending = b""
        while True:
            data = conn.recv(65536)
            if not data:
                return
            pending += data
            while b"\r\n\r\n" in pending:
                _, pending = pending.split(b"\r\n\r\n", 1)
                conn.sendall(RESPONSE)
                if CLOSE:  # the handler ends without blocking again
                    return
    finally:
        live.discard(me)


def main() -> None:
    serve_tcp(handler, "127.0.0.1", 0, grace=2.0,
              ready=lambda server: print(server.port, flush=True))


if __name__ == "__main__":
    try:
        stackful.run(main, handle_signals=(signal.SIGINT, signal.SIGTERM))
        outcome = "returned"
    except KeyboardInterrupt:
        outcome = "KeyboardInterrupt"
    except SystemExit as exc:
        outcome = f"SystemExit({exc.code})"
    print(f"served={served[0]} left={len(live)} {outcome}", flush=True)
    sys.exit(0)
