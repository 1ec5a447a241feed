"""Go-style channels and ``select``, on :mod:`stackful.lowlevel`.

``Channel(0)`` is unbuffered: ``send`` waits for a receiver (a rendezvous).  ``Channel(n)``
buffers ``n`` values.  ``close`` wakes every waiter: receivers drain what is buffered, then
get :class:`ChannelClosed` (iteration just stops); sending on a closed channel is always an
error.  ``select(Recv(a), Send(b, x), timeout=1)`` performs exactly one of several operations,
picking at random among the ready ones as Go does, so that no channel starves.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from .lowlevel import (
    RuntimeBinding,
    Task,
    check_timeout,
    park,
    timeout_scope,
    wake,
    wake_with_exception,
)

__all__ = ["Channel", "ChannelClosed", "Recv", "Send", "select"]

T = TypeVar("T")

# select() shuffles the ready operations with this generator; seed it for repeatable runs.
select_random = random.Random()


class ChannelClosed(Exception):
    """Sending on a closed channel, or receiving from a closed and drained one."""

    def __init__(self, message: str, channel: Channel[Any] | None = None) -> None:
        super().__init__(message)
        self.channel = channel


class _Select:
    """Shared by all the waiters one blocked ``select`` registered; the first match wins."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


class _Waiter:
    """A blocked send or receive sitting in a channel's queue."""

    __slots__ = ("task", "select", "index", "value")

    def __init__(self, task: Task, select: _Select | None, index: int, value: Any) -> None:
        self.task = task
        self.select = select
        self.index = index
        self.value = value

    def claim(self) -> bool:
        """True if this waiter may be completed (a select's other waiters are then stale)."""
        sel = self.select
        if sel is None:
            return True
        if sel.done:
            return False
        sel.done = True
        return True


class Channel(Generic[T]):
    """A typed pipe between tasks; see the module docstring."""

    __slots__ = ("capacity", "_buffer", "_recvq", "_sendq", "_closed", "_binding")

    def __init__(self, capacity: int = 0) -> None:
        if not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"Channel capacity must be an int >= 0, got {capacity!r}")
        self.capacity = capacity
        self._buffer: deque[T] = deque()
        # Invariant: receivers wait only while the buffer is empty, senders only while it is
        # full (always, for capacity 0); stale select waiters may linger until skipped.
        self._recvq: deque[_Waiter] = deque()
        self._sendq: deque[_Waiter] = deque()
        self._closed = False
        self._binding = RuntimeBinding("Channel")

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def __len__(self) -> int:
        """Values buffered now."""
        return len(self._buffer)

    # -- non-blocking halves, shared with select -------------------------------------------------

    def _try_send(self, value: T) -> bool:
        while self._recvq:
            w = self._recvq.popleft()
            if w.claim():
                wake(w.task, (w.index, value))
                return True
        if len(self._buffer) < self.capacity:
            self._buffer.append(value)
            return True
        return False

    def _try_recv(self) -> tuple[bool, T | None]:
        if self._buffer:
            value = self._buffer.popleft()
            # A slot freed up: the first blocked sender's value moves into the buffer.
            while self._sendq:
                w = self._sendq.popleft()
                if w.claim():
                    self._buffer.append(w.value)
                    wake(w.task, (w.index, None))
                    break
            return True, value
        while self._sendq:
            w = self._sendq.popleft()
            if w.claim():
                wake(w.task, (w.index, None))
                return True, w.value
        return False, None

    def _send_closed(self) -> ChannelClosed:
        return ChannelClosed("send on closed channel", self)

    def _recv_closed(self) -> ChannelClosed:
        return ChannelClosed("receive from closed channel", self)

    # -- the operations --------------------------------------------------------------------------

    def send(self, value: T, timeout: float | None = None) -> None:
        """Send ``value``; wait (up to ``timeout``) for a receiver or buffer room."""
        task = self._binding.task("send")
        if timeout is not None:
            check_timeout(timeout)
        if self._closed:
            raise self._send_closed()
        if self._try_send(value):
            return
        _block(task, [(self._sendq, _Waiter(task, None, 0, value))], "Channel.send", timeout)

    def recv(self, timeout: float | None = None) -> T:
        """Receive a value; wait (up to ``timeout``) for a sender.

        Raises :class:`ChannelClosed` once the channel is closed and drained.
        """
        task = self._binding.task("recv")
        if timeout is not None:
            check_timeout(timeout)
        ok, value = self._try_recv()
        if ok:
            return value  # type: ignore[return-value]
        if self._closed:
            raise self._recv_closed()
        _, got = _block(task, [(self._recvq, _Waiter(task, None, 0, None))], "Channel.recv",
                        timeout)
        result: T = got
        return result

    def close(self) -> None:
        """Close the channel: no more sends; blocked receivers and senders are woken."""
        self._binding.runtime("close")
        if self._closed:
            raise ChannelClosed("close of closed channel", self)
        self._closed = True
        # Receivers wait only on an empty buffer, so they all see the end now.
        while self._recvq:
            w = self._recvq.popleft()
            if w.claim():
                wake_with_exception(w.task, self._recv_closed())
        while self._sendq:
            w = self._sendq.popleft()
            if w.claim():
                wake_with_exception(w.task, self._send_closed())

    def __iter__(self) -> Iterator[T]:
        """Receive until the channel is closed and drained."""
        while True:
            try:
                yield self.recv()
            except ChannelClosed:
                return

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<Channel {state} capacity={self.capacity} buffered={len(self._buffer)} "
                f"receivers={len(self._recvq)} senders={len(self._sendq)}>")


def _block(
    task: Task,
    entries: list[tuple[deque[_Waiter], _Waiter]],
    reason: str,
    timeout: float | None,
) -> tuple[int, Any]:
    """Queue ``entries`` on their channels, park, and take them all back off afterwards."""
    for queue, waiter in entries:
        queue.append(waiter)

    def remove_all() -> None:
        for queue, waiter in entries:
            try:
                queue.remove(waiter)
            except ValueError:
                pass  # already consumed by the operation that woke us

    try:
        if timeout is None:
            got: tuple[int, Any] = park(reason, remove_all)
            return got
        scope = timeout_scope(timeout, reason)
        try:
            with scope:
                got = park(reason, remove_all)
                return got
        except TimeoutError as exc:
            if scope.owns(exc):
                raise TimeoutError(f"{reason} timed out after {timeout} s") from None
            raise
    finally:
        # A select was woken by one operation: its other waiters are stale now.
        if len(entries) > 1:
            remove_all()


class Recv:
    """A receive operation for :func:`select`."""

    __slots__ = ("channel",)

    def __init__(self, channel: Channel[Any]) -> None:
        self.channel = channel


class Send:
    """A send operation for :func:`select`."""

    __slots__ = ("channel", "value")

    def __init__(self, channel: Channel[Any], value: Any) -> None:
        self.channel = channel
        self.value = value


def select(*ops: Recv | Send, timeout: float | None = None) -> tuple[int, Any]:
    """Perform exactly one of ``ops``; return ``(its index, received value or None)``.

    Ready operations are chosen among at random (``select_random``).  If none is ready,
    wait for the first that becomes so; after ``timeout`` seconds raise ``TimeoutError``
    (``timeout=0`` polls).  A receive on a closed, drained channel or a send on a closed
    channel raises :class:`ChannelClosed` (its ``channel`` attribute says which).
    """
    if not ops:
        raise ValueError("select() needs at least one Recv or Send operation")
    check_timeout(timeout)
    task: Task | None = None
    for op in ops:
        if not isinstance(op, (Recv, Send)):
            raise TypeError(f"select() takes Recv and Send operations, got {type(op).__name__}")
        task = op.channel._binding.task("select")
    assert task is not None
    order = list(range(len(ops)))
    select_random.shuffle(order)
    for i in order:
        op = ops[i]
        ch = op.channel
        if isinstance(op, Send):
            if ch._closed:
                raise ch._send_closed()
            if ch._try_send(op.value):
                return i, None
        else:
            ok, value = ch._try_recv()
            if ok:
                return i, value
            if ch._closed:
                raise ch._recv_closed()
    if timeout == 0:
        raise TimeoutError("select() found no ready operation (timeout=0)")
    sel = _Select()
    entries = [
        (op.channel._sendq, _Waiter(task, sel, i, op.value)) if isinstance(op, Send)
        else (op.channel._recvq, _Waiter(task, sel, i, None))
        for i, op in enumerate(ops)
    ]
    return _block(task, entries, "select", timeout)
