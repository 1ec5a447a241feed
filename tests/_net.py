"""Helpers shared by the network tests: bounded runs, "inside or outside a runtime", IPv6."""

from __future__ import annotations

import socket as std_socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

import stackful

T = TypeVar("T")

# Every wait of a network test ends by this many seconds: a bug fails the test, never hangs it.
BOUND = 20.0


def run_bounded(main: Callable[[], T], bound: float = BOUND) -> T:
    """``stackful.run(main)`` with the main task inside ``stackful.timeout(bound)``."""

    def bounded() -> T:
        with stackful.timeout(bound):
            return main()

    return stackful.run(bounded)


def in_world(world: str, main: Callable[[], T]) -> T:
    """Run ``main`` inside a runtime (``world == "runtime"``) or plainly on this thread.

    On the thread, sockets made meanwhile get a default timeout of :data:`BOUND`, so that a
    call a bug leaves blocked fails instead of hanging.
    """
    if world == "runtime":
        return run_bounded(main)
    old = std_socket.getdefaulttimeout()
    std_socket.setdefaulttimeout(BOUND)
    try:
        return main()
    finally:
        std_socket.setdefaulttimeout(old)


WORLDS = pytest.mark.parametrize("world", ["runtime", "thread"])


@contextmanager
def thread(target: Callable[[], Any], bound: float = BOUND) -> Iterator[list[BaseException]]:
    """Run ``target`` in a thread for the body; join it (bounded) and re-raise its error."""
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: B036 - handed to the test below
            errors.append(exc)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    try:
        yield errors
    finally:
        t.join(bound)
    assert not t.is_alive(), "the helper thread did not finish in time"
    if errors:
        raise errors[0]


def ipv6_loopback_works() -> bool:
    if not std_socket.has_ipv6:
        return False
    try:
        with std_socket.socket(std_socket.AF_INET6, std_socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback (::1)")
