"""stackful.monkey: time, socket, ssl -- each patched call parks a task and is the stdlib's
everywhere else; stdlib clients against servers in plain threads; patches undone."""

from __future__ import annotations

import asyncio
import ftplib
import http.client
import math
import os
import smtplib
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import stackful
import stackful.lowlevel
from stackful import monkey
from stackful import socket as coop_socket
from stackful import ssl as coop_ssl
from stackful._core import BLOCKED

from ._monkey import PATCHED_NAMES, Gate, http_server, line_server, patched_fixture, snapshot
from ._net import BOUND, run_bounded
from ._support import vrun
from ._tls import certificate_fixture, client_context, server_context

__all__ = ["certificate_fixture", "patched_fixture"]  # fixtures, used by name

Cert = tuple[Path, Path]


# -- patching itself ------------------------------------------------------------------------------


def test_patch_all_replaces_and_unpatch_all_restores_every_original() -> None:
    before = snapshot()
    assert not any(monkey.is_patched(name) for name in PATCHED_NAMES)
    monkey.patch_all()
    try:
        during = snapshot()
        assert all(monkey.is_patched(name) for name in PATCHED_NAMES)
        assert [key for key in before if during[key] is before[key]] == []
        monkey.patch_all()  # idempotent: nothing replaced twice (else unpatch would keep ours)
        assert snapshot() == during
    finally:
        monkey.unpatch_all()
    assert not any(monkey.is_patched(name) for name in PATCHED_NAMES)
    after = snapshot()
    assert [key for key in before if after[key] is not before[key]] == []


def test_patches_apply_and_undo_one_by_one() -> None:
    before = snapshot()
    monkey.patch_time()
    try:
        assert monkey.is_patched("time") and not monkey.is_patched("socket")
        assert time.sleep is monkey.sleep
        assert socket.socket is before[("socket", "socket")]
    finally:
        monkey.unpatch("time")
    assert time.sleep is before[("time", "sleep")]
    monkey.unpatch("time")  # not applied: nothing to do
    with pytest.raises(ValueError, match="no patch named 'sockets'"):
        monkey.is_patched("sockets")


# -- time.sleep -----------------------------------------------------------------------------------


def test_sleep_in_tasks_overlaps(patched: None) -> None:
    events: list[tuple[str, int]] = []

    def sleeper(i: int) -> None:
        events.append(("start", i))
        time.sleep(0.2)
        events.append(("end", i))

    def main() -> float:
        t0 = stackful.lowlevel.current_time()
        tasks = [stackful.spawn(sleeper, i) for i in range(20)]
        for t in tasks:
            t.join()
        return stackful.lowlevel.current_time() - t0

    elapsed = vrun(main)
    # All twenty started before any ended, and together they took one sleep, not twenty.
    assert [kind for kind, _ in events] == ["start"] * 20 + ["end"] * 20
    assert elapsed == pytest.approx(0.2)


@pytest.mark.parametrize("where", ["task", "thread"])
@pytest.mark.parametrize(("value", "error"), [
    (-1, ValueError), (math.nan, ValueError), (math.inf, OverflowError), ("1", TypeError),
    (10**20, OverflowError),
])
def test_sleep_refuses_what_the_stdlib_refuses(patched: None, where: str, value: object,
                                               error: type[Exception]) -> None:
    def call() -> type[BaseException] | None:
        try:
            time.sleep(value)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - the type is what is checked
            return type(exc)
        return None

    got = vrun(call) if where == "task" else call()
    assert got is error


def test_sleep_outside_a_task_is_the_stdlibs(patched: None) -> None:
    # In a plain thread and on this thread without a runtime, it blocks that thread for real.
    result: list[float] = []

    def measure() -> None:
        t0 = time.monotonic()
        time.sleep(0.05)
        result.append(time.monotonic() - t0)

    measure()
    t = threading.Thread(target=measure)
    t.start()
    t.join(BOUND)
    assert len(result) == 2 and min(result) >= 0.05
    # A sleep of a virtual-clock task does not wait for real.
    t0 = time.monotonic()
    vrun(time.sleep, 3600)
    assert time.monotonic() - t0 < 3600


def test_sleep_in_a_task_accepts_ints_and_index_objects(patched: None) -> None:
    class Two:
        def __index__(self) -> int:
            return 2

    def main() -> float:
        t0 = stackful.lowlevel.current_time()
        time.sleep(1)
        time.sleep(Two())  # type: ignore[arg-type]
        time.sleep(0)  # a yield
        return stackful.lowlevel.current_time() - t0

    assert vrun(main) == 3


# -- socket ---------------------------------------------------------------------------------------


def test_sockets_are_cooperative_in_tasks_and_blocking_in_threads(patched: None) -> None:
    a, b = socket.socketpair()
    with a, b:
        assert isinstance(a, coop_socket.socket) and a.gettimeout() is None
        # A plain thread's blocking recv times out like the stdlib's...
        a.settimeout(0.05)
        with pytest.raises(TimeoutError):
            a.recv(1)
        a.settimeout(None)
        order: list[str] = []

        def reader() -> None:
            order.append("reading")
            order.append(a.recv(10).decode())

        def writer() -> None:
            order.append("writing")
            b.sendall(b"data")

        def main() -> None:
            r = stackful.spawn(reader)
            w = stackful.spawn(writer)
            r.join()
            w.join()

        # ...and in tasks, the reader's wait let the writer run.
        run_bounded(main)
        assert order == ["reading", "writing", "data"]


def test_stdlib_helpers_make_cooperative_sockets(patched: None) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert isinstance(listener, coop_socket.socket)
        port = listener.getsockname()[1]

        def main() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as c:
                conn, _ = listener.accept()
                with conn:
                    assert isinstance(c, coop_socket.socket)
                    assert isinstance(conn, coop_socket.socket)
                    dup = socket.fromfd(conn.fileno(), conn.family, conn.type)
                    with dup:
                        assert isinstance(dup, coop_socket.socket)
                        c.sendall(b"hi")
                        return dup.recv(2)

        assert run_bounded(main) == b"hi"


def _urlopen(url: str) -> str:
    with urllib.request.urlopen(url, timeout=BOUND) as response:
        return response.read().decode()  # type: ignore[no-any-return]


def _http_client_get(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=BOUND)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


@pytest.mark.parametrize("client", ["urllib", "http.client"])
def test_100_concurrent_http_requests_from_tasks(patched: None, client: str) -> None:
    n = 100
    with http_server(n) as port:
        def get(i: int) -> str:
            if client == "urllib":
                return _urlopen(f"http://127.0.0.1:{port}/{i}")
            return _http_client_get(port, f"/{i}")

        def main() -> list[str]:
            tasks = [stackful.spawn(get, i) for i in range(n)]
            return [t.join() for t in tasks]

        # The server answers "together" only once all n requests are in at the same time.
        assert run_bounded(main) == [f"/{i} together" for i in range(n)]


def test_smtplib_from_concurrent_tasks(patched: None) -> None:
    n = 20
    replies = {b"EHLO": b"250-localhost\r\n250 8BITMIME\r\n", b"QUIT": b"221 bye\r\n"}
    with line_server(n, b"220 localhost ESMTP\r\n", replies) as port:
        def send(i: int) -> dict[str, tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", port, timeout=BOUND) as smtp:
                return smtp.sendmail("a@example.org", ["b@example.org"], f"Subject: {i}\r\n\r\nhi")

        def main() -> list[dict[str, tuple[int, bytes]]]:
            tasks = [stackful.spawn(send, i) for i in range(n)]
            return [t.join() for t in tasks]

        assert run_bounded(main) == [{}] * n  # every recipient accepted, after the gate


def test_ftplib_control_connection_from_concurrent_tasks(patched: None) -> None:
    n = 20
    replies = {b"USER": b"331 password\r\n", b"PASS": b"230 in\r\n", b"QUIT": b"221 bye\r\n"}
    with line_server(n, b"220 ftp ready\r\n", replies) as port:
        def session() -> str:
            ftp = ftplib.FTP(timeout=BOUND)
            ftp.connect("127.0.0.1", port)
            ftp.login("user", "secret")
            reply = ftp.voidcmd("NOOP")
            ftp.quit()
            return reply

        def main() -> list[str]:
            tasks = [stackful.spawn(session) for _ in range(n)]
            return [t.join() for t in tasks]

        assert run_bounded(main) == ["200 together"] * n


def test_asyncio_still_works_after_patch_all(patched: None) -> None:
    # asyncio's sockets are non-blocking: the patched socket class must keep that contract.
    async def main() -> bytes:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\n")
        line = await reader.readline()
        writer.close()
        server.close()
        await server.wait_closed()
        return line

    assert asyncio.run(asyncio.wait_for(main(), BOUND)) == b"ping\n"
    # And from a plain thread.
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(asyncio.run(asyncio.wait_for(main(), BOUND))))
    t.start()
    t.join(BOUND)
    assert got == [b"ping\n"]


# -- ssl ------------------------------------------------------------------------------------------


def test_wrap_socket_makes_cooperative_tls_sockets(patched: None, certificate: Cert) -> None:
    ctx = client_context(certificate)
    assert ctx.sslsocket_class is coop_ssl.SSLSocket
    n = 20
    with http_server(n, server_context(certificate)) as port:
        def get(i: int) -> str:
            conn = http.client.HTTPSConnection("localhost", port, timeout=BOUND, context=ctx)
            try:
                conn.request("GET", f"/{i}")
                assert isinstance(conn.sock, coop_ssl.SSLSocket)
                return conn.getresponse().read().decode()
            finally:
                conn.close()

        def main() -> list[str]:
            tasks = [stackful.spawn(get, i) for i in range(n)]
            return [t.join() for t in tasks]

        assert run_bounded(main) == [f"/{i} together" for i in range(n)]


def test_tls_in_a_plain_thread_blocks_like_the_stdlib(patched: None, certificate: Cert) -> None:
    # The server side above ran in plain threads; here a client does, against a silent server.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        raw = socket.create_connection(("127.0.0.1", port), timeout=0.1)
        with pytest.raises(TimeoutError):
            client_context(certificate).wrap_socket(raw, server_hostname="localhost")
        assert raw.fileno() == -1  # detached into the TLS socket, which closed on failure


def test_ssl_get_server_certificate_goes_through_the_cooperative_connection(
        patched: None, certificate: Cert) -> None:
    with http_server(1, server_context(certificate)) as port:
        pem = run_bounded(lambda: ssl.get_server_certificate(("127.0.0.1", port), timeout=BOUND))
    assert pem.strip() == certificate[0].read_text().strip()


# -- dns -----------------------------------------------------------------------------------------


def test_host_name_lookups_in_tasks_run_on_worker_threads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A resolver that only returns once all n lookups are in at once: n tasks got there only
    # if each parked while its lookup ran on a worker thread.
    n = 10
    gate = Gate(n)
    callers: list[bool] = []

    def slow_gethostbyaddr(name: str) -> tuple[str, list[str], list[str]]:
        callers.append(stackful.lowlevel.in_task())
        assert gate.wait()
        return (name, [], ["127.0.0.1"])

    monkeypatch.setattr(socket, "gethostbyaddr", slow_gethostbyaddr)
    monkey.patch_dns()
    try:
        assert socket.gethostbyaddr is not slow_gethostbyaddr

        def main() -> list[str]:
            tasks = [stackful.spawn(socket.getfqdn, f"host{i}") for i in range(n)]
            return [t.join() for t in tasks]

        assert run_bounded(main) == [f"host{i}" for i in range(n)]
        assert callers == [False] * n  # not one ran in a task: each on a worker thread
    finally:
        monkey.unpatch("dns")
    assert socket.gethostbyaddr is slow_gethostbyaddr


def test_resolvers_give_the_stdlibs_answers(patched: None) -> None:
    def lookups() -> tuple[object, ...]:
        return (socket.gethostbyname("localhost"),
                sorted(socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)),
                socket.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST))

    assert run_bounded(lookups) == lookups()


# -- what the patches reach without being aimed at it -------------------------------------------


@pytest.mark.parametrize("how", ["run", "communicate", "os.popen"])
def test_subprocesses_park_the_task(patched: None, tmp_path: Path, how: str) -> None:
    # Every task must be waiting on its child at once before the flag that ends the children
    # exists: a wait that held the thread would stop the others from starting theirs.
    n = 10
    flag = tmp_path / "flag"
    started = [0]
    # The children give up BOUND seconds from now, all at once (a bug fails the test instead of
    # hanging it).
    give_up = int(time.time() + BOUND)
    script = (f"while [ ! -e '{flag}' ] && [ $(date +%s) -lt {give_up} ]; do sleep 0.01; "
              f"done; if [ -e '{flag}' ]; then echo done; else echo alone; fi")

    def one() -> bytes:
        started[0] += 1
        if how == "run":
            return subprocess.run(["sh", "-c", script], capture_output=True,
                                  timeout=BOUND).stdout
        if how == "communicate":
            with subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE) as child:
                return child.communicate(timeout=BOUND)[0]
        with os.popen(script) as pipe:
            return pipe.read().encode()

    def main() -> list[bytes]:
        tasks = [stackful.spawn(one) for _ in range(n)]
        with stackful.timeout(BOUND):
            while started[0] < n or not all(t.state is BLOCKED for t in tasks):
                stackful.sleep(0.01)
        flag.touch()
        return [t.join() for t in tasks]

    assert run_bounded(main) == [b"done\n"] * n


def test_asyncio_subprocesses_still_work_after_patch_all(patched: None) -> None:
    async def main() -> bytes:
        child = await asyncio.create_subprocess_exec(
            "sh", "-c", "read line; echo got $line", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        out, _ = await child.communicate(b"it\n")
        return out

    assert asyncio.run(asyncio.wait_for(main(), BOUND)) == b"got it\n"


def test_a_stdlib_http_server_in_a_task_serves_client_tasks(patched: None) -> None:
    # serve_forever's selector, accept and reads all park: clients in the same runtime get
    # their answers (a blocking server would hold the thread, and nobody would connect).
    import http.server

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  (the stdlib's name)
            body = self.path.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    def main() -> list[str]:
        server = http.server.HTTPServer(("127.0.0.1", 0), Hello)
        port = server.server_address[1]
        serving = stackful.spawn(server.serve_forever, 0.05)
        clients = [stackful.spawn(_http_client_get, port, f"/{i}") for i in range(20)]
        answers = [c.join() for c in clients]
        server.shutdown()  # parks this task until serve_forever has returned
        serving.join()
        server.server_close()
        return answers

    assert run_bounded(main) == [f"/{i}" for i in range(20)]
