"""Cooperative subprocesses: ``from stackful import subprocess`` stands in for the stdlib's.

Every constant, exception and helper of the stdlib's ``subprocess`` is here unchanged (``PIPE``,
``DEVNULL``, ``STDOUT``, ``CompletedProcess``, ``CalledProcessError``, ``TimeoutExpired``...);
:class:`Popen`, :func:`run`, :func:`call`, :func:`check_call`, :func:`check_output`,
:func:`getoutput` and :func:`getstatusoutput` are cooperative.  Inside a task their waits park
the task, so other tasks run while a child works; outside a runtime they block the thread and
behave exactly like the stdlib's.

How it works.

* :class:`Popen` *is* a ``subprocess.Popen`` (a subclass).  Spawning is the stdlib's (a fork or
  ``posix_spawn`` and an exec, a millisecond or so on the thread).
* Its pipes are kept non-blocking and wrapped in :class:`stackful._pipes.PipeIO`, under the same
  ``io.BufferedReader``/``BufferedWriter``/``TextIOWrapper`` layers as the stdlib's (``text``,
  ``encoding``, ``errors``, ``universal_newlines``, ``bufsize`` as there), so reading
  ``proc.stdout`` or writing ``proc.stdin`` parks the task.  Handing one of these pipes to
  another child (``stdin=proc1.stdout``) puts it back in blocking mode, as the child expects.
* ``wait()`` notices the child's exit through a pidfd (``os.pidfd_open``, Linux 5.3+) waited
  readable; where the kernel or a sandbox refuses pidfds it polls ``waitpid(WNOHANG)``, sleeping
  1 ms, 2 ms, ... up to 50 ms in between (no SIGCHLD handler: the process's signal handling is
  left alone; no blocking ``waitpid`` through ``to_thread`` either: it would hold a worker of
  the shared pool for the child's whole life, and a cancellation could not stop it).
  Several tasks may wait for one child: one watches, the others queue behind it.
* ``communicate()`` multiplexes the pipes in one task, through a private epoll instance that the
  task waits readable on; it keeps the stdlib's rules (input written then stdin closed, output
  read to end of file, ``TimeoutExpired`` carrying what was read so far, a later call going on
  where a timed-out one stopped).

Timeouts are the stdlib's (``TimeoutExpired``, measured on ``time.monotonic``); a
``stackful.timeout()`` around a call works too and raises its ``TimeoutError``.

Cancellation and zombies.  A task cancelled in ``wait()`` or ``communicate()`` stops waiting;
the child keeps running, as a stdlib child does when its waiting thread gives up, and the
``Popen`` reaps it later (a later ``wait()``/``poll()``, or the stdlib's own clean-up of a
dropped ``Popen``).  :func:`run` and :func:`call` kill the child when their task is cancelled
or times out, as the stdlib's do on any exception, and reap it with interruptions held back
(``lowlevel.call_shielded``), so no zombie is left behind.  A ``Popen`` serves one runtime at
a time: used from another thread's runtime while its own still runs, it raises
``RuntimeError``.
"""

from __future__ import annotations

import errno as _errno
import inspect as _inspect
import os as _os
import select as _select
import subprocess as _std
import time as _time
from collections.abc import Callable
from subprocess import (  # noqa: F401  (re-exported)
    DEVNULL,
    PIPE,
    STDOUT,
    CalledProcessError,
    CompletedProcess,
    SubprocessError,
    TimeoutExpired,
)
from typing import TYPE_CHECKING, Any, AnyStr, NoReturn

from ._core import Task
from ._core import current_runtime_or_none as _runtime_or_none
from ._pipes import pipe_layers as _pipe_layers
from ._pipes import pipe_of_fd as _pipe_of_fd
from .lowlevel import RuntimeBinding as _RuntimeBinding
from .lowlevel import WaitQueue as _WaitQueue
from .lowlevel import call_shielded as _call_shielded
from .lowlevel import timeout_scope as _timeout_scope
from .runtime_api import sleep as _sleep
from .runtime_api import wait_readable as _wait_readable
from .runtime_api import yield_now as _yield_now

__all__ = [
    "DEVNULL", "PIPE", "STDOUT", "CalledProcessError", "CompletedProcess", "Popen",
    "SubprocessError", "TimeoutExpired", "call", "check_call", "check_output", "getoutput",
    "getstatusoutput", "run",
]

_monotonic = _time.monotonic
_POPEN_SIGNATURE = _inspect.signature(_std.Popen.__init__)

# Without a pidfd, the exit is polled with these sleeps in between (doubling).
_FIRST_POLL_DELAY = 0.001
_MAX_POLL_DELAY = 0.05
# communicate(): a write to a non-blocking pipe takes what fits, so offer it plenty; reads
# take up to a pipe's default capacity.
_WRITE_CHUNK = 1 << 20
_READ_CHUNK = 65536
# communicate() lets other tasks run after this many rounds that found every pipe ready.
_ROUNDS_BEFORE_YIELD = 16

# False once the kernel (or a seccomp sandbox) has refused a pidfd: poll from then on.
_pidfd_works = hasattr(_os, "pidfd_open")


def _open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``, or None (no pidfds here, or not now)."""
    global _pidfd_works
    if not _pidfd_works:
        return None
    try:
        return _os.pidfd_open(pid)
    except OSError as exc:
        # EMFILE/ENFILE pass; ESRCH means the child is gone (the next poll sees it).
        if exc.errno not in (_errno.EMFILE, _errno.ENFILE, _errno.ESRCH):
            _pidfd_works = False  # ENOSYS, EPERM, EACCES...: never on this system
        return None


class _PidFD:
    """An open pidfd, closed by :meth:`close` or when dropped."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self, _close: Callable[[int], None] = _os.close) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            _close(fd)

    def __del__(self) -> None:
        self.close()


def _runtime_here() -> bool:
    """True when a runtime runs on this thread: waits park the task (or fail, in the hub)."""
    return _runtime_or_none() is not None


def _share_if_ours(stdio: Any) -> None:
    """``stdio`` (a Popen argument) goes to a child: if it is one of our pipes, make it blocking."""
    if stdio is None or (isinstance(stdio, int) and stdio < 0):
        return  # None, PIPE, STDOUT, DEVNULL
    try:
        fd = stdio if isinstance(stdio, int) else stdio.fileno()
    except (AttributeError, ValueError, OSError):
        return  # the stdlib reports it
    pipe = _pipe_of_fd(fd)
    if pipe is not None:
        pipe.share_with_child()


class _Popen(_std.Popen[AnyStr]):
    """A ``subprocess.Popen`` whose waits park the running task (see the module docstring).

    The constructor takes the stdlib's arguments.  ``wait``, ``communicate`` and the pipes
    ``stdin``/``stdout``/``stderr`` park the task inside a runtime and block the thread
    outside one; ``poll``, ``send_signal``, ``terminate`` and ``kill`` never block.
    """

    _binding: _RuntimeBinding
    # The stdlib's own state, which communicate() shares with it (a call timed out inside a
    # task may be taken up again outside one).
    text_mode: bool
    _communication_started: bool
    _fileobj2output: dict[Any, list[bytes]]
    _input: Any
    _input_offset: int
    # Invariant: _exit_watcher is the one task waiting on the pidfd (or polling) for this
    # child, or None; other tasks waiting for the exit park in _exit_waiters, woken when the
    # watcher stops watching.  Only the runtime's side closes the pidfd, never while watched.
    _exit_watcher: Task | None
    _exit_waiters: _WaitQueue
    _pidfd: _PidFD | None
    _poll_delay: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Start the child, as ``subprocess.Popen(...)``; its pipes are cooperative."""
        self._binding = _RuntimeBinding("Popen")
        self._exit_watcher = None
        self._exit_waiters = _WaitQueue()
        self._pidfd = None
        self._poll_delay = _FIRST_POLL_DELAY
        try:
            given = _POPEN_SIGNATURE.bind(self, *args, **kwargs).arguments
        except TypeError:
            given = {}  # the stdlib's constructor says what is wrong
        for name in ("stdin", "stdout", "stderr"):
            _share_if_ours(given.get(name))
        for fd in given.get("pass_fds") or ():
            _share_if_ours(fd)
        super().__init__(*args, **kwargs)
        bufsize = given.get("bufsize", -1)
        if bufsize is None:
            bufsize = -1
        self.stdin = _pipe_layers(self.stdin, bufsize)
        self.stdout = _pipe_layers(self.stdout, bufsize)
        self.stderr = _pipe_layers(self.stderr, bufsize)

    # -- waiting for the exit ------------------------------------------------------------------

    def _wait(self, timeout: float | None) -> int:
        """The stdlib's ``wait()`` body (``wait`` adds the Ctrl-C grace period around it)."""
        if not _runtime_here():
            rc: int = super()._wait(timeout)  # type: ignore[misc]
            return rc
        task = self._binding.task("wait")
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            rc = self.poll()  # type: ignore[assignment]
            if rc is not None:
                if self._exit_watcher is None and self._pidfd is not None:
                    self._pidfd.close()
                    self._pidfd = None
                return rc
            remaining = None
            if deadline is not None:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    raise TimeoutExpired(self.args, timeout)
            if self._exit_watcher is not None:
                self._exit_waiters.park_for(task, "Popen.wait", remaining)
                continue
            self._exit_watcher = task
            try:
                self._watch_exit(remaining)
            finally:
                self._exit_watcher = None
                self._exit_waiters.wake_all()

    def _watch_exit(self, remaining: float | None) -> None:
        """Return once the child may have exited, or after ``remaining`` seconds."""
        if self._pidfd is None:
            fd = _open_pidfd(self.pid)
            if fd is not None:
                self._pidfd = _PidFD(fd)
        if self._pidfd is None:
            delay = self._poll_delay
            self._poll_delay = min(delay * 2, _MAX_POLL_DELAY)
            _sleep(delay if remaining is None else min(delay, remaining))
            return
        if remaining is None:
            _wait_readable(self._pidfd.fd)
            return
        scope = _timeout_scope(remaining, "Popen.wait")
        try:
            with scope:
                _wait_readable(self._pidfd.fd)
        except TimeoutError as exc:
            if not scope.owns(exc):
                raise

    # -- communicate ---------------------------------------------------------------------------

    def _communicate(
        self, input: Any, endtime: float | None, orig_timeout: float | None
    ) -> tuple[Any, Any]:
        """The stdlib's ``communicate()`` body, multiplexing the pipes in the running task."""
        if not _runtime_here():
            result: tuple[Any, Any] = super()._communicate(  # type: ignore[misc]
                input, endtime, orig_timeout)
            return result
        self._binding.task("communicate")
        started = self._communication_started
        stdin: Any = self.stdin
        if stdin and not started:
            try:
                stdin.flush()
            except BrokenPipeError:
                pass  # communicate() ignores a child that stopped reading
            except ValueError:
                if not stdin.closed:
                    raise
            if not input:
                try:
                    stdin.close()
                except BrokenPipeError:
                    pass
        if not started:
            self._fileobj2output = {f: [] for f in (self.stdout, self.stderr) if f}
        outputs: dict[Any, list[bytes]] = self._fileobj2output
        stdout = outputs[self.stdout] if self.stdout else None
        stderr = outputs[self.stderr] if self.stderr else None
        if stdin and self._input is None:
            self._input_offset = 0
            self._input = input
            if input is not None and self.text_mode:
                self._input = input.encode(stdin.encoding, stdin.errors)

        self._exchange(stdin, outputs, endtime, orig_timeout)
        try:
            self.wait(timeout=None if endtime is None else endtime - _monotonic())
        except TimeoutExpired as exc:
            if orig_timeout is not None:
                exc.timeout = orig_timeout  # the whole call's, not what was left of it
            raise

        return self._decoded(self.stdout, stdout), self._decoded(self.stderr, stderr)

    def _decoded(self, pipe: Any, chunks: list[bytes] | None) -> Any:
        """What communicate() returns for one pipe: bytes, or str in text mode, or None."""
        if chunks is None:
            return None
        data = b"".join(chunks)
        if not self.text_mode:
            return data
        return data.decode(pipe.encoding, pipe.errors).replace("\r\n", "\n").replace("\r", "\n")

    def _exchange(
        self,
        stdin: Any,
        outputs: dict[Any, list[bytes]],
        endtime: float | None,
        orig_timeout: float | None,
    ) -> None:
        """Write the rest of the input and read the pipes to end of file, until ``endtime``."""
        data = None
        if self._input:
            data = memoryview(self._input).cast("B")
        with _select.epoll() as ep:
            files: dict[int, Any] = {}
            if stdin and not stdin.closed and data is not None:
                if self._input_offset < len(data):
                    files[stdin.fileno()] = stdin
                    ep.register(stdin.fileno(), _select.EPOLLOUT)
            for f in outputs:
                if not f.closed:
                    files[f.fileno()] = f
                    ep.register(f.fileno(), _select.EPOLLIN)
            # A pipe handed to another child is in blocking mode: only what poll promised.
            blocking = {fd for fd in files if _os.get_blocking(fd)}
            rounds = 0
            while files:
                events = ep.poll(0)
                if not events:
                    self._wait_for_pipes(ep, endtime, orig_timeout, outputs)
                    continue
                for fd, _ in events:
                    f = files[fd]
                    if f is stdin:
                        assert data is not None
                        if self._write_input(fd, data, fd in blocking):
                            ep.unregister(fd)
                            del files[fd]
                            try:
                                stdin.close()
                            except BrokenPipeError:
                                pass
                        continue
                    try:
                        chunk = _os.read(fd, 32768 if fd in blocking else _READ_CHUNK)
                    except BlockingIOError:
                        continue
                    if chunk:
                        outputs[f].append(chunk)
                    else:
                        ep.unregister(fd)
                        del files[fd]
                        f.close()
                rounds += 1
                if rounds % _ROUNDS_BEFORE_YIELD == 0:
                    _yield_now()  # a child that keeps every pipe ready must not hog the thread

    def _write_input(self, fd: int, data: memoryview, blocking: bool) -> bool:
        """Write the next piece of the input to stdin; True when stdin is done with."""
        offset = self._input_offset
        with data[offset:offset + (_select.PIPE_BUF if blocking else _WRITE_CHUNK)] as chunk:
            try:
                offset += _os.write(fd, chunk)
            except BlockingIOError:
                return False
            except BrokenPipeError:
                return True  # the child stopped reading: communicate() goes on without it
        self._input_offset = offset
        return offset >= len(data)

    def _wait_for_pipes(
        self,
        ep: _select.epoll,
        endtime: float | None,
        orig_timeout: float | None,
        outputs: dict[Any, list[bytes]],
    ) -> None:
        """Park until a pipe is ready; ``TimeoutExpired`` (with the output so far) at endtime."""
        if endtime is None:
            _wait_readable(ep.fileno())
            return
        remaining = endtime - _monotonic()
        if remaining > 0:
            scope = _timeout_scope(remaining, "Popen.communicate")
            try:
                with scope:
                    _wait_readable(ep.fileno())
                return
            except TimeoutError as exc:
                if not scope.owns(exc):
                    raise
        stdout = outputs.get(self.stdout) if self.stdout else None
        stderr = outputs.get(self.stderr) if self.stderr else None
        raise TimeoutExpired(
            self.args, orig_timeout,  # type: ignore[arg-type]
            output=b"".join(stdout) if stdout else None,
            stderr=b"".join(stderr) if stderr else None,
        )


# Named where users import it from (repr, help, pickling).
_Popen.__name__ = _Popen.__qualname__ = "Popen"
if TYPE_CHECKING:
    # Type checkers see the stdlib's class, whose overloaded constructor tells Popen[bytes]
    # from Popen[str] (mypy does not carry those overloads over to a subclass).
    from subprocess import Popen as Popen
else:
    Popen = _Popen


# -- the convenience functions: the stdlib's, over the cooperative Popen -------------------------


def _kill_and_reap(process: Popen[Any], carry: BaseException) -> NoReturn:
    """Kill the child and reap it, interruptions held back; raise ``carry`` or a stronger one."""
    process.kill()
    if _runtime_here():
        _call_shielded(process.wait, carry)
    else:
        process.wait()
    raise carry


def run(
    *popenargs: Any,
    input: Any = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **kwargs: Any,
) -> CompletedProcess[Any]:
    """Run a command, wait for it, return a ``CompletedProcess`` -- as ``subprocess.run``.

    ``input`` goes to its stdin; ``capture_output=True`` captures stdout and stderr; past
    ``timeout`` seconds the child is killed and reaped and ``TimeoutExpired`` raised; with
    ``check=True`` a non-zero exit status raises ``CalledProcessError``.  Any other exception
    (``stackful.Cancelled`` included) kills and reaps the child too, then propagates.
    """
    if input is not None:
        if kwargs.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        kwargs["stdin"] = PIPE
    if capture_output:
        if kwargs.get("stdout") is not None or kwargs.get("stderr") is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        kwargs["stdout"] = PIPE
        kwargs["stderr"] = PIPE
    with Popen(*popenargs, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except BaseException as exc:  # TimeoutExpired carries the output read so far
            _kill_and_reap(process, exc)
        retcode = process.poll()
        assert retcode is not None
        if check and retcode:
            raise CalledProcessError(retcode, process.args, output=stdout, stderr=stderr)
    return CompletedProcess(process.args, retcode, stdout, stderr)


def call(*popenargs: Any, timeout: float | None = None, **kwargs: Any) -> int:
    """Run a command and return its exit status -- as ``subprocess.call``.

    Past ``timeout`` seconds (or on any exception) the child is killed and reaped, and the
    exception propagates.
    """
    with Popen(*popenargs, **kwargs) as p:
        try:
            return p.wait(timeout=timeout)
        except BaseException as exc:
            _kill_and_reap(p, exc)


def check_call(*popenargs: Any, **kwargs: Any) -> int:
    """Run a command; return 0, or raise ``CalledProcessError`` -- as ``subprocess.check_call``."""
    retcode = call(*popenargs, **kwargs)
    if retcode:
        cmd = kwargs.get("args")
        if cmd is None:
            cmd = popenargs[0]
        raise CalledProcessError(retcode, cmd)
    return 0


def check_output(*popenargs: Any, timeout: float | None = None, **kwargs: Any) -> Any:
    """Run a command and return its output; ``CalledProcessError`` on a non-zero status.

    As ``subprocess.check_output``: ``input=None`` given explicitly sends empty input.
    """
    for kw in ("stdout", "check"):
        if kw in kwargs:
            raise ValueError(f"{kw} argument not allowed, it will be overridden.")
    if "input" in kwargs and kwargs["input"] is None:
        text = (kwargs.get("universal_newlines") or kwargs.get("text")
                or kwargs.get("encoding") or kwargs.get("errors"))
        kwargs["input"] = "" if text else b""
    return run(*popenargs, stdout=PIPE, timeout=timeout, check=True, **kwargs).stdout


def getstatusoutput(
    cmd: Any, *, encoding: str | None = None, errors: str | None = None
) -> tuple[int, str]:
    """Return ``(exitcode, output)`` of ``cmd`` run by the shell -- as the stdlib's."""
    try:
        data = check_output(cmd, shell=True, text=True, stderr=STDOUT,
                            encoding=encoding, errors=errors)
        exitcode = 0
    except CalledProcessError as ex:
        data = ex.output
        exitcode = ex.returncode
    if data[-1:] == "\n":
        data = data[:-1]
    return exitcode, data


def getoutput(cmd: Any, *, encoding: str | None = None, errors: str | None = None) -> str:
    """Return the output (stdout and stderr) of ``cmd`` run by the shell -- as the stdlib's."""
    return getstatusoutput(cmd, encoding=encoding, errors=errors)[1]
