"""TCP servers: ``serve_tcp(handler, host, port)`` runs ``handler(conn, addr)`` in a task per
connection, with plain sequential code in the handler::

    def echo(conn, addr):
        while data := conn.recv(65536):
            conn.sendall(data)

    stackful.run(serve_tcp, echo, "127.0.0.1", 8000)

Rules:

* Each connection gets its own task with a small stack (:data:`CONNECTION_STACK_SIZE`), and
  its socket is closed when the handler returns or raises.  With ``ssl=context`` the TLS
  handshake runs in that task too, bounded by ``ssl_handshake_timeout``.
* A handler's exception ends only its own connection: it goes to the runtime's excepthook
  (``Runtime(excepthook=...)``; by default the traceback is printed) and the server goes on.
* The kernel queues at most ``backlog`` connections not yet accepted; ``max_connections``
  (default: no limit) stops accepting while that many handlers run.
* Stopping: :meth:`Server.close` (from any task; ``ready`` hands the :class:`Server` over)
  or cancelling the task running ``serve_tcp`` stops accepting at once, lets running handlers
  finish for ``grace`` seconds, then cancels the rest and waits for them: every handler's
  ``finally`` runs before ``serve_tcp`` returns (or re-raises the cancellation).  The
  handlers are the children of a :class:`TaskGroup` the serving task owns, which is what
  guarantees that; ``TaskGroup.start(serve_tcp, ...)`` returns the :class:`Server` once it
  listens.

Why a module of its own: sockets are a type with the stdlib's API; a server is a policy
(tasks, limits, stopping) built on that type and on the runtime, and changes for other reasons.
"""

from __future__ import annotations

import errno
import socket as _std_socket
import ssl as _std_ssl
from collections.abc import Callable
from typing import Any

from ._sockets import create_server, getaddrinfo, socket
from .lowlevel import Task, WaitQueue, current_runtime, current_task, current_time
from .runtime_api import ClosedResourceError, TaskExceptHookArgs, TaskGroup, TaskStatus
from .ssl import wrap_socket
from .timeouts import timeout as _timeout_scope

__all__ = ["CONNECTION_STACK_SIZE", "DEFAULT_BACKLOG", "Server", "serve_tcp"]

CONNECTION_STACK_SIZE = 256 * 1024
"""The default C stack of a connection's task.

A handler blocked in ``recv`` has touched 6 KiB of it (two pages), and only touched pages
cost memory; the size sets how deep the handler may go and its share of page tables (about
0.7 KiB per connection here, 4 KiB at the runtime's 2 MiB default).  256 KiB is the smallest
power of two at which a handler can still import a stdlib package for the first time on
3.11-3.13 (128 KiB: ``RecursionError``).  README, "Sizing stacks", says how to choose."""

DEFAULT_BACKLOG = 1024
"""Connections the kernel queues before ``accept`` (capped by ``net.core.somaxconn``)."""

# accept() errors that concern one connection, not the listener: skip it and go on.
_ACCEPT_SKIP = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR})
# Out of file descriptors or memory: wait for a connection to end (or this long), then retry.
_ACCEPT_RESOURCE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_PAUSE = 0.1

Handler = Callable[[socket, Any], object]


class Server:
    """A listening socket and the tasks of its connections; see the module docstring.

    Made by :func:`serve_tcp`, which passes it to its ``ready`` callback; or directly, on a
    socket already listening, then :meth:`serve` in a task.  The server owns ``listener``
    from then on: it closes it when it stops.  A stdlib socket becomes a stackful one on the
    same file descriptor (the object given is detached: its accept would block the thread).
    """

    __slots__ = (
        "listener", "_handler", "_ssl", "_ssl_handshake_timeout", "_stack_size",
        "_max_connections", "_grace", "_connections", "_changed", "_closing", "_serving",
        "_accepted", "_address", "_group",
    )

    def __init__(
        self,
        listener: _std_socket.socket,
        handler: Handler,
        *,
        ssl: _std_ssl.SSLContext | None = None,
        ssl_handshake_timeout: float | None = 60.0,
        stack_size: int | None = CONNECTION_STACK_SIZE,
        max_connections: int | None = None,
        grace: float = 5.0,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"max_connections must be >= 1 or None, got {max_connections!r}")
        if grace < 0:
            raise ValueError(f"grace must be >= 0, got {grace!r}")
        self.listener = listener = _adopt_listener(listener)
        self._address = listener.getsockname()
        self._handler = handler
        self._ssl = ssl
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._stack_size = stack_size
        self._max_connections = max_connections
        self._grace = grace
        # The task of each running handler, with its connection.
        self._connections: dict[Task, socket] = {}
        # The serving task parks here for "a handler finished" or "close() was called".
        self._changed = WaitQueue()
        self._closing = False
        self._serving = False
        self._accepted = 0
        # The handlers' group (owned by the serving task), while it serves.
        self._group: TaskGroup | None = None

    @property
    def address(self) -> Any:
        """The address the server listens (or listened) on: its ``getsockname()``."""
        return self._address

    @property
    def port(self) -> int:
        """The TCP port the server listens on (useful after binding port 0)."""
        if not isinstance(self._address, tuple):
            raise ValueError(f"a server on {self._address!r} has no port (not an IP socket)")
        port: int = self._address[1]
        return port

    @property
    def connections(self) -> int:
        """How many handlers are running."""
        return len(self._connections)

    @property
    def closing(self) -> bool:
        """True once :meth:`close` was called or serving stopped."""
        return self._closing

    def close(self, grace: float | None = None) -> None:
        """Stop accepting now; ``serve`` then winds the handlers down and returns.

        Handlers get ``grace`` seconds (default: the server's) to finish before they are
        cancelled.  Returns at once; join the serving task to wait for the end.
        """
        if grace is not None:
            if grace < 0:
                raise ValueError(f"grace must be >= 0, got {grace!r}")
            self._grace = grace
        self._closing = True
        self.listener.close()  # a waiting accept() wakes with ClosedResourceError
        self._changed.wake_all()

    def serve(self) -> None:
        """Accept connections until :meth:`close` or cancellation, then stop gracefully."""
        if self._serving:
            raise RuntimeError("this server is already serving")
        self._serving = True
        try:
            with TaskGroup(name="server") as group:
                self._group = group
                try:
                    self._accept_loop()
                finally:
                    self._wind_down(group)
        finally:
            self._group = None
            # Handlers cancelled before they began never closed their connection.
            for conn in self._connections.values():
                conn.close()
            self._connections.clear()

    # -- accepting ------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self.listener
        limit = self._max_connections
        group = self._group
        assert group is not None
        while not self._closing:
            if limit is not None and len(self._connections) >= limit:
                self._prune()
                if len(self._connections) >= limit:
                    self._park("Server: at max_connections", None)
                continue
            try:
                conn, addr = listener.accept()
            except OSError as exc:
                if self._closing:
                    return  # close() closed the listener under us
                if isinstance(exc, ClosedResourceError):
                    raise  # closed by someone else than close()
                if exc.errno in _ACCEPT_SKIP:
                    continue
                if exc.errno in _ACCEPT_RESOURCE:
                    self._park("Server: out of file descriptors or memory", _ACCEPT_PAUSE)
                    continue
                raise
            self._accepted += 1
            # No local keeps the task (nor the socket) while the loop waits for the next one.
            # A plain function and the server as its argument, not a bound method: one
            # object less for every connection while it lives (its task's frame holds both).
            self._connections[group.spawn(_run_connection, self, conn, addr,
                                          name=f"conn-{self._accepted}",
                                          stack_size=self._stack_size)] = conn
            del conn, addr

    def _prune(self) -> None:
        """Forget connections whose task ended without running (cancelled before it began)."""
        for task, conn in list(self._connections.items()):
            if task.done():
                del self._connections[task]
                conn.close()

    # -- stopping -------------------------------------------------------------------------------

    def _park(self, reason: str, timeout: float | None) -> None:
        self._changed.park_for(current_task(), reason, timeout)

    def _wind_down(self, group: TaskGroup) -> None:
        """Stop accepting; give the handlers the grace period; then cancel the rest (the
        group's end waits for them).  An interruption while waiting cancels them at once."""
        self._closing = True
        self.listener.close()
        deadline = current_time() + self._grace
        while True:
            self._prune()
            left = deadline - current_time()
            if not self._connections or left <= 0:
                break
            self._park("Server: grace period", left)
        group.cancel()


def _adopt_listener(listener: _std_socket.socket) -> socket:
    """The socket a server accepts on: a listening TCP socket, stackful's or the stdlib's.

    A stdlib socket (one inherited from a parent process, say) would block the whole thread
    in ``accept``: it becomes a stackful socket on the same file descriptor, and the object
    given is detached (its ``fileno()`` is -1 after).  Either way the server owns the socket
    from here (it closes it when it stops) and accepts in blocking mode: a timeout set on
    it would otherwise end the server at the first quiet spell."""
    if not isinstance(listener, _std_socket.socket):
        raise TypeError(f"the listener must be a socket, got {type(listener).__name__}")
    if isinstance(listener, _std_ssl.SSLSocket):
        raise TypeError("the listener must be a plain socket: pass the SSLContext as ssl=")
    if listener.fileno() < 0:
        raise ValueError("the listener is closed")
    if listener.type != _std_socket.SOCK_STREAM:
        raise ValueError(f"the listener must be a SOCK_STREAM socket, got {listener.type!r}")
    if not listener.getsockopt(_std_socket.SOL_SOCKET, _std_socket.SO_ACCEPTCONN):
        raise ValueError("the listener is not listening: call its listen() first")
    if not isinstance(listener, socket):
        listener = socket(listener.family, listener.type, listener.proto, listener.detach())
    listener.settimeout(None)
    return listener


def _listen(host: str | None, port: int, backlog: int, reuse_port: bool) -> socket:
    """A listening socket for ``host`` (None or "": every address, IPv6 and IPv4 if it can)."""
    if not host:
        from socket import AF_INET6, has_dualstack_ipv6

        if has_dualstack_ipv6():
            return create_server(("", port), family=AF_INET6, backlog=backlog,
                                 reuse_port=reuse_port, dualstack_ipv6=True)
        return create_server(("", port), backlog=backlog, reuse_port=reuse_port)
    from socket import AI_PASSIVE, SOCK_STREAM

    family = getaddrinfo(host, port, 0, SOCK_STREAM, 0, AI_PASSIVE)[0][0]
    return create_server((host, port), family=family, backlog=backlog, reuse_port=reuse_port)


def _run_connection(server: Server, conn: socket, addr: Any) -> None:
    # The task of one connection.  A handler's exception is reported here rather than left
    # to end the task: the server joins its handlers when it stops, and a join takes the
    # exception for itself (the runtime would then never report it).
    task = current_task()
    try:
        try:
            if server._ssl is not None:
                with _timeout_scope(server._ssl_handshake_timeout):
                    conn = wrap_socket(conn, server._ssl, server_side=True)
            server._handler(conn, addr)
        finally:
            conn.close()
    except Exception as exc:
        hook = current_runtime().excepthook
        hook(TaskExceptHookArgs(type(exc), exc, exc.__traceback__, task))
    finally:
        server._connections.pop(task, None)
        del task  # a traceback keeps this frame: it must not keep the task too
        if server._changed:
            server._changed.wake_all()


def serve_tcp(
    handler: Handler,
    host: str | None = None,
    port: int | None = None,
    *,
    sock: _std_socket.socket | None = None,
    backlog: int = DEFAULT_BACKLOG,
    ssl: _std_ssl.SSLContext | None = None,
    ssl_handshake_timeout: float | None = 60.0,
    stack_size: int | None = CONNECTION_STACK_SIZE,
    max_connections: int | None = None,
    grace: float = 5.0,
    reuse_port: bool = False,
    ready: Callable[[Server], object] | None = None,
    task_status: TaskStatus | None = None,
) -> None:
    """Serve TCP on ``(host, port)``: ``handler(conn, addr)`` in a new task per connection.

    Runs in the calling task until the server is closed (:meth:`Server.close`) or the task
    is cancelled; either way it stops accepting, gives running handlers ``grace`` seconds,
    cancels the rest and returns once every handler has finished (re-raising a
    cancellation).  ``host`` None or "" listens on every address (IPv6 and IPv4 where the
    system can); a name listens on its first address; ``port`` 0 picks a free port.
    ``ready(server)`` is called once listening (``server.port``, ``server.close()``);
    run by ``TaskGroup.start(serve_tcp, ...)``, that call returns the server then.
    ``ssl`` is a server ``ssl.SSLContext``: each connection's handshake runs in its own
    task.  ``stack_size`` is each connection task's C stack (see README, "Sizing stacks").
    ``sock``, instead of ``host`` and ``port``, is a stream socket already listening, TCP or
    Unix (stackful's or the stdlib's, such as one inherited from a parent process): the
    server takes it over and closes it when it stops (a stdlib socket object is detached;
    see :class:`Server`).
    The rest: see the module docstring.
    """
    if sock is not None:
        if host is not None or port is not None:
            raise ValueError("serve_tcp() takes sock, or host and port, not both")
        listener = _adopt_listener(sock)
    elif port is None:
        raise TypeError("serve_tcp() needs a port (0: any free one), or sock=")
    else:
        listener = _listen(host, port, backlog, reuse_port)
    try:
        server = Server(listener, handler, ssl=ssl, ssl_handshake_timeout=ssl_handshake_timeout,
                        stack_size=stack_size, max_connections=max_connections, grace=grace)
        if ready is not None:
            ready(server)
        if task_status is not None:
            task_status.started(server)
    except BaseException:
        listener.close()
        raise
    server.serve()
