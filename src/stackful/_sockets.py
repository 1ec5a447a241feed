"""The cooperative socket type and its constructors; :mod:`stackful.socket` is the public face.

How a cooperative socket works.  Its file descriptor is always in non-blocking mode; the
timeout the user set (``settimeout``/``setblocking``, default ``getdefaulttimeout()``) is kept
apart and applied here.  A call first tries the system call; only when that says "would
block" (EAGAIN) does it wait, then try again:

* inside a running runtime, the wait parks the task (``stackful.wait_readable`` /
  ``wait_writable``), so other tasks run; a timeout raises ``TimeoutError`` (which *is*
  ``socket.timeout``), cancellation raises ``stackful.Cancelled``, and a socket closed by
  another task raises ``stackful.ClosedResourceError``;
* outside one (no runtime on this thread), the wait is ``poll()`` on the thread: the socket
  behaves exactly like a blocking stdlib socket, timeouts included;
* in non-blocking mode (timeout 0) nothing waits: ``BlockingIOError``, as in the stdlib.

Why try first (and not wait for readiness first): on a busy connection the data or the buffer
space is usually there already, and the call then costs one system call, as in the stdlib; a
wait-first design would pay for a poller round trip and a task switch even then.  When the
call would block, the failed attempt costs one extra system call plus a ``BlockingIOError``,
small next to the park, the poll and the switch that follow.  In blocking mode, ``recv``,
``recv_into``, ``send`` and ``sendall`` are C methods of the class (``_native/sockets.c``)
that do all of that, the park included, with no Python frame; with a timeout or in
non-blocking mode they hand over to the Python methods here, whose waits of each direction
go through one method, :meth:`socket._wait_readable` / :meth:`socket._wait_writable`.

A call that does not have to wait does not yield: a task that always finds data keeps the
thread (as in gevent); such a loop should call ``stackful.yield_now()`` now and then.  Two
tasks reading (or two writing) one socket at the same time is a ``stackful.BusyResourceError``.
"""

from __future__ import annotations

import _socket
import errno as _errno
import io as _io
import os as _os
import select as _select
import socket as _std
import time as _time
from collections.abc import Iterable
from socket import (
    AF_INET,
    AF_UNIX,
    SO_ERROR,
    SOCK_STREAM,
    SOL_SOCKET,
    AddressFamily,
    SocketKind,
    getdefaulttimeout,
)
from typing import Any

from ._core import current_runtime_or_none as _runtime_or_none
from ._core import to_thread as _to_thread
from ._native import _install_socket_methods
from ._native import _wait_readable as _persistent_wait_readable
from ._native import _wait_writable as _persistent_wait_writable
from ._native import sock_accept as _c_accept
from .lowlevel import current_time as _runtime_time
from .lowlevel import in_task as _in_task
from .runtime_api import notify_closing as _notify_closing
from .runtime_api import sleep as _runtime_sleep
from .runtime_api import wait_readable as _runtime_wait_readable
from .runtime_api import wait_writable as _runtime_wait_writable

__all__ = [
    "create_connection", "create_server", "from_stdlib_socket", "fromfd", "getaddrinfo",
    "getnameinfo", "socket", "socketpair",
]

# The C methods, looked up once: calling them on ``self`` skips super() (an allocation per
# call) and the socket.socket properties that convert ints to enums.
_ss = _socket.socket
_ss_recv = _ss.recv
_ss_recv_into = _ss.recv_into
_ss_recvfrom = _ss.recvfrom
_ss_recvfrom_into = _ss.recvfrom_into
_ss_send = _ss.send
_ss_sendto = _ss.sendto
_ss_accept = _ss._accept  # type: ignore[attr-defined]
_ss_connect_ex = _ss.connect_ex
_ss_fileno = _ss.fileno
_ss_close = _ss.close
_ss_setblocking = _ss.setblocking
_ss_getsockopt = _ss.getsockopt
_ss_family = _ss.family.__get__
_ss_type = _ss.type.__get__
_ss_proto = _ss.proto.__get__
_ss_recvmsg = getattr(_ss, "recvmsg", None)
_ss_recvmsg_into = getattr(_ss, "recvmsg_into", None)
_ss_sendmsg = getattr(_ss, "sendmsg", None)

# Created non-blocking in one system call where the platform can (Linux).
_NONBLOCK: int = getattr(_socket, "SOCK_NONBLOCK", 0)
_POLLIN = _select.POLLIN
_POLLOUT = _select.POLLOUT
_monotonic = _time.monotonic
# connect() in progress: the outcome comes when the socket turns writable.
_CONNECTING = frozenset({_errno.EINPROGRESS, _errno.EALREADY, _errno.EINTR})
# The stdlib keeps timeouts as int64 nanoseconds: larger ones are an OverflowError there too.
_MAX_TIMEOUT = (2**63 - 1) / 1e9
_GLOBAL_DEFAULT_TIMEOUT: Any = _std._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]
# The stdlib's own, taken now: stackful.monkey may later put ours in their place in the
# socket module, and these must not then call themselves.
_StdSocket = _std.socket
_std_create_server = _std.create_server


def _check_timeout_value(value: object) -> float | None:
    """``settimeout``'s rule, as the stdlib applies it: None, or a number >= 0."""
    if value is None:
        return None
    if isinstance(value, float):
        seconds = value
    else:
        try:
            seconds = float(value.__index__())  # type: ignore[attr-defined]
        except AttributeError:
            raise TypeError(
                f"'{type(value).__name__}' object cannot be interpreted as an integer or float"
            ) from None
    if seconds != seconds:
        raise ValueError("Invalid value NaN (not a number)")
    if seconds < 0:
        raise ValueError("Timeout value out of range")
    if seconds > _MAX_TIMEOUT:  # inf included
        raise OverflowError("timestamp too large to convert to C _PyTime_t")
    return seconds


def deadline_in(timeout: float | None) -> float | None:
    """When a wait of ``timeout`` seconds starting now ends, on the clock the waits use.

    That is the runtime's clock inside a runtime, ``time.monotonic`` outside; None: never.
    """
    if timeout is None:
        return None
    if _runtime_or_none() is None:
        return _monotonic() + timeout
    return _runtime_time() + timeout


def _remaining(deadline: float, now: float) -> float:
    left = deadline - now
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def _poll_thread(fd: int, events: int, deadline: float | None) -> None:
    """Block the thread until ``fd`` is ready (no runtime here): what a blocking socket does."""
    poller = _select.poll()
    poller.register(fd, events)
    if deadline is None:
        poller.poll()
    elif not poller.poll(_remaining(deadline, _monotonic()) * 1000.0):
        raise TimeoutError("timed out")


class socket(_StdSocket):
    """A socket whose blocking calls park the running task (see the module docstring).

    It *is* a ``socket.socket`` (a subclass), so libraries that check
    ``isinstance(sock, socket.socket)`` -- ``ssl``, ``http.client``, ``asyncio`` -- accept it,
    and the stdlib's own Python-level methods (``makefile``, ``dup``, ``close`` and friends)
    work on it unchanged, calling the cooperative ``recv_into``/``send``.
    """

    __slots__ = ("_timeout",)
    # The user's timeout: None (blocking), 0.0 (non-blocking) or seconds.  The C socket's own
    # timeout stays 0.0 (non-blocking) for the socket's whole life.
    _timeout: float | None

    def __init__(
        self,
        family: int = -1,
        type: int = -1,
        proto: int = -1,
        fileno: int | None = None,
    ) -> None:
        if fileno is None:
            asked_nonblocking = type != -1 and type & _NONBLOCK
            if type == -1:
                type = SOCK_STREAM
            _StdSocket.__init__(self, family, type | _NONBLOCK, proto)
            if not _NONBLOCK:
                _ss_setblocking(self, False)
        else:
            asked_nonblocking = type != -1 and type & _NONBLOCK
            _StdSocket.__init__(self, family, type, proto, fileno)
            _ss_setblocking(self, False)  # an fd we did not create: make it non-blocking
        self._timeout = 0.0 if asked_nonblocking else getdefaulttimeout()

    # -- timeouts: the stdlib's semantics, kept apart from the fd's mode -----------------------

    def settimeout(self, value: float | None, /) -> None:
        """Set the timeout of blocking calls: None (block), 0 (non-blocking) or seconds."""
        self._timeout = _check_timeout_value(value)

    def gettimeout(self) -> float | None:
        """The timeout in seconds, 0.0 in non-blocking mode, None if calls block."""
        return self._timeout

    def setblocking(self, flag: bool, /) -> None:
        """``setblocking(True)`` is ``settimeout(None)``, ``False`` is ``settimeout(0.0)``."""
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        """False in non-blocking mode (timeout 0.0), True otherwise."""
        return self._timeout != 0.0

    @property
    def timeout(self) -> float | None:
        """The timeout, as ``gettimeout()`` returns it."""
        return self._timeout

    def _deadline(self) -> float | None:
        """When a wait starting now must end, by this socket's timeout (see deadline_in)."""
        return deadline_in(self._timeout)

    # -- the waits: the only places a socket call blocks ---------------------------------------

    def _wait_readable(self, deadline: float | None) -> None:
        """Wait until the socket is readable (or has an error); ``TimeoutError`` at ``deadline``.

        Every reading call (recv*, accept) waits here and only here.
        """
        fd = _ss_fileno(self)
        if _runtime_or_none() is None:
            _poll_thread(fd, _POLLIN, deadline)
        elif deadline is None:
            _persistent_wait_readable(fd)  # registered once; close() drops it
        else:
            _runtime_wait_readable(fd, _remaining(deadline, _runtime_time()))

    def _wait_writable(self, deadline: float | None) -> None:
        """Wait until the socket is writable (or has an error); ``TimeoutError`` at ``deadline``.

        Every writing call (send*, connect) waits here and only here.
        """
        fd = _ss_fileno(self)
        if _runtime_or_none() is None:
            _poll_thread(fd, _POLLOUT, deadline)
        elif deadline is None:
            _persistent_wait_writable(fd)  # registered once; close() drops it
        else:
            _runtime_wait_writable(fd, _remaining(deadline, _runtime_time()))

    # -- the hot methods: recv, recv_into, send and sendall ---------------------------------------
    # They are C methods of this class (installed below the class: sockets.c), which do the
    # whole call in blocking mode.  With a timeout or in non-blocking mode they call these.

    def _recv_slow(self, bufsize: int, flags: int = 0, /) -> bytes:
        """recv() with a timeout, or in non-blocking mode."""
        try:
            return _ss_recv(self, bufsize, flags)
        except BlockingIOError:
            if self._timeout == 0.0:
                raise
        deadline = self._deadline()
        while True:
            self._wait_readable(deadline)
            try:
                return _ss_recv(self, bufsize, flags)
            except BlockingIOError:
                pass

    def _recv_into_slow(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """recv_into() with a timeout, in non-blocking mode, or called with keywords."""
        if self._timeout is None:
            return self.recv_into(buffer, nbytes, flags)  # keywords, in blocking mode: C
        try:
            return _ss_recv_into(self, buffer, nbytes, flags)
        except BlockingIOError:
            if self._timeout == 0.0:
                raise
        deadline = self._deadline()
        while True:
            self._wait_readable(deadline)
            try:
                return _ss_recv_into(self, buffer, nbytes, flags)
            except BlockingIOError:
                pass

    def _send_slow(self, data: Any, flags: int = 0, /) -> int:
        """send() with a timeout, or in non-blocking mode."""
        try:
            return _ss_send(self, data, flags)
        except BlockingIOError:
            if self._timeout == 0.0:
                raise
        deadline = self._deadline()
        while True:
            self._wait_writable(deadline)
            try:
                return _ss_send(self, data, flags)
            except BlockingIOError:
                pass

    def _sendall_slow(self, data: Any, flags: int = 0, /) -> None:
        """sendall() with a timeout (which bounds the whole call), or in non-blocking mode."""
        try:
            sent = _ss_send(self, data, flags)
        except BlockingIOError:
            if self._timeout == 0.0:
                raise
            sent = 0
        else:
            kind = type(data)
            if (kind is bytes or kind is bytearray) and sent == len(data):
                return  # the common case: it all went at once
        with memoryview(data) as view, view.cast("B") as octets:
            total = len(octets)
            if sent == total:
                return
            deadline: float | None = None
            waited = False
            while sent < total:
                try:
                    sent += _ss_send(self, octets[sent:], flags)
                    continue
                except BlockingIOError:
                    if self._timeout == 0.0:
                        raise
                if not waited:
                    deadline = self._deadline()
                    waited = True
                self._wait_writable(deadline)

    def accept(self) -> tuple[socket, Any]:
        """Wait for a connection; return ``(conn, address)`` with ``conn`` cooperative too.

        ``conn`` gets the default timeout (``getdefaulttimeout()``), as in the stdlib.
        """
        if self._timeout is None:
            fd, addr = _c_accept(self)
            return socket(_ss_family(self), _ss_type(self), _ss_proto(self), fd), addr
        try:
            fd, addr = _ss_accept(self)
        except BlockingIOError:
            if self._timeout == 0.0:
                raise
            deadline = self._deadline()
            while True:
                self._wait_readable(deadline)
                try:
                    fd, addr = _ss_accept(self)
                    break
                except BlockingIOError:
                    pass
        return socket(_ss_family(self), _ss_type(self), _ss_proto(self), fd), addr

    # -- the rest of the I/O calls ---------------------------------------------------------------

    def _read_retry(self, call: Any, *args: Any) -> Any:
        try:
            return call(self, *args)
        except BlockingIOError:
            if self._timeout == 0.0:
                raise
        deadline = self._deadline()
        while True:
            self._wait_readable(deadline)
            try:
                return call(self, *args)
            except BlockingIOError:
                pass

    def _write_retry(self, call: Any, *args: Any) -> Any:
        try:
            return call(self, *args)
        except BlockingIOError:
            if self._timeout == 0.0:
                raise
        deadline = self._deadline()
        while True:
            self._wait_writable(deadline)
            try:
                return call(self, *args)
            except BlockingIOError:
                pass

    def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Any]:
        """Receive up to ``bufsize`` bytes; return ``(data, sender address)``."""
        return self._read_retry(_ss_recvfrom, bufsize, flags)  # type: ignore[no-any-return]

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        """Receive into ``buffer``; return ``(count, sender address)``."""
        return self._read_retry(  # type: ignore[no-any-return]
            _ss_recvfrom_into, buffer, nbytes, flags)

    def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0,
                /) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]:
        """``recvmsg(2)``: ``(data, ancillary data, flags, address)``."""
        return self._read_retry(  # type: ignore[no-any-return]
            _ss_recvmsg, bufsize, ancbufsize, flags)

    def recvmsg_into(self, buffers: Iterable[Any], ancbufsize: int = 0, flags: int = 0,
                     /) -> tuple[int, list[tuple[int, int, bytes]], int, Any]:
        """``recvmsg(2)`` into ``buffers``: ``(count, ancillary data, flags, address)``."""
        return self._read_retry(  # type: ignore[no-any-return]
            _ss_recvmsg_into, buffers, ancbufsize, flags)

    def sendto(self, data: Any, flags_or_address: Any, address: Any = None, /) -> int:
        """``sendto(data, address)`` or ``sendto(data, flags, address)``; return the count."""
        if address is None:
            return self._write_retry(  # type: ignore[no-any-return]
                _ss_sendto, data, self._resolved(flags_or_address))
        return self._write_retry(  # type: ignore[no-any-return]
            _ss_sendto, data, flags_or_address, self._resolved(address))

    def sendmsg(self, buffers: Iterable[Any], *args: Any) -> int:
        """``sendmsg(2)``: ``sendmsg(buffers[, ancdata[, flags[, address]]])``."""
        return self._write_retry(_ss_sendmsg, buffers, *args)  # type: ignore[no-any-return]

    def connect(self, address: Any, /) -> None:
        """Connect to ``address``; the timeout bounds the whole call."""
        err = self._connect(address)
        if err:
            raise OSError(err, _os.strerror(err))

    def connect_ex(self, address: Any, /) -> int:
        """Like :meth:`connect`, but return the error number (0: connected) instead of raising.

        Its own timeout returns ``EAGAIN``, as in the stdlib.
        """
        return self._connect(address, True)

    def _now(self) -> float:
        return _monotonic() if _runtime_or_none() is None else _runtime_time()

    def _resolved(self, address: Any) -> Any:
        """``address`` with a host name replaced by its first address, looked up on a worker
        thread in a task (the C calls would look it up themselves, blocking the thread)."""
        if (not _in_task() or type(address) is not tuple or len(address) < 2
                or not isinstance(address[0], (str, bytes)) or _is_ip_literal(address[0])):
            return address
        family = _ss_family(self)
        if family not in (_socket.AF_INET, _socket.AF_INET6):
            return address
        infos = getaddrinfo(address[0], address[1], family, _ss_type(self), _ss_proto(self))
        if not infos:
            raise OSError(f"getaddrinfo found no address for {address[0]!r}")
        sockaddr = infos[0][4]
        if family == _socket.AF_INET6 and len(address) > 2:
            sockaddr = (sockaddr[0], sockaddr[1], *address[2:])  # the caller's flowinfo, scope
        return sockaddr

    def _connect(self, address: Any, timeout_as_errno: bool = False) -> int:
        address = self._resolved(address)
        err = _ss_connect_ex(self, address)
        if err == 0 or self._timeout == 0.0:
            return err
        deadline = self._deadline()
        try:
            if err == _errno.EAGAIN:
                return self._connect_unix_full(address, deadline)
            if err not in _CONNECTING:
                return err
            self._wait_writable(deadline)
        except TimeoutError:
            # Ours only if our deadline passed: an enclosing stackful.timeout() scope's error
            # must go on (an inner timeout never swallows an outer one).
            if timeout_as_errno and deadline is not None and self._now() >= deadline:
                return _errno.EAGAIN
            raise
        err = _ss_getsockopt(self, SOL_SOCKET, SO_ERROR)
        return 0 if err == _errno.EISCONN else err

    def _connect_unix_full(self, address: Any, deadline: float | None) -> int:
        # A Unix socket's listener has a full backlog: nothing tells when there is room (the
        # socket polls writable at once), so retry with a growing pause.
        pause = 0.001
        err = _errno.EAGAIN
        while err == _errno.EAGAIN:
            if deadline is not None:
                pause = min(pause, _remaining(deadline, self._now()))
            if _runtime_or_none() is None:
                _time.sleep(pause)
            else:
                _runtime_sleep(pause)
            pause = min(pause * 2, 0.05)
            err = _ss_connect_ex(self, address)
        return err

    def sendfile(self, file: _io.BufferedReader | Any, offset: int = 0,
                 count: int | None = None) -> int:
        """Send a file with ``os.sendfile`` (or read/send where it does not apply).

        Returns the number of bytes sent; the file's position is left after the last one
        sent.  Non-blocking sockets are refused, as in the stdlib.
        """
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if not self.type & SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        if count is not None:
            if not isinstance(count, int):
                raise TypeError(f"count must be a positive integer (got {count!r})")
            if count <= 0:
                raise ValueError(f"count must be a positive integer (got {count!r})")
        if self._timeout == 0.0:
            raise ValueError("non-blocking sockets are not supported")
        try:
            in_fd = file.fileno()
            size = _os.fstat(in_fd).st_size
        except (AttributeError, _io.UnsupportedOperation, OSError):
            return self._sendfile_by_send(file, offset, count)
        if not size:
            return 0
        block = min(count or size, 1 << 30)
        total = 0
        deadline: float | None = None
        waited = False
        try:
            while count is None or total < count:
                if count is not None:
                    block = min(block, count - total)
                try:
                    sent = _os.sendfile(_ss_fileno(self), in_fd, offset, block)
                except BlockingIOError:
                    if not waited:
                        deadline = self._deadline()
                        waited = True
                    self._wait_writable(deadline)
                    continue
                except OSError:
                    if total == 0:  # not a file sendfile() takes: read and send instead
                        return self._sendfile_by_send(file, offset, count)
                    raise
                if sent == 0:
                    break  # end of file
                offset += sent
                total += sent
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset)

    def _sendfile_by_send(self, file: Any, offset: int, count: int | None) -> int:
        if offset:
            file.seek(offset)
        total = 0
        while count is None or total < count:
            block = 8192 if count is None else min(8192, count - total)
            data = file.read(block)
            if not data:
                break
            self.sendall(data)
            total += len(data)
        return total

    # -- closing and handing the fd over --------------------------------------------------------

    def _real_close(self, _ss: Any = _socket.socket) -> None:
        # Tasks waiting on this fd must wake (ClosedResourceError), not sleep forever on a
        # number the next socket may get.
        fd = _ss_fileno(self)
        if fd >= 0 and _runtime_or_none() is not None:
            _notify_closing(fd)
        _ss_close(self)

    def detach(self) -> int:
        """Stop managing the file descriptor and return it (the socket becomes closed).

        The fd is left in the mode a stdlib socket with this timeout would have: blocking if
        the timeout is None, non-blocking otherwise.
        """
        fd = _ss_fileno(self)
        if fd >= 0 and _runtime_or_none() is not None:
            _notify_closing(fd)  # ours no more: drop its registration, wake its waiters
        if self._timeout is None and fd >= 0:
            _ss_setblocking(self, True)
        return super().detach()


# Named where users import it from (repr, help, tracebacks).
socket.__module__ = "stackful.socket"
# recv, recv_into, send and sendall become C methods of the class: no Python frame per call.
_install_socket_methods(socket)


def from_stdlib_socket(sock: _std.socket) -> socket:
    """Turn a stdlib socket into a cooperative one; ``sock`` is detached (closed) by it.

    The new socket keeps the timeout, family, type and protocol.
    """
    timeout = sock.gettimeout()
    new = socket(sock.family, sock.type, sock.proto, sock.detach())
    new._timeout = timeout
    return new


def socketpair(
    family: int | None = None, type: int = SOCK_STREAM, proto: int = 0
) -> tuple[socket, socket]:
    """A pair of connected cooperative sockets (``AF_UNIX`` by default)."""
    if family is None:
        family = AF_UNIX
    a, b = _socket.socketpair(family, type, proto)
    return socket(family, type, proto, a.detach()), socket(family, type, proto, b.detach())


def fromfd(fd: int, family: int, type: int, proto: int = 0) -> socket:
    """A cooperative socket on a duplicate of ``fd`` (``fd`` itself stays open)."""
    return socket(family, type, proto, _os.dup(fd))


# The stdlib's resolvers, kept from import time (patch_all() may later put ours in their place).
_blocking_getaddrinfo = _std.getaddrinfo
_blocking_getnameinfo = _std.getnameinfo


def _is_ip_literal(host: bytes | str | None) -> bool:
    """None or a numeric address: resolving it asks no name server."""
    if host is None:
        return True
    text = host.decode("ascii", "replace") if isinstance(host, bytes) else host
    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(family, text.partition("%")[0])  # an IPv6 zone index aside
            return True
        except (OSError, ValueError):
            pass
    return False


def getaddrinfo(
    host: bytes | str | None,
    port: bytes | str | int | None,
    family: int = 0,
    type: int = 0,
    proto: int = 0,
    flags: int = 0,
) -> list[tuple[AddressFamily, SocketKind, int, str, Any]]:
    """The stdlib's ``getaddrinfo``; in a task a name is resolved on a worker thread
    (``stackful.to_thread``), so the task parks while the name server answers.

    An IP literal (or None) resolves at once, asking nobody.  Cancelling the task stops its
    wait; the lookup itself finishes on its thread.  Everything here (``create_connection``)
    resolves through this one function.
    """
    result: list[tuple[AddressFamily, SocketKind, int, str, Any]]
    if _in_task() and not _is_ip_literal(host):
        result = _to_thread(_blocking_getaddrinfo, host, port, family, type, proto, flags)
    else:
        result = _blocking_getaddrinfo(  # type: ignore[assignment]
            host, port, family, type, proto, flags)
    return result


def getnameinfo(sockaddr: tuple[Any, ...], flags: int, /) -> tuple[str, str]:
    """The stdlib's ``getnameinfo``; in a task it runs on a worker thread (a reverse lookup
    asks a name server), so the task parks meanwhile."""
    if _in_task():
        result: tuple[str, str] = _to_thread(_blocking_getnameinfo, sockaddr, flags)
        return result
    return _blocking_getnameinfo(sockaddr, flags)


def create_connection(
    address: tuple[str | None, int],
    timeout: float | None = _GLOBAL_DEFAULT_TIMEOUT,
    source_address: tuple[str, int] | None = None,
    *,
    all_errors: bool = False,
) -> socket:
    """Connect a cooperative TCP socket to ``(host, port)``, trying each address in turn.

    As the stdlib's: ``timeout`` (default: ``getdefaulttimeout()``) is set on the socket
    before connecting and bounds each attempt; the first error is raised if every address
    fails (all of them, as an ``ExceptionGroup``, with ``all_errors=True``).  No happy
    eyeballs: addresses are tried one after the other.
    """
    host, port = address
    exceptions: list[Exception] = []
    for family, kind, proto, _name, sockaddr in getaddrinfo(host, port, 0, SOCK_STREAM):
        sock = None
        try:
            sock = socket(family, kind, proto)
            if timeout is not _GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            exceptions.clear()
            return sock
        except OSError as exc:
            exceptions.append(exc)
            if sock is not None:
                sock.close()
    if not exceptions:
        raise OSError("getaddrinfo returns an empty list")
    try:
        if not all_errors:
            raise exceptions[0]
        raise ExceptionGroup("create_connection failed", exceptions)
    finally:
        exceptions = []  # the traceback would keep the list (and its frames) alive


def create_server(
    address: tuple[str, int] | str | bytes,
    *,
    family: int = AF_INET,
    backlog: int | None = None,
    reuse_port: bool = False,
    dualstack_ipv6: bool = False,
) -> socket:
    """A cooperative listening socket bound to ``address``: the stdlib's ``create_server``.

    ``SO_REUSEADDR`` is set; ``reuse_port`` sets ``SO_REUSEPORT``; ``family=AF_INET6`` with
    ``dualstack_ipv6=True`` accepts IPv4 too (see ``has_dualstack_ipv6()``); an
    ``AF_UNIX`` path works as well.
    """
    sock = _std_create_server(address, family=family, backlog=backlog,
                              reuse_port=reuse_port, dualstack_ipv6=dualstack_ipv6)
    # Ours already when stackful.monkey has patched the socket module.
    return sock if isinstance(sock, socket) else from_stdlib_socket(sock)

