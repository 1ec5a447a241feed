"""stackful.monkey's select, poll, epoll and selectors: a task waits on several fds at once,
the first ready wakes it, every registration goes when it resumes or is interrupted."""

from __future__ import annotations

import select
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest

import stackful
import stackful.lowlevel
from stackful import monkey
from stackful._core import READY

from ._monkey import patched_fixture
from ._net import BOUND, run_bounded
from ._support import vrun

__all__ = ["patched_fixture"]


def _waiting() -> int:
    return int(stackful.lowlevel.current_runtime().io.waiting)


def _pairs(n: int) -> list[tuple[socket.socket, socket.socket]]:
    return [socket.socketpair() for _ in range(n)]


def _close(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    for a, b in pairs:
        a.close()
        b.close()


# One way of waiting for "one of these is readable", per API; each returns the ready sockets.
def _by_select(socks: list[socket.socket], timeout: float | None) -> list[socket.socket]:
    return select.select(socks, [], [], timeout)[0]


def _by_poll(socks: list[socket.socket], timeout: float | None) -> list[socket.socket]:
    p = select.poll()
    for s in socks:
        p.register(s, select.POLLIN)
    by_fd = {s.fileno(): s for s in socks}
    return [by_fd[fd] for fd, _ in p.poll(None if timeout is None else timeout * 1000)]


def _by_epoll(socks: list[socket.socket], timeout: float | None) -> list[socket.socket]:
    with select.epoll() as ep:
        for s in socks:
            ep.register(s, select.EPOLLIN)
        by_fd = {s.fileno(): s for s in socks}
        return [by_fd[fd] for fd, _ in ep.poll(timeout)]


def _by_selector(socks: list[socket.socket], timeout: float | None) -> list[socket.socket]:
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        return [key.fileobj for key, _ in sel.select(timeout)]  # type: ignore[misc]


def _by_poll_selector(socks: list[socket.socket], timeout: float | None) -> list[socket.socket]:
    with selectors.PollSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        return [key.fileobj for key, _ in sel.select(timeout)]  # type: ignore[misc]


def _by_select_selector(socks: list[socket.socket],
                        timeout: float | None) -> list[socket.socket]:
    with selectors.SelectSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        return [key.fileobj for key, _ in sel.select(timeout)]  # type: ignore[misc]


Waiter = Callable[[list[socket.socket], "float | None"], list[socket.socket]]
WAITERS = pytest.mark.parametrize("wait", [
    _by_select, _by_poll, _by_epoll, _by_selector, _by_poll_selector, _by_select_selector,
], ids=lambda f: f.__name__[4:])


@WAITERS
def test_a_task_waits_on_several_fds_while_others_run(patched: None, wait: Waiter) -> None:
    pairs = _pairs(3)
    order: list[str] = []

    def waiter() -> list[socket.socket]:
        order.append("waiting")
        got = wait([a for a, _ in pairs], None)
        order.append("woken")
        return got

    def main() -> list[socket.socket]:
        t = stackful.spawn(waiter)
        stackful.sleep(0.01)
        order.append("other tasks run")
        pairs[1][1].send(b"x")  # the middle one
        got = t.join()
        assert _waiting() == 0  # every registration dropped
        return got

    try:
        assert run_bounded(main) == [pairs[1][0]]
        assert order == ["waiting", "other tasks run", "woken"]
    finally:
        _close(pairs)


@WAITERS
def test_the_wait_times_out_with_nothing_ready(patched: None, wait: Waiter) -> None:
    pairs = _pairs(2)

    def main() -> tuple[list[socket.socket], float]:
        t0 = stackful.lowlevel.current_time()
        got = wait([a for a, _ in pairs], 5.0)
        assert _waiting() == 0
        return got, stackful.lowlevel.current_time() - t0

    try:
        got, elapsed = vrun(main)  # virtual clock: the five seconds pass at once
        assert got == [] and elapsed >= 5.0
    finally:
        _close(pairs)


@WAITERS
def test_cancel_drops_every_registration(patched: None, wait: Waiter) -> None:
    pairs = _pairs(3)

    def main() -> None:
        t = stackful.spawn(wait, [a for a, _ in pairs], None)
        stackful.sleep(0.01)
        assert _waiting() >= 1
        t.cancel()
        with pytest.raises(stackful.Cancelled):
            t.join()
        assert _waiting() == 0
        # Nothing left behind: another task can wait on each of them now.
        pairs[2][1].send(b"x")
        stackful.wait_readable(pairs[2][0], BOUND)

    try:
        run_bounded(main)
    finally:
        _close(pairs)


@WAITERS
def test_outside_a_task_it_is_the_stdlibs(patched: None, wait: Waiter) -> None:
    pairs = _pairs(2)
    try:
        assert wait([a for a, _ in pairs], 0.01) == []
        got: list[list[socket.socket]] = []
        t = threading.Thread(target=lambda: got.append(wait([pairs[0][0]], BOUND)))
        t.start()
        pairs[0][1].send(b"x")
        t.join(BOUND)
        assert got == [[pairs[0][0]]]
    finally:
        _close(pairs)


def test_select_sees_writable_and_ready_at_once(patched: None) -> None:
    (a, b), = pairs = _pairs(1)

    def main() -> tuple[list[Any], ...]:
        b.send(b"x")
        return select.select([a], [a], [], BOUND)

    try:
        assert run_bounded(main) == ([a], [a], [])
    finally:
        _close(pairs)


def test_select_on_an_fd_another_task_is_reading(patched: None) -> None:
    # The poller allows one waiter per fd and direction: select waits through its own epoll set.
    (a, b), = pairs = _pairs(1)

    def main() -> tuple[list[Any], bytes]:
        reader = stackful.spawn(a.recv, 1)
        stackful.sleep(0.01)
        watcher = stackful.spawn(select.select, [a], [], [], BOUND)
        stackful.sleep(0.01)
        b.send(b"x")
        return watcher.join()[0], reader.join()

    try:
        assert run_bounded(main) == ([a], b"x")
    finally:
        _close(pairs)


def test_select_exceptional_condition(patched: None) -> None:
    # Out-of-band TCP data is what select's third list reports.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()

        def main() -> list[Any]:
            def urgent() -> None:
                stackful.sleep(0.01)
                client.send(b"!", socket.MSG_OOB)

            stackful.spawn(urgent)
            return select.select([], [], [conn], BOUND)[2]

        with client, conn:
            assert run_bounded(main) == [conn]


def test_closing_a_watched_socket_wakes_select_with_the_stdlib_error(patched: None) -> None:
    pairs = _pairs(2)

    def main() -> None:
        t = stackful.spawn(select.select, [pairs[0][0], pairs[1][0]], [], [], BOUND)
        stackful.sleep(0.01)
        pairs[0][0].close()  # another task closes one: the waiter wakes, and looks again
        with pytest.raises(ValueError, match="negative"):
            t.join()
        assert _waiting() == 0

    try:
        run_bounded(main)
    finally:
        _close(pairs)


def test_closing_a_second_watched_socket_after_the_first_woke_the_task(patched: None) -> None:
    # Woken by one fd, not yet run, when another task closes a second one it still watches:
    # the closer must not try to wake it twice.
    pairs = _pairs(2)

    def main() -> list[Any]:
        t = stackful.spawn(select.select, [pairs[0][0], pairs[1][0]], [], [], BOUND)
        stackful.sleep(0.01)
        pairs[0][1].send(b"x")
        stackful.lowlevel.current_runtime()._poll(0)  # what a batch's end does: t is ready
        assert t.state is READY
        pairs[1][0].close()
        return t.join()

    try:
        with pytest.raises(ValueError, match="negative"):
            run_bounded(main)  # the second look sees the closed socket, as the stdlib would
    finally:
        _close(pairs)


def test_select_with_no_fds_is_a_sleep_and_bad_arguments_raise_as_in_the_stdlib(
        patched: None) -> None:
    def main() -> float:
        t0 = stackful.lowlevel.current_time()
        assert select.select([], [], [], 2.5) == ([], [], [])
        for args, error in [
            (([], [], [], -1), ValueError),
            (([], [], [], "x"), TypeError),
            ((1, [], []), TypeError),
            (([-1], [], [], 1), ValueError),
        ]:
            with pytest.raises(error):
                select.select(*args)
        with pytest.raises(ValueError):
            select.epoll().poll(float("nan"))
        return stackful.lowlevel.current_time() - t0

    assert vrun(main) == pytest.approx(2.5)


def test_poll_masks_modify_and_unregister(patched: None) -> None:
    (a, b), (c, d) = pairs = _pairs(2)

    def main() -> None:
        p = select.poll()
        p.register(a, select.POLLIN)
        p.register(c, select.POLLIN)
        p.modify(c, select.POLLOUT)  # writable at once
        assert p.poll(BOUND * 1000) == [(c.fileno(), select.POLLOUT)]
        p.unregister(c)

        def later() -> None:
            stackful.sleep(0.01)
            b.send(b"x")

        stackful.spawn(later)
        assert p.poll(-1) == [(a.fileno(), select.POLLIN)]  # negative: no limit

    try:
        run_bounded(main)
    finally:
        _close(pairs)


def test_a_selector_made_before_patching_stays_the_stdlibs() -> None:
    before = selectors.DefaultSelector()
    with before:
        monkey.patch_select()
        try:
            after = selectors.DefaultSelector()
            with after:
                assert type(after._selector).__module__ == "stackful._monkey_select"  # type: ignore[attr-defined]
                assert type(before._selector) is not type(after._selector)  # type: ignore[attr-defined]
        finally:
            monkey.unpatch("select")
