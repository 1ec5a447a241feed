"""03: an HTTP/1.1 keep-alive "hello world" server, written as blocking code.

    python examples/03_http_server.py           # serve on 127.0.0.1:8080 until Ctrl-C/SIGTERM
    python examples/03_http_server.py --demo    # serve, send requests on one connection, stop

Each connection is a task that reads requests and answers them in a loop; keep-alive and
pipelining fall out of the loop (answers to requests that arrived together go in one send).
Try it with `curl -v http://127.0.0.1:8080/` or `wrk -c 100 http://127.0.0.1:8080/`.
"""

import signal
import sys
from typing import BinaryIO

import stackful
from stackful import socket
from stackful.server import Server, serve_tcp

BODY = b"Hello, world!"
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(BODY)
KEEP = OK + b"\r\n" + BODY
CLOSE = OK + b"Connection: close\r\n\r\n" + BODY
TOO_BIG = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n"
MAX_HEAD = 64 * 1024


def http(conn: socket.socket, addr: object) -> None:
    buf = b""
    while True:
        data = conn.recv(65536)
        if not data:
            return
        buf += data
        replies: list[bytes] = []
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            head, buf = buf[:end], buf[end + 4:]
            lines = head.split(b"\r\n")
            version = lines[0].rsplit(b" ", 1)[-1]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip().lower()
            length = int(headers.get(b"content-length", b"0"))
            while len(buf) < length:  # a body: read it and ignore it
                more = conn.recv(65536)
                if not more:
                    return
                buf += more
            buf = buf[length:]
            connection = headers.get(b"connection", b"")
            if connection == b"close" or (version == b"HTTP/1.0" and connection != b"keep-alive"):
                conn.sendall(b"".join(replies) + CLOSE)
                return
            replies.append(KEEP)
        if replies:
            conn.sendall(b"".join(replies))
        if len(buf) > MAX_HEAD:
            conn.sendall(TOO_BIG)
            return


def read_response(f: BinaryIO) -> tuple[str, bytes]:
    status = f.readline().decode().strip()
    length = 0
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, f.read(length)


def run_demo() -> None:
    started = stackful.Event()
    servers: list[Server] = []

    def ready(server: Server) -> None:
        servers.append(server)
        started.set()

    server_task = stackful.spawn(serve_tcp, http, "127.0.0.1", 0, ready=ready)
    started.wait()
    server = servers[0]
    with socket.create_connection(("127.0.0.1", server.port)) as c, c.makefile("rb") as f:
        get = b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n"
        c.sendall(get)
        print("request 1:", *read_response(f))
        c.sendall(get + get)  # pipelined: both answers come in one send
        print("request 2:", *read_response(f))
        print("request 3:", *read_response(f))
        c.sendall(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        print("request 4:", *read_response(f))
        print("then the server closed the connection:", f.read() == b"")
    server.close()
    server_task.join()


def demo() -> None:
    with stackful.timeout(30):  # a demo ends, whatever happens
        run_demo()


if __name__ == "__main__":
    if "--demo" in sys.argv:
        stackful.run(demo)
    else:
        print("HTTP server on http://127.0.0.1:8080/ (Ctrl-C or kill to stop)")
        try:
            # SIGTERM too (a process manager's stop): handlers finish, then run() raises.
            stackful.run(serve_tcp, http, "127.0.0.1", 8080,
                         handle_signals=(signal.SIGINT, signal.SIGTERM))
        except (KeyboardInterrupt, SystemExit):
            print("stopped: every connection's handler has finished")
