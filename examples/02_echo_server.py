"""02: an echo server -- one task per connection, plain sequential code in each.

    python examples/02_echo_server.py           # serve on 127.0.0.1:8000 until Ctrl-C
    python examples/02_echo_server.py --demo    # serve, run three clients against it, stop

`serve_tcp` accepts connections and runs `echo(conn, addr)` in a new task for each, on a
small stack.  `conn` is a `stackful.socket.socket`: `recv` and `sendall` look blocking, but
they park only this task, so every connection is served at once by one OS thread.
"""

import sys

import stackful
from stackful import socket
from stackful.server import Server, serve_tcp


def echo(conn: socket.socket, addr: object) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def client(port: int, name: str) -> str:
    with socket.create_connection(("127.0.0.1", port)) as c, c.makefile("rw") as f:
        replies = []
        for word in ("hello", "from", name):
            f.write(word + "\n")
            f.flush()
            replies.append(f.readline().strip())
        return " ".join(replies)


def demo() -> None:
    with stackful.timeout(30):  # a demo ends, whatever happens
        run_demo()


def run_demo() -> None:
    started = stackful.Event()
    servers: list[Server] = []

    def ready(server: Server) -> None:
        servers.append(server)
        started.set()

    server_task = stackful.spawn(serve_tcp, echo, "127.0.0.1", 0, ready=ready)
    started.wait()
    server = servers[0]
    clients = [stackful.spawn(client, server.port, name) for name in ("ann", "bob", "cy")]
    for name, task in zip(("ann", "bob", "cy"), clients, strict=True):
        print(f"{name} heard back: {task.join()}")
    server.close()  # stop accepting; the handlers are done already
    server_task.join()
    print("server stopped")


if __name__ == "__main__":
    if "--demo" in sys.argv:
        stackful.run(demo)
    else:
        print("echo server on 127.0.0.1:8000 (Ctrl-C to stop)")
        try:
            stackful.run(serve_tcp, echo, "127.0.0.1", 8000)
        except KeyboardInterrupt:
            pass
