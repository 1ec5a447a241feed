"""The runtime's C blocking path (loop.c): waits on fds, and what the hub does when it idles."""

from __future__ import annotations

import os

import pytest

import stackful
from stackful import lowlevel, socket
from stackful.runtime_api import run, sleep, spawn  # noqa: F401

from ._net import BOUND
from ._support import child_status, in_forked_child


def deep(n: int) -> int:
    """n levels of Python -> C -> Python: each takes C stack, well past the first pages."""
    return sum(map(lambda _: deep(n - 1), [0])) + 1 if n else 0


@pytest.mark.skipif(os.environ.get("STACKFUL_POLLER") == "selectors",
                    reason="the epoll poller's waits list tasks for trimming; selectors' do not")
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
        with stackful.timeout(BOUND):  # a reader the poller never wakes fails, not hangs
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
        with stackful.timeout(BOUND):  # a lost wake-up fails the test, not hangs it
            x.join()
            y.join()
        return rt.stack_trims

    try:
        assert run(main) == 0
    finally:
        a.close()
        b.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_and_its_parent_do_not_share_a_poller() -> None:
    """A task forks and the runtime goes on in both processes: an epoll instance shared by
    the two would hand one's events to the other (an edge taken is lost to its owner)."""

    def rounds() -> None:
        for _ in range(30):
            a, b = socket.socketpair()
            with a, b:
                reader = spawn(a.recv, 10)
                sleep(0.002)  # parked, its fd registered; the other process idles in poll
                b.send(b"x")
                with stackful.timeout(5):
                    assert reader.join() == b"x"

    def main() -> None:
        a, b = socket.socketpair()
        with a, b:
            inherited = spawn(a.recv, 10)  # the poller is in use before the fork

            def child() -> None:
                # The socket is shared with the parent: its data is for the parent's reader.
                inherited.cancel()
                rounds()

            sleep(0.01)
            pid = in_forked_child(child)
            rounds()
            b.send(b"y")
            with stackful.timeout(5):
                assert inherited.join() == b"y"
        assert child_status(pid) == 0

    run(main)


@pytest.mark.parametrize("poller", ["epoll", "selectors"])
def test_after_a_fork_a_wait_on_an_fd_that_is_gone_ends_with_an_error(
        poller: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the child does after fork() (the registrations move to a poller of its own), with
    an fd that another at-fork hook closed: its waiter gets ClosedResourceError, not a hang."""
    if poller == "selectors":
        monkeypatch.setenv("STACKFUL_POLLER", "selectors")
    a, b = socket.socketpair()

    def main() -> None:
        reader = spawn(a.recv, 10)
        sleep(0.01)
        os.close(a.detach())  # behind the runtime's back
        lowlevel.current_runtime()._after_fork_in_child()
        with pytest.raises(stackful.ClosedResourceError):
            with stackful.timeout(5):
                reader.join()

    with b:
        run(main)
