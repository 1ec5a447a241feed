"""A FIFO queue for tasks, with ``queue.Queue``'s interface, on :mod:`stackful.lowlevel`.

``put`` hands an item straight to a waiting ``get`` when there is one, and a ``get`` that
frees a slot moves the first blocked ``put``'s item into the queue: items keep their order
and blocked producers and consumers are served first come, first served.
"""

from __future__ import annotations

import queue as _stdlib_queue
from collections import deque
from typing import Generic, TypeVar

from .lowlevel import RuntimeBinding, WaitQueue, check_timeout

__all__ = ["Empty", "Full", "Queue"]

T = TypeVar("T")

# The standard library's exceptions, so code written for queue.Queue catches the same ones.
Empty = _stdlib_queue.Empty
Full = _stdlib_queue.Full


def _check_timeout(block: bool, timeout: float | None) -> None:
    if block:
        check_timeout(timeout)


class Queue(Generic[T]):
    """FIFO queue; ``maxsize <= 0`` means unbounded."""

    __slots__ = ("maxsize", "_items", "_getters", "_putters", "_unfinished", "_joiners",
                 "_binding")

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        # Invariant: getters wait only while _items is empty; putters only while it is full.
        self._getters = WaitQueue()
        self._putters = WaitQueue()
        # Invariant: _unfinished counts the items that entered the queue (or went straight to a
        # getter) and were not yet marked done; a put that fails never counted.
        self._unfinished = 0
        self._joiners = WaitQueue()
        self._binding = RuntimeBinding("Queue")

    def qsize(self) -> int:
        """Number of items in the queue (not counting blocked puts)."""
        return len(self._items)

    def empty(self) -> bool:
        """True if ``get_nowait`` would raise ``Empty``."""
        return not self._items

    def full(self) -> bool:
        """True if ``put_nowait`` would raise ``Full``."""
        return 0 < self.maxsize <= len(self._items)

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item``, waiting up to ``timeout`` seconds for room; ``Full`` if none came."""
        task = self._binding.task("put")
        _check_timeout(block, timeout)
        if self._getters:
            self._unfinished += 1
            self._getters.wake_one(item)
            return
        if not self.full():
            self._unfinished += 1
            self._items.append(item)
            return
        if not block:
            raise Full
        # Counted by the get() that moves the item in; a timeout or cancellation never is.
        ok, _ = self._putters.park_for(task, "Queue.put", timeout, item)
        if not ok:
            raise Full

    def put_nowait(self, item: T) -> None:
        """``put(item, block=False)``."""
        self.put(item, block=False)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """Remove and return the first item, waiting up to ``timeout``; ``Empty`` if none."""
        task = self._binding.task("get")
        _check_timeout(block, timeout)
        if self._items:
            item = self._items.popleft()
            if self._putters:
                _, waiting_item = self._putters.wake_one()
                self._items.append(waiting_item)
                self._unfinished += 1
            return item
        if not block:
            raise Empty
        ok, item = self._getters.park_for(task, "Queue.get", timeout)
        if not ok:
            raise Empty
        got: T = item
        return got

    def get_nowait(self) -> T:
        """``get(block=False)``."""
        return self.get(block=False)

    def task_done(self) -> None:
        """Mark one item from ``get`` as processed (for :meth:`join`)."""
        self._binding.runtime("task_done")
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0:
            self._joiners.wake_all()

    def join(self) -> None:
        """Block until every item put has been marked done with :meth:`task_done`."""
        task = self._binding.task("join")
        if self._unfinished:
            self._joiners.park(task, "Queue.join")

    def __repr__(self) -> str:
        return (f"<Queue maxsize={self.maxsize} size={len(self._items)} "
                f"getters={len(self._getters)} putters={len(self._putters)}>")
