"""06: a pre-fork server: one listening socket, a worker process per CPU, each serving with tasks.

    python examples/06_prefork_server.py            # serve on 127.0.0.1:8080 until Ctrl-C/SIGTERM
    python examples/06_prefork_server.py --demo     # two workers, twenty requests, stop

A runtime runs on one thread, so one process uses one CPU.  To use them all, the parent binds
and listens once, then forks the workers; each takes the inherited socket over with
``serve_tcp(handler, sock=listener)`` and accepts from the same queue (the kernel gives each
connection to one of them).  This is how pre-fork servers such as gunicorn hand their
listening sockets to workers.  Stopping: the parent passes SIGTERM on, and each worker lets
its handlers finish, as ``serve_tcp`` does on Ctrl-C.
"""

import os
import signal
import socket as std_socket
import sys

import stackful
from stackful import socket
from stackful.server import serve_tcp


def hello(conn: socket.socket, addr: object) -> None:
    """Answer each request on the connection (no pipelining, for brevity) with our pid."""
    buf = b""
    while data := conn.recv(65536):
        buf += data
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            buf = buf[end + 4:]
            body = b"Hello from worker %d\n" % os.getpid()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def serve(listener: std_socket.socket) -> None:
    # The runtime handles the stop signals now: let through one that came while starting.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    serve_tcp(hello, sock=listener)


def worker(listener: std_socket.socket) -> int:
    """The child: serve on the inherited socket until SIGTERM or Ctrl-C."""
    try:
        stackful.run(serve, listener, handle_signals=tuple(STOP_SIGNALS))
    except (KeyboardInterrupt, SystemExit):
        return 0  # every handler has finished
    return 1


def start_workers(listener: std_socket.socket, count: int) -> list[int]:
    pids = []
    # A child SIGTERMed before its runtime handles the signal would die at once, not
    # cleanly: each starts with the stop signals blocked (held, not lost) until it serves.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # the child
            os.setpgid(0, 0)  # a group of its own: the terminal's Ctrl-C goes to the parent
            os._exit(worker(listener))
        pids.append(pid)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    listener.close()  # the parent only forwards signals and waits
    return pids


def stop_workers(pids: list[int]) -> int:
    """SIGTERM every worker and wait for them; how many stopped cleanly."""
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    return sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 for pid in pids)


def listen(port: int) -> std_socket.socket:
    listener = std_socket.socket()
    listener.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    return listener


def demo() -> None:
    listener = listen(0)
    port = listener.getsockname()[1]
    pids = start_workers(listener, 2)
    answered_by = []
    try:
        # A plain blocking client in the parent: connections queue until a worker accepts.
        for _ in range(10):
            with std_socket.create_connection(("127.0.0.1", port), timeout=30) as c:
                f = c.makefile("rb")
                for _ in range(2):
                    c.sendall(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n")
                    assert f.readline() == b"HTTP/1.1 200 OK\r\n"
                    length = int(f.readline().split(b":")[1])
                    f.readline()
                    answered_by.append(int(f.read(length).split()[-1]))
    finally:
        stopped = stop_workers(pids)
    print(f"answered {len(answered_by)} of 20 requests")
    print("every answer came from a worker:", set(answered_by) <= set(pids))
    print(f"workers stopped cleanly: {stopped} of {len(pids)}")


def main() -> None:
    count = os.cpu_count() or 1
    pids = start_workers(listen(8080), count)
    # Ctrl-C or SIGTERM reach the parent only; it stops the workers with SIGTERM.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    print(f"HTTP server on http://127.0.0.1:8080/ in {count} worker processes "
          "(Ctrl-C or kill to stop)", flush=True)
    signal.sigwait(STOP_SIGNALS)
    print(f"stopped: {stop_workers(pids)} of {count} workers finished cleanly")


if __name__ == "__main__":
    if "--demo" in sys.argv:
        demo()
    else:
        main()
