"""The runtime's C blocking path (loop.c): waits on fds, and what the hub does when it idles."""

from __future__ import annotations

import stackful
from stackful import lowlevel, socket
from stackful.runtime_api import run, sleep, spawn  # noqa: F401


def deep(n: int) -> int:
    """n levels of Python -> C -> Python: each takes C stack, well past the first pages."""
    return sum(map(lambda _: deep(n - 1), [0])) + 1 if n else 0


def test_an_idle_hub_gives_back_the_stack_below_a_parked_io_wait() -> None:
    """A task that went deep and then parked on a socket keeps only the pages it rests on
    once the hub has idled; when data comes it carries on (the pages fault back in)."""
    a, b = socket.socketpair()
    seen: dict[str, int] = {}

    def reader() -> bytes:
        assert deep(100) == 100
        seen["deep"] = stackful.current().stack_info().used
        return a.recv(10)

    def main() -> bytes:
        rt = lowlevel.current_runtime()
        t = spawn(reader, stack_size=2 * 1024 * 1024)
        sleep(1.0)  # the reader parks; the runtime idles past _TRIM_AFTER
        seen["parked"] = t._fiber.stack_info().used  # type: ignore[union-attr]
        seen["trims"] = rt.stack_trims
        b.sendall(b"hello")
        return bytes(t.join())

    try:
        assert run(main) == b"hello"
    finally:
        a.close()
        b.close()
    assert seen["deep"] > 32 * 1024
    assert seen["trims"] == 1
    assert seen["parked"] <= 2 * 4096  # the page it rests on (and its first frames')


def test_a_busy_runtime_does_not_trim() -> None:
    """Trimming is idle work: tasks parked in I/O but woken again and again (a ping-pong,
    where the hub sleeps between every message) are never trimmed."""
    a, b = socket.socketpair()

    def side(sock: socket.socket, first: bool) -> None:
        if first:
            sock.sendall(b"x")
        for _ in range(2000):
            sock.recv(1)
            sock.sendall(b"x")

    def main() -> int:
        rt = lowlevel.current_runtime()
        x = spawn(side, a, True)
        y = spawn(side, b, False)
        x.join()
        y.join()
        return rt.stack_trims

    try:
        assert run(main) == 0
    finally:
        a.close()
        b.close()
