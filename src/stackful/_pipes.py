"""Cooperative pipe files: the raw file under :mod:`stackful.subprocess`'s pipes.

A :class:`PipeIO` owns a ``FileIO`` over one end of a pipe and keeps its file descriptor
non-blocking.  Each call first tries the system call; when that would block it waits, then
tries again -- inside a running runtime by parking the task (``stackful.wait_readable`` /
``wait_writable``), outside one by ``poll()`` on the thread, so that there it blocks exactly
like the stdlib's file.  ``io.BufferedReader``/``BufferedWriter``/``TextIOWrapper`` wrap it as
they wrap a ``FileIO``, and their blocking calls become cooperative with it.

A pipe handed to a child process (as its stdin/stdout/stderr or in ``pass_fds``) shares its
open file description, and with it the non-blocking flag, with that child, which does not
expect it.  :meth:`PipeIO.share_with_child` puts the description back in blocking mode for
good; from then on the pipe waits for readiness *before* each call (a read can still block
the thread if the other process drains the pipe in between, as with any shared pipe).
"""

from __future__ import annotations

import io
import os
import select
import sys
import weakref
from typing import TYPE_CHECKING, Any, cast

from ._core import current_runtime_or_none
from .lowlevel import RuntimeBinding
from .runtime_api import notify_closing, wait_readable, wait_writable

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = ["PipeIO", "pipe_layers", "pipe_of_fd"]

# A write to a pipe of at most this many bytes is atomic; poll()'s "writable" promises room
# for that much, so a blocking (shared) pipe writes in pieces of this size.
_PIPE_BUF: int = getattr(select, "PIPE_BUF", 512)
# Read size of readall() on a shared (blocking) pipe.
_READ_CHUNK = 65536

# Open pipes by file descriptor, so that Popen can recognise one it is handed.
_open_pipes: weakref.WeakValueDictionary[int, PipeIO] = weakref.WeakValueDictionary()


def pipe_of_fd(fd: int) -> PipeIO | None:
    """The open :class:`PipeIO` that owns ``fd``, if any."""
    pipe = _open_pipes.get(fd)
    if pipe is None or pipe._file.closed:
        return None
    return pipe


def _poll_thread(fd: int, events: int) -> None:
    """Block the thread until ``fd`` is ready: what a blocking file does outside a runtime."""
    poller = select.poll()
    poller.register(fd, events)
    poller.poll()


class PipeIO(io.RawIOBase):
    """A raw binary file over a pipe whose blocking calls park the running task.

    ``file`` is an open unbuffered ``FileIO`` (``"rb"`` or ``"wb"``); the ``PipeIO`` owns it
    and closes it.  ``write_all=True`` makes :meth:`write` write everything, as a blocking
    pipe does, for a raw file handed to users (``bufsize=0``); without it, as under an
    ``io.BufferedWriter``, a write that has written something returns its count (a wait is
    then only ever interrupted before any byte went out, so no byte is written twice).
    """

    def __init__(self, file: io.FileIO, *, write_all: bool = False) -> None:
        super().__init__()
        self._file = file
        self._write_all = write_all
        self._shared = False
        self._binding = RuntimeBinding("pipe")
        fd = file.fileno()
        os.set_blocking(fd, False)
        _open_pipes[fd] = self

    # -- what a FileIO shows -----------------------------------------------------------------

    @property
    def name(self) -> Any:
        """The file descriptor, as ``FileIO.name`` shows it."""
        return self._file.name

    @property
    def mode(self) -> str:
        """``"rb"`` or ``"wb"``."""
        return self._file.mode

    def fileno(self) -> int:
        """The pipe's file descriptor (``ValueError`` once closed)."""
        return self._file.fileno()

    def readable(self) -> bool:
        """True for the read end of a pipe."""
        return self._file.readable()

    def writable(self) -> bool:
        """True for the write end of a pipe."""
        return self._file.writable()

    def seekable(self) -> bool:
        """Pipes cannot seek."""
        return False

    def isatty(self) -> bool:
        """False for a pipe (asked of the file descriptor)."""
        return self._file.isatty()

    def __repr__(self) -> str:
        if self.closed:
            return "<stackful PipeIO [closed]>"
        return f"<stackful PipeIO name={self.name!r} mode={self.mode!r}>"

    # -- reading and writing -----------------------------------------------------------------

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        """Read what is there (at least one byte, 0 at end of file) into ``buffer``."""
        file = self._file
        while True:
            if self._shared:
                self._wait(writable=False)
            n = file.readinto(buffer)
            if n is not None:
                return n
            self._wait(writable=False)

    def readall(self) -> bytes:
        """Read until end of file."""
        file = self._file
        chunks: list[bytes] = []
        while True:
            if self._shared:
                self._wait(writable=False)
                chunk: bytes | None = file.read(_READ_CHUNK)
            else:
                chunk = file.readall()  # what is there; None if nothing
                if chunk is None:
                    self._wait(writable=False)
                    continue
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def write(self, data: ReadableBuffer, /) -> int:
        """Write ``data``; return how much went out (all of it with ``write_all``)."""
        file = self._file
        with memoryview(data) as view, view.cast("B") as octets:
            size = len(octets)
            done = 0
            while True:
                if self._shared:
                    self._wait(writable=True)
                    chunk = octets[done:done + _PIPE_BUF]
                else:
                    chunk = octets[done:]
                try:
                    n = file.write(chunk)
                except OSError:
                    if done:  # a blocking pipe reports what it wrote; the error comes next time
                        return done
                    raise
                finally:
                    chunk.release()
                if n is None:
                    self._wait(writable=True)
                    continue
                done += n
                if done >= size or not self._write_all:
                    return done

    def _wait(self, writable: bool) -> None:
        """Wait until the pipe is ready: park the task in a runtime, block the thread outside."""
        fd = self._file.fileno()
        if current_runtime_or_none() is None:
            _poll_thread(fd, select.POLLOUT if writable else select.POLLIN)
            return
        self._binding.task("write" if writable else "read")
        if writable:
            wait_writable(fd)
        else:
            wait_readable(fd)

    # -- sharing and closing -----------------------------------------------------------------

    def share_with_child(self) -> None:
        """Put the pipe in blocking mode for good: a child process is getting it."""
        if not self._shared:
            os.set_blocking(self._file.fileno(), True)
            self._shared = True

    def close(self) -> None:
        """Close the pipe; tasks of this runtime waiting on it get ``ClosedResourceError``."""
        if self.closed:
            return
        file = self._file
        try:
            if not file.closed:
                fd = file.fileno()
                if _open_pipes.get(fd) is self:
                    del _open_pipes[fd]
                if current_runtime_or_none() is not None:
                    notify_closing(fd)
        finally:
            try:
                file.close()
            finally:
                super().close()


def _buffer_size(bufsize: int, raw: io.FileIO) -> int:
    """The buffer size ``io.open(fd, mode, bufsize)`` gives a pipe (the stdlib's rule)."""
    if bufsize > 1:
        return bufsize
    blksize: int = getattr(raw, "_blksize", 0)
    if sys.version_info >= (3, 14):
        return max(min(blksize, 8192 * 1024), io.DEFAULT_BUFFER_SIZE)
    return blksize if blksize > 1 else io.DEFAULT_BUFFER_SIZE


def pipe_layers(obj: Any, bufsize: int, newline: str | None = None) -> Any:
    """The same file layers as ``obj`` (a stdlib file over one end of a pipe: Popen's, or a
    FIFO's), over a :class:`PipeIO`.  ``newline`` is the text layer's (it cannot be read back
    from a ``TextIOWrapper``)."""
    if obj is None:
        return None
    text = None
    if isinstance(obj, io.TextIOWrapper):
        text = obj
        obj = obj.detach()
    if isinstance(obj, io.BufferedReader | io.BufferedWriter):
        raw = cast(io.FileIO, obj.detach())
        buffered_type = io.BufferedWriter if raw.writable() else io.BufferedReader
        layer: Any = buffered_type(PipeIO(raw), _buffer_size(bufsize, raw))
    else:  # bufsize=0: the raw file itself, which writes everything it is given
        layer = PipeIO(obj, write_all=True)
    if text is not None:  # the detached wrapper still knows its other settings
        layer = io.TextIOWrapper(layer, encoding=text.encoding, errors=text.errors,
                                 newline=newline, line_buffering=text.line_buffering,
                                 write_through=text.write_through)
    return layer
