"""Real local servers for the client tests: redis-server, PostgreSQL, and the rendezvous server.

Session-scoped fixtures; each server runs in its own process, in a temporary directory, on a
free port of 127.0.0.1, and is stopped (and its directory removed) at the end of the session.

A server whose program is not installed skips its tests, unless the environment variable
``STACKFUL_REQUIRE_SERVICES`` is set (CI sets it, and installs Debian's ``redis-server`` and
``postgresql``): then a missing program fails them.  The same goes for the client libraries
(``redis``, ``pg8000``, ``requests``: the ``test`` extra).  A server that is installed but does
not start is always an error.
"""

from __future__ import annotations

import ctypes
import glob
import importlib
import os
import pwd
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

REQUIRE = "STACKFUL_REQUIRE_SERVICES"
STARTUP_DEADLINE = 60.0  # seconds for a server to accept connections (a loaded machine is slow)
STOP_DEADLINE = 30.0
PR_SET_PDEATHSIG = 1  # <sys/prctl.h>
PORT_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it
RENDEZVOUS_SCRIPT = Path(__file__).with_name("_rendezvous_server.py")


def services_required() -> bool:
    return os.environ.get(REQUIRE, "") not in ("", "0")


def missing(what: str, how: str) -> NoReturn:
    """Skip: ``what`` is not installed; or fail, when ``STACKFUL_REQUIRE_SERVICES`` is set."""
    if services_required():
        pytest.fail(f"{what} is not installed and {REQUIRE} is set ({how})", pytrace=False)
    pytest.skip(f"{what} is not installed ({how}; set {REQUIRE}=1 to make this a failure)")


def import_client(name: str) -> ModuleType:
    """Import a client library of the ``test`` extra, or skip/fail as :func:`missing` says."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"the Python package {name!r}", 'pip install ".[test]"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_until_ready(ready: Callable[[], bool], proc: subprocess.Popen[Any], what: str,
                     log: Path) -> bool:
    """Poll ``ready()`` until it is true (True), or the process has exited (False).

    Fails after :data:`STARTUP_DEADLINE` seconds, with the end of the server's log.
    """
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            return True
        time.sleep(0.05)
    stop_process(proc)
    raise RuntimeError(f"{what} did not accept connections in {STARTUP_DEADLINE:.0f} s; "
                       f"its log ends:\n{log_tail(log)}")


def dies_with_us(sig: int) -> Callable[[], None]:
    """A ``preexec_fn`` that has the kernel send ``sig`` to the child when this process dies
    (Linux's PR_SET_PDEATHSIG): a test run killed hard (a timeout, SIGKILL) leaves no server
    running.  It runs after Popen's change of account, which would otherwise clear it."""

    def preexec() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return preexec


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    """Ask ``proc`` to stop with ``sig``; kill it if it has not exited in time."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_DEADLINE)


# --- redis-server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session", name="redis_server")
def redis_server_fixture() -> Iterator[RedisServer]:
    """A fresh ``redis-server`` on 127.0.0.1 (no persistence), for the whole session."""
    program = shutil.which("redis-server")
    if program is None:
        missing("redis-server", "apt-get install redis-server")
    workdir = Path(tempfile.mkdtemp(prefix="stackful-redis-"))
    log = workdir / "redis.log"
    try:
        for _ in range(PORT_ATTEMPTS):
            port = free_port()
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    [program, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                     "--save", "", "--appendonly", "no", "--daemonize", "no",
                     "--maxclients", "1000"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    preexec_fn=dies_with_us(signal.SIGKILL))
            if wait_until_ready(partial(redis_ping, port), proc, "redis-server", log):
                break
        else:
            raise RuntimeError(f"redis-server did not start; its log ends:\n{log_tail(log)}")
        try:
            yield RedisServer("127.0.0.1", port)
        finally:
            stop_process(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- PostgreSQL -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    database: str = "postgres"
    max_connections: int = 0


def postgres_bindir() -> Path | None:
    """Where ``initdb`` and ``postgres`` are: ``pg_config --bindir``, Debian's versioned
    directories (newest first), or ``PATH``."""
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                           key=version, reverse=True)]
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in ("initdb", "postgres", "pg_isready")):
            return bindir
    return None


def server_account() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as: None (this one) unless we are root, which it refuses;
    then Debian's ``postgres`` account, else ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' account exists "
                       "to run PostgreSQL as (it refuses to run as root)")


def as_account(account: pwd.struct_passwd | None) -> dict[str, Any]:
    """Popen's arguments that run the child as ``account`` (it drops root itself, before exec:
    no runuser/setpriv in between, so signals go straight to the server)."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


@pytest.fixture(scope="session", name="postgres_server")
def postgres_server_fixture() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster (initdb) on 127.0.0.1, for the whole session.

    Password (SCRAM) authentication over TCP, as a real deployment has; 150 connections,
    so that 100 clients and the test's own fit; durability off (a throwaway cluster).
    """
    bindir = postgres_bindir()
    if bindir is None:
        missing("PostgreSQL (initdb, postgres)", "apt-get install postgresql")
    account = server_account()
    runas = as_account(account)
    workdir = Path(tempfile.mkdtemp(prefix="stackful-pg-"))
    try:
        if account is not None:
            os.chown(workdir, account.pw_uid, account.pw_gid)
        user, password = "stackful", secrets.token_hex(16)
        pwfile = workdir / "password"
        pwfile.write_text(password + "\n")
        if account is not None:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        data = workdir / "data"
        log = workdir / "postgres.log"
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}",
             "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8",
             "--locale=C", "--no-sync"],
            cwd=workdir, capture_output=True, text=True, timeout=300, **runas)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}{init.stderr}")
        max_connections = 150
        for _ in range(PORT_ATTEMPTS):
            port = free_port()
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    [str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                     "-c", "listen_addresses=127.0.0.1",
                     "-c", f"unix_socket_directories={workdir}",
                     "-c", f"max_connections={max_connections}",
                     "-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off", "-c", "shared_buffers=32MB"],
                    cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    preexec_fn=dies_with_us(signal.SIGQUIT), **runas)  # "immediate" shutdown

            def ready(port: int = port) -> bool:
                check = subprocess.run(
                    [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port),
                     "-t", "1"], capture_output=True, timeout=30)
                return check.returncode == 0

            if wait_until_ready(ready, proc, "PostgreSQL", log):
                break
        else:
            raise RuntimeError(f"PostgreSQL did not start; its log ends:\n{log_tail(log)}")
        try:
            yield PostgresServer("127.0.0.1", port, user, password,
                                 max_connections=max_connections)
        finally:
            stop_process(proc, signal.SIGINT)  # PostgreSQL's "fast" shutdown
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- the rendezvous server (HTTP and SMTP) --------------------------------------------------


@dataclass(frozen=True)
class RendezvousServer:
    """tests/_rendezvous_server.py, running: requests of a group wait for each other."""

    host: str
    http_port: int
    smtp_port: int


def read_line(proc: subprocess.Popen[str], deadline: float) -> str:
    """The child's first line of output, or an error once ``deadline`` (monotonic) passes."""
    assert proc.stdout is not None
    if not select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))[0]:
        raise RuntimeError("the rendezvous server did not say where it listens in time")
    return proc.stdout.readline()


@pytest.fixture(scope="session", name="rendezvous_server")
def rendezvous_server_fixture() -> Iterator[RendezvousServer]:
    """The local HTTP and SMTP server of ``tests/_rendezvous_server.py``, in its own process."""
    proc = subprocess.Popen([sys.executable, str(RENDEZVOUS_SCRIPT)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        line = read_line(proc, time.monotonic() + STARTUP_DEADLINE)
        words = line.split()
        if len(words) != 4 or not (words[1].isdigit() and words[3].isdigit()):
            raise RuntimeError(f"the rendezvous server said {line!r}")
        ports = {words[0]: int(words[1]), words[2]: int(words[3])}
        yield RendezvousServer("127.0.0.1", ports["http"], ports["smtp"])
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        stop_process(proc)
        assert proc.stdout is not None
        proc.stdout.close()
