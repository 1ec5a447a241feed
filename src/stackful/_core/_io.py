"""The I/O poller: which task waits for which file descriptor.

The runtime uses the native one on epoll (``stackful/_native/poller_epoll.c``; see
``poller.h`` for its one-shot and persistent registrations).  :class:`SelectorsPoller`, on
``selectors``, has the same face and is the portable fallback (``STACKFUL_POLLER=selectors``
chooses it): its waits are all one-shot, so a persistent wait simply registers again.
"""

from __future__ import annotations

import os
import selectors
from typing import Any, Protocol

from .._native import EpollPoller
from ._exceptions import BusyResourceError

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE


class HasFileno(Protocol):
    """Anything with a ``fileno()``: sockets, pipes' file objects, selectors' keys..."""

    def fileno(self) -> int: ...


def fileno_of(obj: int | HasFileno) -> int:
    """Return the file descriptor of an int or of an object with ``fileno()``."""
    if isinstance(obj, int):
        fd = obj
    else:
        try:
            method = obj.fileno
        except AttributeError:
            raise TypeError(
                f"expected a file descriptor or an object with fileno(), got {type(obj).__name__}"
            ) from None
        fd = method()
        if not isinstance(fd, int):
            raise TypeError(f"fileno() returned {type(fd).__name__}, not int")
    if fd < 0:
        raise ValueError(f"invalid file descriptor {fd}")
    return fd


class SelectorsPoller:
    """Maps (fd, READ/WRITE) to the one waiter for it; :meth:`poll` returns the waiters woken."""

    __slots__ = ("_selector", "_waiters", "_watched")

    def __init__(self) -> None:
        # Created lazily: most runs never touch a file descriptor.
        self._selector: selectors.BaseSelector | None = None
        # fd -> [reader or None, writer or None]
        self._waiters: dict[int, list[Any]] = {}
        # Non-blocking pipes whose bytes only wake the poller (see watch)
        self._watched: set[int] = set()

    @property
    def waiting(self) -> int:
        """Number of file descriptors somebody waits on."""
        return len(self._waiters)

    def _sel(self) -> selectors.BaseSelector:
        if self._selector is None:
            self._selector = selectors.DefaultSelector()
        return self._selector

    def add(
        self, fd: int, event: int, waiter: Any, describe: str, persistent: bool = False
    ) -> bool:
        """Register ``waiter`` for ``event`` on ``fd``; one waiter per (fd, event).

        Returns True (park the waiter): this poller remembers no edges.
        """
        slot = 0 if event == READ else 1
        pair = self._waiters.get(fd)
        if pair is None:
            pair = [None, None]
            pair[slot] = waiter
            self._sel().register(fd, event)
            self._waiters[fd] = pair
            return True
        if pair[slot] is not None:
            raise BusyResourceError(
                f"another task is already waiting for fd {fd} to become {describe}"
            )
        pair[slot] = waiter
        self._sel().modify(fd, READ | WRITE)
        return True

    def watch(self, fd: int) -> None:
        """Let bytes written to the non-blocking pipe ``fd`` wake :meth:`poll`, with no waiter
        (``waiting`` does not count it); the poll drains them, since a selector is
        level-triggered.  Ends with :meth:`forget`."""
        self._sel().register(fd, READ)
        self._watched.add(fd)

    def remove(self, fd: int, event: int, waiter: Any) -> None:
        """Drop ``waiter``'s registration (cancellation or timeout); no-op if already gone."""
        pair = self._waiters.get(fd)
        slot = 0 if event == READ else 1
        if pair is None or pair[slot] is not waiter:
            return
        pair[slot] = None
        self._update(fd, pair)

    def _update(self, fd: int, pair: list[Any]) -> None:
        sel = self._sel()
        mask = (READ if pair[0] is not None else 0) | (WRITE if pair[1] is not None else 0)
        if mask:
            sel.modify(fd, mask)
        else:
            del self._waiters[fd]
            try:
                sel.unregister(fd)
            except (KeyError, ValueError, OSError):
                # The fd may already be closed; epoll forgot it then, which is what we want.
                pass

    def forget(self, fd: int) -> list[tuple[Any, str]]:
        """``fd`` is about to be closed: drop it, return its waiters with what they waited for."""
        if fd in self._watched:
            self._watched.discard(fd)
            self._sel().unregister(fd)
            return []
        pair = self._waiters.pop(fd, None)
        if pair is None:
            return []
        if self._selector is not None:
            try:
                self._selector.unregister(fd)
            except (KeyError, ValueError, OSError):
                pass
        waits = zip(pair, ("readable", "writable"), strict=True)
        return [(w, what) for w, what in waits if w is not None]

    def poll(self, timeout: float | None) -> list[Any]:
        """Wait up to ``timeout`` seconds (None: forever); return the waiters whose fd is ready."""
        sel = self._sel()
        woken: list[Any] = []
        for key, events in sel.select(timeout):
            fd = key.fd
            if fd in self._watched:
                _drain(fd)
                continue
            pair = self._waiters.get(fd)
            if pair is None:
                continue
            if events & READ and pair[0] is not None:
                woken.append(pair[0])
                pair[0] = None
            if events & WRITE and pair[1] is not None:
                woken.append(pair[1])
                pair[1] = None
            self._update(fd, pair)
        return woken

    def _after_fork(self) -> list[int]:
        """In a child after fork(): a selector of its own (an inherited epoll instance is
        shared with the parent), with the same registrations; returns the fds that could not
        be registered again."""
        old = self._selector
        if old is None:
            return []
        self._selector = selectors.DefaultSelector()
        failed = []
        for fd in self._watched:
            self._selector.register(fd, READ)
        for fd, pair in list(self._waiters.items()):
            mask = (READ if pair[0] is not None else 0) | (WRITE if pair[1] is not None else 0)
            try:
                self._selector.register(fd, mask)
            except (OSError, ValueError):
                failed.append(fd)
        old.close()
        return failed

    def close(self) -> None:
        """Release the selector."""
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        self._waiters.clear()
        self._watched.clear()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:  # empty (BlockingIOError), or closed
        pass


def IOPoller() -> Any:  # noqa: N802  (a factory standing where the class was)
    """The poller a new runtime uses: the native epoll one, unless STACKFUL_POLLER=selectors."""
    if os.environ.get("STACKFUL_POLLER") == "selectors":
        return SelectorsPoller()
    return EpollPoller()
