"""The pollers (``_core/_io.py``: SelectorsPoller; ``_native/poller_epoll.c``: EpollPoller)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from stackful._core._io import SelectorsPoller
from stackful._native import EpollPoller

POLLERS: list[Callable[[], Any]] = [EpollPoller, SelectorsPoller]


@pytest.mark.parametrize("make", POLLERS, ids=["epoll", "selectors"])
def test_a_watched_pipe_wakes_the_poll_without_being_a_wait(make: Callable[[], Any]) -> None:
    """What the run's signal wake-up pipe needs: a byte written wakes a poll at once, with no
    waiter to return, and the fd never counts in ``waiting`` (a deadlock stays reported)."""
    poller = make()
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        poller.watch(r)
        assert poller.waiting == 0
        for _ in range(3):  # each byte wakes it again (epoll: an edge; selectors: drained)
            os.write(w, b"x")
            started = time.monotonic()
            assert poller.poll(30.0) == []
            assert time.monotonic() - started < 15  # woken, not timed out
        assert poller.poll(0) == []  # nothing left that keeps waking it
        assert poller.forget(r) == []
        os.write(w, b"y")
        started = time.monotonic()
        assert poller.poll(0.2) == []
        assert time.monotonic() - started >= 0.1  # forgotten: the byte no longer wakes it
    finally:
        poller.close()
        os.close(r)
        os.close(w)
