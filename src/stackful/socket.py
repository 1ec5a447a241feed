"""Cooperative sockets: ``from stackful import socket`` stands in for ``import socket``.

Every constant, exception and helper of the stdlib's ``socket`` module is here unchanged;
:class:`socket`, :func:`create_connection`, :func:`create_server`, :func:`socketpair` and
:func:`fromfd` make cooperative sockets, whose blocking calls park the running task inside a
runtime and block the thread, exactly like the stdlib's, outside one.
:func:`from_stdlib_socket` converts an existing socket.  ``getaddrinfo``/``getnameinfo``
(and so ``create_connection``) resolve names on a worker thread in a task (``to_thread``), so
the task parks while a name server answers.  How it works, and the rules:
the docstring of :mod:`stackful._sockets`.
"""

import socket as _std
from typing import TYPE_CHECKING

from ._sockets import create_connection as create_connection
from ._sockets import create_server as create_server
from ._sockets import from_stdlib_socket as from_stdlib_socket
from ._sockets import fromfd as fromfd
from ._sockets import getaddrinfo as getaddrinfo
from ._sockets import getnameinfo as getnameinfo
from ._sockets import socket as socket
from ._sockets import socketpair as socketpair

_OURS = ("create_connection", "create_server", "from_stdlib_socket", "fromfd", "getaddrinfo",
         "getnameinfo", "socket", "socketpair")

if TYPE_CHECKING:
    # For type checkers the names above, bound first, keep their own types.
    from socket import *  # type: ignore[assignment]  # noqa: F403
else:
    globals().update({name: getattr(_std, name) for name in _std.__all__ if name not in _OURS})

__all__ = [*_std.__all__, "from_stdlib_socket"]
