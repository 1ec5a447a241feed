"""TLS on cooperative sockets, with the stdlib's ``ssl`` module.

Two ways in, both giving an :class:`SSLSocket` whose handshake, reads, writes and ``unwrap``
park the running task (and block the thread, like the stdlib's, outside a runtime)::

    from stackful import ssl, socket

    ctx = ssl.create_default_context()              # an ssl.SSLContext subclass...
    tls = ctx.wrap_socket(socket.create_connection((host, 443)), server_hostname=host)

    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # ...or any stdlib context:
    tls = ssl.wrap_socket(sock, stdlib_ctx, server_hostname=host)

:class:`SSLSocket` is a stdlib ``ssl.SSLSocket`` (``isinstance`` checks hold) and a
cooperative :class:`stackful.socket.socket`.  OpenSSL runs on the non-blocking fd; when it
wants to read or write first (``SSLWantReadError``/``SSLWantWriteError``, which a read can
raise for writing -- renegotiation, TLS 1.3 key updates -- and a write for reading), the call
waits for that and retries, within the socket's timeout.  In non-blocking mode (timeout 0)
those errors reach the caller, as in the stdlib.  A server's handshake runs where the socket
is wrapped: :func:`stackful.server.serve_tcp` does it in each connection's own task, so a
slow client cannot hold up the accept loop.

Every other name of the stdlib's ``ssl`` module (constants, ``SSLError`` and its subclasses,
``Purpose``, ``MemoryBIO``, ...) is available here unchanged.
"""

from __future__ import annotations

import socket as _std_socket
import ssl as _std_ssl
from collections.abc import Callable
from ssl import SSL_ERROR_EOF, SSLError, SSLWantReadError, SSLWantWriteError
from typing import Any, Protocol, TypeVar

from . import _sockets
from ._sockets import deadline_in

__all__ = ["SSLContext", "SSLSocket", "create_default_context", "wrap_socket"]

T = TypeVar("T")

_WANT = (SSLWantReadError, SSLWantWriteError)
_plain_recv = _sockets.socket.recv
_plain_recv_into = _sockets.socket.recv_into
_plain_send = _sockets.socket.send
_plain_sendall = _sockets.socket.sendall
_plain_accept = _sockets.socket.accept
_ss_setblocking = _sockets._ss_setblocking


class _TLSObject(Protocol):
    """What is used of the stdlib's OpenSSL connection object (``_ssl._SSLSocket``)."""

    def read(self, len: int, buffer: Any = ..., /) -> Any: ...
    def write(self, data: Any, /) -> int: ...
    def do_handshake(self) -> None: ...
    def shutdown(self) -> Any: ...


# The stubs' SSLSocket and socket disagree on recvmsg/recvmsg_into/sendmsg (TLS refuses them).
class SSLSocket(_std_ssl.SSLSocket, _sockets.socket):  # type: ignore[misc]
    """A TLS connection over a cooperative socket; made by :func:`wrap_socket`,
    :meth:`SSLContext.wrap_socket` or :meth:`accept` (see the module docstring)."""

    # The stdlib's own fields and helper, which its type stubs do not declare.
    _sslobj: _TLSObject | None
    _connected: bool
    do_handshake_on_connect: bool
    suppress_ragged_eofs: bool
    _check_connected: Callable[[], None]

    @classmethod
    def _create(
        cls,
        sock: _std_socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        context: _std_ssl.SSLContext | None = None,
        session: _std_ssl.SSLSession | None = None,
    ) -> SSLSocket:
        if not isinstance(sock, _sockets.socket):
            sock = _sockets.from_stdlib_socket(sock)
        # The stdlib's constructor, without its handshake (that would block the thread).
        self: SSLSocket = super()._create(  # type: ignore[misc]
            sock, server_side, False, suppress_ragged_eofs, server_hostname, context, session)
        # It detached `sock`, which gives a blocking socket's fd back in blocking mode; the
        # fd is ours now, and ours are always non-blocking.
        _ss_setblocking(self, False)
        self.do_handshake_on_connect = do_handshake_on_connect
        if do_handshake_on_connect and self._connected:
            try:
                if self._timeout == 0.0:
                    raise ValueError("do_handshake_on_connect should not be specified for "
                                     "non-blocking sockets")
                self.do_handshake()
            except BaseException:
                # Also on cancellation or a timeout scope: nobody else holds this socket.
                self.close()
                raise
        return self

    # -- the one wait loop of every TLS call ---------------------------------------------------

    def _tls_retry(self, exc: SSLError, timeout: float | None, op: Callable[..., T],
                   *args: Any) -> T:
        """``op(*args)`` failed with want-read/want-write ``exc``: wait for that, retry.

        ``timeout`` bounds the whole call; 0.0 (non-blocking) raises ``exc`` at once.
        """
        if timeout == 0.0:
            raise exc
        deadline = deadline_in(timeout)
        while True:
            if isinstance(exc, SSLWantReadError):
                self._wait_readable(deadline)
            else:
                self._wait_writable(deadline)
            try:
                return op(*args)
            except _WANT as again:
                exc = again

    def _read_failed(self, exc: SSLError, len: int, buffer: Any) -> Any:
        """The slow path of every read: wait and retry, and the ragged-EOF rule."""
        sslobj = self._sslobj
        assert sslobj is not None
        try:
            if not isinstance(exc, _WANT):
                raise exc
            if buffer is None:
                return self._tls_retry(exc, self._timeout, sslobj.read, len)
            return self._tls_retry(exc, self._timeout, sslobj.read, len, buffer)
        except SSLError as failure:
            if failure.args[0] == SSL_ERROR_EOF and self.suppress_ragged_eofs:
                return b"" if buffer is None else 0
            raise

    # -- reading and writing ---------------------------------------------------------------------

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        """Read up to ``len`` decrypted bytes (into ``buffer`` if given); ``b""``/0 at EOF."""
        sslobj = self._sslobj
        if sslobj is None:
            raise ValueError("Read on closed or unwrapped SSL socket.")
        try:
            if buffer is None:
                return sslobj.read(len)
            return sslobj.read(len, buffer)
        except SSLError as exc:
            return self._read_failed(exc, len, buffer)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        """Receive up to ``buflen`` decrypted bytes; ``b""`` at end of stream."""
        sslobj = self._sslobj
        if sslobj is None:
            return _plain_recv(self, buflen, flags)
        if flags:
            raise ValueError(f"non-zero flags not allowed in calls to recv() on {type(self)}")
        try:
            data: bytes = sslobj.read(buflen)
        except SSLError as exc:
            data = self._read_failed(exc, buflen, None)
        return data

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        """Receive decrypted bytes into ``buffer`` (at most ``nbytes``); return the count."""
        sslobj = self._sslobj
        if sslobj is None:
            return _plain_recv_into(self, buffer, nbytes or 0, flags)
        if flags:
            raise ValueError(
                f"non-zero flags not allowed in calls to recv_into() on {type(self)}")
        if nbytes is None:
            with memoryview(buffer) as view:
                nbytes = view.nbytes or 1024
        try:
            count: int = sslobj.read(nbytes, buffer)
        except SSLError as exc:
            count = self._read_failed(exc, nbytes, buffer)
        return count

    def write(self, data: Any) -> int:
        """Encrypt and send all of ``data`` (TLS writes whole records); return its length."""
        sslobj = self._sslobj
        if sslobj is None:
            raise ValueError("Write on closed or unwrapped SSL socket.")
        try:
            return sslobj.write(data)
        except _WANT as exc:
            # OpenSSL wants the same buffer again (Python allows it to move).
            return self._tls_retry(exc, self._timeout, sslobj.write, data)

    def send(self, data: Any, flags: int = 0) -> int:
        """Send ``data`` over TLS; return how many bytes went (all of them, once written)."""
        sslobj = self._sslobj
        if sslobj is None:
            return _plain_send(self, data, flags)
        if flags:
            raise ValueError(f"non-zero flags not allowed in calls to send() on {type(self)}")
        try:
            return sslobj.write(data)
        except _WANT as exc:
            return self._tls_retry(exc, self._timeout, sslobj.write, data)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Send all of ``data`` over TLS."""
        if self._sslobj is None:
            return _plain_sendall(self, data, flags)
        if flags:
            raise ValueError(
                f"non-zero flags not allowed in calls to sendall() on {type(self)}")
        with memoryview(data) as view, view.cast("B") as octets:
            total = len(octets)
            sent = 0
            while sent < total:
                sent += self.send(octets[sent:])
        return None

    # -- handshake, unwrap, accept -----------------------------------------------------------------

    def do_handshake(self, block: bool = False) -> None:
        """Perform the TLS handshake, waiting as needed within the socket's timeout.

        In non-blocking mode it raises the want-read/want-write errors, unless ``block``,
        which then waits without a timeout (the stdlib's rule).
        """
        self._check_connected()
        sslobj = self._sslobj
        if sslobj is None:
            raise ValueError(f"No SSL wrapper around {self}")
        timeout = None if block and self._timeout == 0.0 else self._timeout
        try:
            sslobj.do_handshake()
        except _WANT as exc:
            self._tls_retry(exc, timeout, sslobj.do_handshake)

    def unwrap(self) -> SSLSocket:
        """Send TLS's close_notify, wait for the peer's, and return the socket, now plain."""
        sslobj = self._sslobj
        if not sslobj:
            raise ValueError(f"No SSL wrapper around {self}")
        try:
            plain = sslobj.shutdown()
        except _WANT as exc:
            plain = self._tls_retry(exc, self._timeout, sslobj.shutdown)
        self._sslobj = None
        result: SSLSocket = plain
        return result

    def accept(self) -> tuple[SSLSocket, Any]:
        """Accept a connection and wrap it server-side with this socket's context.

        The handshake happens here when ``do_handshake_on_connect`` is set (the stdlib's
        rule): a server with many clients should accept plain connections and wrap each in
        its own task (``serve_tcp`` does).
        """
        conn, addr = _plain_accept(self)
        tls = SSLSocket._create(
            conn, server_side=True, do_handshake_on_connect=self.do_handshake_on_connect,
            suppress_ragged_eofs=self.suppress_ragged_eofs, context=self.context)
        return tls, addr


class SSLContext(_std_ssl.SSLContext):
    """The stdlib's ``SSLContext`` whose ``wrap_socket`` makes cooperative :class:`SSLSocket`."""

    sslsocket_class = SSLSocket


def create_default_context(
    purpose: _std_ssl.Purpose = _std_ssl.Purpose.SERVER_AUTH,
    *,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
) -> SSLContext:
    """The stdlib's ``create_default_context``, as a :class:`SSLContext` of this module."""
    context = _std_ssl.create_default_context(purpose, cafile=cafile, capath=capath,
                                              cadata=cadata)
    # Same instance layout (no slots added), so the class can be swapped in place rather than
    # repeating the stdlib's choice of settings here.
    context.__class__ = SSLContext
    return context  # type: ignore[return-value]


def wrap_socket(
    sock: _std_socket.socket,
    context: _std_ssl.SSLContext | None = None,
    *,
    server_side: bool = False,
    server_hostname: str | None = None,
    do_handshake_on_connect: bool = True,
    suppress_ragged_eofs: bool = True,
    session: _std_ssl.SSLSession | None = None,
) -> SSLSocket:
    """Wrap ``sock`` (cooperative or stdlib, which is converted) in TLS with ``context``.

    ``context`` may be any stdlib ``ssl.SSLContext``; None means
    :func:`create_default_context` for a client (a server must bring its certificate).
    ``sock`` is detached: use the returned socket.  With ``do_handshake_on_connect`` (the
    default) a connected socket's handshake happens here, parking the task.
    """
    if context is None:
        if server_side:
            raise ValueError("a server needs a context with its certificate loaded")
        context = create_default_context()
    return SSLSocket._create(
        sock, server_side=server_side, do_handshake_on_connect=do_handshake_on_connect,
        suppress_ragged_eofs=suppress_ragged_eofs, server_hostname=server_hostname,
        context=context, session=session)


def __getattr__(name: str) -> Any:
    """Every other name of the stdlib's ``ssl`` module, unchanged."""
    try:
        return getattr(_std_ssl, name)
    except AttributeError:
        raise AttributeError(f"module 'stackful.ssl' has no attribute {name!r}") from None
