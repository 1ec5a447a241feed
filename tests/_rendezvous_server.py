"""A local HTTP and SMTP server whose requests wait for each other: the proof of concurrency.

Run as a script (``python tests/_rendezvous_server.py``), in its own process so that no
patching of the test process reaches it; it prints one line, ``http PORT smtp PORT``, then
serves on 127.0.0.1 until its stdin closes.  Plain stdlib, one thread per connection.

A request names a *group* and its *size*.  The server holds each request of a group until
``size`` of them are inside the server at the same time, then answers them all.  So a reply
proves that ``size`` clients were waiting on the server at once, which a client that blocks its
whole thread can never bring about; there is no timing in it.  A group that stays short for
:data:`GATE_TIMEOUT` seconds is answered with an error saying how many came.

* HTTP: ``GET /rendezvous/<group>/<size>/<i>`` -> 200, body ``<group> <i> <size>``;
  ``GET /sleep/<ms>/<i>`` -> 200 after ``ms`` milliseconds, body ``<i>``.
* SMTP: a message with a header ``X-Rendezvous: <group> <size>`` is held at the end of its
  DATA; the reply is ``250 queued <Subject>``.
"""

from __future__ import annotations

import re
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GATE_TIMEOUT = 20.0
BACKLOG = 1024  # 100 clients connect at once: the default backlog of 5 drops SYNs (1 s retries)


class Gates:
    """Named groups that open once ``size`` callers wait in them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._arrived: dict[str, int] = {}
        self._broken: dict[str, int] = {}  # group -> how many had arrived when it gave up

    def arrive(self, group: str, size: int) -> int:
        """Wait until ``size`` callers of ``group`` have arrived; return how many had.

        Raises ``TimeoutError`` (saying how many came) after :data:`GATE_TIMEOUT` seconds; the
        group is broken then, and its later callers get the error at once (clients that come
        one at a time fail in one bound, not one bound each).
        """
        with self._cond:
            self._arrived[group] = self._arrived.get(group, 0) + 1
            self._cond.notify_all()
            self._cond.wait_for(
                lambda: self._arrived[group] >= size or group in self._broken, GATE_TIMEOUT)
            if group not in self._broken and self._arrived[group] >= size:
                return self._arrived[group]
            came = self._broken.setdefault(group, self._arrived[group])
            self._cond.notify_all()
            raise TimeoutError(f"only {came} of {size} clients of group {group} were in the "
                               f"server at once (it waited {GATE_TIMEOUT:.0f} s for the rest)")


GATES = Gates()


class HTTPHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        parts = self.path.strip("/").split("/")
        try:
            if parts[0] == "rendezvous" and len(parts) == 4:
                group, size, i = parts[1], int(parts[2]), parts[3]
                GATES.arrive(group, size)
                self.answer(200, f"{group} {i} {size}")
            elif parts[0] == "sleep" and len(parts) == 3:
                time.sleep(int(parts[1]) / 1000)
                self.answer(200, parts[2])
            else:
                self.answer(404, f"no such path {self.path}")
        except TimeoutError as exc:
            self.answer(504, str(exc))

    def answer(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        self.reply("220 localhost stackful test SMTP")
        while line := self.rfile.readline():
            verb = line[:4].decode("ascii", "replace").upper()
            if verb == "EHLO":
                self.reply("250-localhost")
                self.reply("250 8BITMIME")
            elif verb in ("HELO", "MAIL", "RCPT", "RSET", "NOOP"):
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                self.reply(self.message(self.read_data()))
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("500 unknown command")

    def read_data(self) -> str:
        lines = []
        while (line := self.rfile.readline()) not in (b".\r\n", b""):
            lines.append(line[1:] if line.startswith(b".") else line)  # undo dot-stuffing
        return b"".join(lines).decode("utf-8", "replace")

    def message(self, data: str) -> str:
        gate = re.search(r"^X-Rendezvous: (\S+) (\d+)\r?$", data, re.M)
        subject = re.search(r"^Subject: (.*?)\r?$", data, re.M)
        if gate:
            try:
                GATES.arrive(gate[1], int(gate[2]))
            except TimeoutError as exc:
                return f"451 {exc}"
        return f"250 queued {subject[1] if subject else '-'}"


class ThreadingSMTPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = BACKLOG


class RendezvousHTTPServer(ThreadingHTTPServer):
    request_queue_size = BACKLOG


def main() -> None:
    http = RendezvousHTTPServer(("127.0.0.1", 0), HTTPHandler)
    smtp = ThreadingSMTPServer(("127.0.0.1", 0), SMTPHandler)
    for server in (http, smtp):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"http {http.server_address[1]} smtp {smtp.server_address[1]}", flush=True)
    # Until the test process kills us, or goes away (stdin closes).
    sys.stdin.read()


if __name__ == "__main__":
    main()
