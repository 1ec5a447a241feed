"""Files whose blocking calls park the task: ``stackful.files.open`` stands in for ``open``.

The kernel offers no readiness for regular files (epoll refuses them; a read of a cold page
cache or an NFS mount simply blocks), so each blocking call of a :class:`CooperativeFile` --
``read``, ``write``, ``readline``, ``flush``, ``seek``, ``close``, iteration... -- runs on a
worker thread (:func:`stackful.to_thread`) when called from a task, and directly otherwise.
Opening runs there too (it may block: a slow disk, a FIFO with no writer yet).

FIFOs (named pipes) are different: they have readiness, and :func:`open` hands them to the
poller instead (a FIFO's open waits for its other end on a worker thread, then every read and
write parks the task until the pipe is ready, with no thread involved).  Opened ``"r+"`` or
``"w+"``, a FIFO is treated as a file.

Cancelling a task stops its wait at once, but a call already on its way runs to the end on
its thread: the bytes of a cancelled ``read`` are lost to the caller, and a cancelled
``write`` may have happened.  Two tasks using one file at once are two threads using it at
once, as with threads: the file's own lock orders them.
"""

from __future__ import annotations

import builtins
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._core import to_thread
from ._pipes import pipe_layers
from .lowlevel import in_task

__all__ = ["CooperativeFile", "open", "wrap_file"]


def _call(method: Callable[..., Any], *args: Any) -> Any:
    if in_task():
        return to_thread(method, *args)
    return method(*args)


class CooperativeFile:
    """A file object whose blocking methods park the calling task (see the module's doc).

    ``wrapped`` is the file underneath (any file object: ``open()``'s, ``io.BytesIO``...).
    Attributes that never block (``name``, ``mode``, ``closed``, ``encoding``, ``fileno()``,
    ``readable()``...) are the wrapped file's.  A context manager and an iterator of lines,
    like the file it wraps.
    """

    __slots__ = ("wrapped",)

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        # Everything that does not block: name, mode, closed, encoding, fileno, readable...
        return getattr(self.wrapped, name)

    def __repr__(self) -> str:
        return f"<stackful.files.CooperativeFile {self.wrapped!r}>"

    @staticmethod
    def _call(method: Callable[..., Any], *args: Any) -> Any:
        """How a blocking call is made: on a worker thread in a task, directly otherwise."""
        return _call(method, *args)

    # -- the blocking calls ---------------------------------------------------------------------

    def read(self, size: int | None = -1, /) -> Any:
        """``read`` of the wrapped file, on a worker thread in a task."""
        return self._call(self.wrapped.read, size)

    def read1(self, size: int = -1, /) -> bytes:
        """``read1`` of the wrapped (binary) file, on a worker thread in a task."""
        data: bytes = self._call(self.wrapped.read1, size)
        return data

    def readinto(self, buffer: Any, /) -> int | None:
        """``readinto`` of the wrapped (binary) file, on a worker thread in a task."""
        count: int | None = self._call(self.wrapped.readinto, buffer)
        return count

    def readline(self, size: int | None = -1, /) -> Any:
        """``readline`` of the wrapped file, on a worker thread in a task."""
        return self._call(self.wrapped.readline, size)

    def readlines(self, hint: int = -1, /) -> list[Any]:
        """``readlines`` of the wrapped file, on a worker thread in a task."""
        lines: list[Any] = self._call(self.wrapped.readlines, hint)
        return lines

    def write(self, data: Any, /) -> int:
        """``write`` of the wrapped file, on a worker thread in a task."""
        count: int = self._call(self.wrapped.write, data)
        return count

    def writelines(self, lines: Iterable[Any], /) -> None:
        """``writelines`` of the wrapped file, on a worker thread in a task."""
        self._call(self.wrapped.writelines, lines)

    def flush(self) -> None:
        """``flush`` of the wrapped file, on a worker thread in a task."""
        self._call(self.wrapped.flush)

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        """``seek`` of the wrapped file (it may flush a buffer), on a worker thread in a task."""
        position: int = self._call(self.wrapped.seek, offset, whence)
        return position

    def tell(self) -> int:
        """``tell`` of the wrapped file (it may flush a buffer), on a worker thread in a task."""
        position: int = self._call(self.wrapped.tell)
        return position

    def truncate(self, size: int | None = None, /) -> int:
        """``truncate`` of the wrapped file, on a worker thread in a task."""
        new_size: int = self._call(self.wrapped.truncate, size)
        return new_size

    def close(self) -> None:
        """``close`` of the wrapped file (it flushes), on a worker thread in a task."""
        self._call(self.wrapped.close)

    # -- protocols ------------------------------------------------------------------------------

    def __enter__(self) -> CooperativeFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


def wrap_file(file: Any) -> CooperativeFile:
    """Make an open file object's blocking methods park the calling task."""
    if isinstance(file, CooperativeFile):
        return file
    if not hasattr(file, "read") and not hasattr(file, "write"):
        raise TypeError(f"wrap_file() needs a file object, got {type(file).__name__}")
    return CooperativeFile(file)


def open(  # noqa: A001  (a stand-in for the builtin, on purpose)
    file: Any,
    mode: str = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: Callable[[str, int], int] | None = None,
) -> CooperativeFile:
    """The builtin ``open``, with the same arguments, returning a :class:`CooperativeFile`.

    In a task the open itself runs on a worker thread.  A FIFO (named pipe) is read and
    written through the poller rather than worker threads.
    """
    wrapped = _call(_open_blocking, file, mode, buffering, encoding, errors, newline, closefd,
                    opener)
    if isinstance(wrapped, _PipeFile):
        return _CooperativePipe(wrapped.file)
    return CooperativeFile(wrapped)


class _CooperativePipe(CooperativeFile):
    """A FIFO opened by :func:`open`: its file already parks the task in each blocking call
    (through the poller, no worker thread), so calls go straight to it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<stackful.files.CooperativeFile (FIFO) {self.wrapped!r}>"

    @staticmethod
    def _call(method: Callable[..., Any], *args: Any) -> Any:
        return method(*args)


def _open_blocking(file: Any, mode: str, buffering: int, encoding: str | None,
                   errors: str | None, newline: str | None, closefd: bool,
                   opener: Callable[[str, int], int] | None) -> Any:
    f = builtins.open(file, mode, buffering, encoding, errors, newline, closefd, opener)
    try:
        if "+" not in mode and stat.S_ISFIFO(os.fstat(f.fileno()).st_mode):
            return _PipeFile(pipe_layers(f, buffering, newline))
    except BaseException:
        f.close()
        raise
    return f


class _PipeFile:
    """A FIFO's file: its calls park the task through the poller themselves (PipeIO)."""

    __slots__ = ("file",)

    def __init__(self, file: Any) -> None:
        self.file = file

