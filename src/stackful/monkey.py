"""Make existing blocking code cooperative: ``stackful.monkey.patch_all()``.

After ``patch_all()`` a library written for threads -- ``urllib``, ``http.client``, ``smtplib``,
redis-py, a pure-Python database driver -- runs unchanged inside tasks, and its waits park the
task instead of the thread::

    import stackful, stackful.monkey
    stackful.monkey.patch_all()          # once, at start-up, before the libraries make objects

Every patched callable **dispatches**: called in a task of the runtime running on this thread,
it parks the task; called anywhere else -- a plain thread, the scheduler itself, a thread with
no runtime -- it does exactly what the stdlib's does.  Threads stay real OS threads (unlike
gevent, ``threading.Thread`` is not replaced), so code in other threads keeps working, and
objects shared between tasks and threads (a ``threading.Lock``, a ``queue.Queue``) serve both.

What each patch replaces (``patch_X()`` applies one, ``is_patched("X")`` tells):

* ``time``: ``time.sleep``.
* ``socket``: ``socket.socket`` (the class: stackful's cooperative subclass),
  ``create_connection``, ``create_server``, ``socketpair``, ``fromfd``.
* ``dns``: ``socket.getaddrinfo``, ``getnameinfo``, ``gethostbyname``, ``gethostbyname_ex``,
  ``gethostbyaddr`` (and so ``getfqdn``) run on a worker thread (``stackful.to_thread``).
* ``ssl``: every ``ssl.SSLContext``'s ``sslsocket_class`` (so ``wrap_socket`` makes
  cooperative TLS sockets), ``ssl.create_connection``.
* ``select``: ``select.select``, ``select.poll``, ``select.epoll``, and the stdlib objects
  ``selectors.PollSelector``/``EpollSelector`` (``DefaultSelector``) build on.
* ``threading``: ``threading.Lock`` (and ``_allocate_lock``) and ``RLock`` become hybrid locks
  (:mod:`stackful._hybrid_locks`) that park a task and block a thread, correct when tasks of
  any runtimes and plain threads share one; ``Condition``, ``Event``, ``Semaphore``,
  ``BoundedSemaphore``, ``Barrier`` and ``Timer`` are the stdlib's code on top of them.
  ``Thread.join`` in a task waits on a worker thread.
* ``queue``: ``queue.SimpleQueue`` becomes hybrid; ``Queue``, ``LifoQueue`` and
  ``PriorityQueue`` are built on ``threading``'s locks, so this patch applies ``threading`` too.
* ``subprocess``: ``subprocess.Popen``, ``run``, ``call``, ``check_call``, ``check_output``,
  ``getoutput`` and ``getstatusoutput`` are :mod:`stackful.subprocess`'s (``os.popen`` follows).

Only objects made after the patch are cooperative: a socket or selector made before it stays
the stdlib's.  :func:`unpatch_all` puts the originals back (for tests).
"""

from __future__ import annotations

import _thread
import functools
import operator
import queue as _queue
import select as _select
import selectors as _selectors
import socket as _socket
import ssl as _ssl
import subprocess as _subprocess
import sys
import threading as _threading
import time as _time
from collections.abc import Callable
from typing import Any

from . import _hybrid_locks, _monkey_select, _sockets
from . import ssl as _stackful_ssl
from . import subprocess as _stackful_subprocess
from ._core import to_thread
from ._native import get_thread_scheduler
from ._native import sleep as _fiber_sleep

__all__ = [
    "is_patched", "patch_all", "patch_dns", "patch_queue", "patch_select", "patch_socket",
    "patch_ssl", "patch_subprocess", "patch_threading", "patch_time", "unpatch", "unpatch_all",
]

_MISSING = object()
_guard = _thread.allocate_lock()
# name -> what it replaced, as (owner, attribute, original or _MISSING), in the order applied.
_applied: dict[str, list[tuple[Any, str, Any]]] = {}
_NAMES = ("time", "socket", "dns", "ssl", "select", "threading", "queue", "subprocess")


def _apply(name: str, changes: Callable[[], list[tuple[Any, str, Any]]]) -> None:
    """Apply ``changes()`` (owner, attribute, new value) under ``name``, once."""
    with _guard:
        if name in _applied:
            return
        saved: list[tuple[Any, str, Any]] = []
        try:
            for owner, attr, value in changes():
                saved.append((owner, attr, vars(owner).get(attr, _MISSING)))
                setattr(owner, attr, value)
        except BaseException:
            _restore(saved)
            raise
        _applied[name] = saved


def _restore(saved: list[tuple[Any, str, Any]]) -> None:
    for owner, attr, original in reversed(saved):
        if original is _MISSING:
            delattr(owner, attr)
        else:
            setattr(owner, attr, original)


def is_patched(name: str) -> bool:
    """True if the patch ``name`` (``"time"``, ``"socket"``, ...) is applied."""
    if name not in _NAMES:
        raise ValueError(f"no patch named {name!r}; the patches are {', '.join(_NAMES)}")
    return name in _applied


def unpatch(name: str) -> None:
    """Put back what the patch ``name`` replaced (a no-op if it is not applied).

    Objects made while it was applied (cooperative sockets, hybrid locks) stay what they are.
    """
    is_patched(name)  # checks the name
    with _guard:
        saved = _applied.pop(name, None)
        if saved is not None:
            _restore(saved)


def unpatch_all() -> None:
    """Put back everything the patches replaced, newest first."""
    for name in reversed(list(_applied)):
        unpatch(name)


def patch_all(*, time: bool = True, socket: bool = True, dns: bool = True, ssl: bool = True,
              select: bool = True, threading: bool = True, queue: bool = True,
              subprocess: bool = True) -> None:
    """Apply every patch (or those left True); each is applied once however often called."""
    if time:
        patch_time()
    if socket:
        patch_socket()
    if dns:
        patch_dns()
    if select:
        patch_select()
    if ssl:
        patch_ssl()
    if threading:
        patch_threading()
    if queue:
        patch_queue()
    if subprocess:
        patch_subprocess()


# -- time -----------------------------------------------------------------------------------------

_std_sleep = _time.sleep


def sleep(secs: float, /) -> None:
    """``time.sleep``: in a task of this thread's runtime, ``stackful.sleep`` (the task parks,
    on the runtime's clock); elsewhere the stdlib's."""
    rt = get_thread_scheduler()
    if rt is None or rt.current is None:
        return _std_sleep(secs)
    if isinstance(secs, float):
        seconds = float(secs)
    else:
        try:
            seconds = float(operator.index(secs))
        except TypeError:
            return _std_sleep(secs)  # raises the stdlib's TypeError
    if not 0.0 <= seconds < _monkey_select._MAX_SECONDS:
        return _std_sleep(secs)  # raises the stdlib's ValueError or OverflowError
    _fiber_sleep(seconds)
    return None


def patch_time() -> None:
    """``time.sleep`` parks a task (see :func:`sleep`)."""
    _apply("time", lambda: [(_time, "sleep", sleep)])


# -- socket ---------------------------------------------------------------------------------------


def patch_socket() -> None:
    """``socket.socket`` and its constructors make cooperative sockets (:mod:`stackful.socket`).

    The stdlib's own helpers look ``socket`` up in their module when called, so
    ``http.client``, ``urllib``, ``smtplib``, ``ftplib`` and ``socketserver`` get cooperative
    sockets; a socket outside a task blocks the thread exactly like the stdlib's, so code in
    plain threads (and ``asyncio``, whose sockets are non-blocking) is unaffected.
    """
    _apply("socket", lambda: [
        (_socket, "socket", _sockets.socket),
        (_socket, "create_connection", _sockets.create_connection),
        (_socket, "create_server", _sockets.create_server),
        (_socket, "socketpair", _sockets.socketpair),
        (_socket, "fromfd", _sockets.fromfd),
    ])


# -- ssl ------------------------------------------------------------------------------------------


def patch_ssl() -> None:
    """``SSLContext.wrap_socket`` makes cooperative TLS sockets (:mod:`stackful.ssl`).

    ``ssl.create_connection`` (which ``ssl.get_server_certificate`` uses) is stackful's too.
    Memory-BIO TLS (``wrap_bio``, what asyncio uses) does no I/O and is left alone.
    """
    _apply("ssl", lambda: [
        (_ssl.SSLContext, "sslsocket_class", _stackful_ssl.SSLSocket),
        (_ssl, "create_connection", _sockets.create_connection),
    ])


# -- select ---------------------------------------------------------------------------------------


def patch_select() -> None:
    """``select.select``, ``select.poll`` and ``select.epoll`` park a task (see
    :mod:`stackful._monkey_select`), and so do the selectors made afterwards
    (``selectors.DefaultSelector``, ``PollSelector``, ``SelectSelector``)."""

    def changes() -> list[tuple[Any, str, Any]]:
        out: list[tuple[Any, str, Any]] = [
            (_select, "select", _monkey_select.select),
            (_select, "poll", _monkey_select.poll),
            (_select, "epoll", _monkey_select.epoll),
            # Bound when selectors was imported.
            (_selectors.PollSelector, "_selector_cls", _monkey_select.poll),
            (_selectors.EpollSelector, "_selector_cls", _monkey_select.epoll),
        ]
        if vars(_selectors.SelectSelector).get("_select") is _monkey_select.std_select:
            # A builtin there is no method; a staticmethod keeps ours one too.
            out.append((_selectors.SelectSelector, "_select",
                        staticmethod(_monkey_select.select)))
        pty = sys.modules.get("pty")  # did `from select import select`
        if pty is not None and getattr(pty, "select", None) is _monkey_select.std_select:
            out.append((pty, "select", _monkey_select.select))
        return out

    _apply("select", changes)


# -- dns ------------------------------------------------------------------------------------------


def _on_worker_thread(original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` run by ``to_thread`` in a task of this thread's runtime, else directly."""

    @functools.wraps(original)
    def call(*args: Any) -> Any:
        rt = get_thread_scheduler()
        if rt is None or rt.current is None:
            return original(*args)
        return to_thread(original, *args)

    return call


def patch_dns() -> None:
    """Host name lookups park a task while a worker thread asks the name server.

    ``getaddrinfo``/``getnameinfo`` are :mod:`stackful.socket`'s (an IP literal resolves at
    once); ``gethostbyname``, ``gethostbyname_ex`` and ``gethostbyaddr`` (which ``getfqdn``
    calls) go to ``stackful.to_thread`` likewise.  Outside a task they are the stdlib's.
    """
    _apply("dns", lambda: [
        (_socket, "getaddrinfo", _sockets.getaddrinfo),
        (_socket, "getnameinfo", _sockets.getnameinfo),
        *[(_socket, name, _on_worker_thread(getattr(_socket, name)))
          for name in ("gethostbyname", "gethostbyname_ex", "gethostbyaddr")],
    ])


# -- threading and queue --------------------------------------------------------------------------


def patch_threading() -> None:
    """``threading``'s locks become hybrid (see :mod:`stackful._hybrid_locks`).

    ``threading.Lock``, ``_allocate_lock`` and ``RLock`` are replaced; everything the stdlib
    builds on them (``Condition``, ``Event``, ``Semaphore``, ``BoundedSemaphore``, ``Barrier``,
    ``Timer``, ``Thread.start``'s wait, ``queue.Queue``, ``concurrent.futures.Future``) waits
    cooperatively in a task once made after this call.  ``Thread.join`` in a task waits on a
    worker thread.  Threads stay OS threads; ``threading.local`` and ``current_thread()`` are
    per thread, so tasks of one thread share them.
    """
    _apply("threading", lambda: [
        (_threading, "Lock", _hybrid_locks.Lock),
        (_threading, "_allocate_lock", _hybrid_locks.Lock),
        (_threading, "RLock", _hybrid_locks.RLock),
        (_threading.Thread, "join", _hybrid_locks.thread_join(_threading.Thread.join)),
    ])


def patch_queue() -> None:
    """``queue.SimpleQueue`` becomes hybrid; applies :func:`patch_threading` (which
    ``queue.Queue``, ``LifoQueue`` and ``PriorityQueue`` are built on) too."""
    patch_threading()
    _apply("queue", lambda: [(_queue, "SimpleQueue", _hybrid_locks.SimpleQueue)])


# -- subprocess -----------------------------------------------------------------------------------

_SUBPROCESS_NAMES = ("Popen", "run", "call", "check_call", "check_output", "getoutput",
                     "getstatusoutput")


def patch_subprocess() -> None:
    """``subprocess.Popen`` and its helpers are :mod:`stackful.subprocess`'s: waits, pipes and
    ``communicate`` park a task; outside a runtime they block the thread like the stdlib's.

    ``os.popen`` looks ``subprocess.Popen`` up when called, so it follows.  A ``Popen`` made
    before the patch stays the stdlib's.
    """
    _apply("subprocess", lambda: [(_subprocess, name, getattr(_stackful_subprocess, name))
                                  for name in _SUBPROCESS_NAMES])
