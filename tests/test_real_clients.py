"""Plain client libraries, unchanged, against real local servers under ``patch_all()``.

Issue 9's proof that ``stackful.monkey.patch_all()`` makes existing blocking code cooperative:
``requests``, ``urllib.request``, ``http.client``, ``smtplib``, ``redis`` (redis-py) against a
real ``redis-server``, and ``pg8000`` against a real PostgreSQL, each from 100 tasks at once
(the servers: tests/_services.py).

How concurrency is proved without timing: the *server* holds every request until all 100 are
inside it at the same time (a rendezvous), then answers them all.  Clients that blocked the
thread would arrive one at a time and the rendezvous would never fill: the server answers with
an error after its bound and the test fails, saying how many came.  redis-server counts its
blocked clients itself (``CLIENT LIST``); PostgreSQL sessions wait in a PL/pgSQL function until
all have arrived.  Every reply is checked, not only that one came.  Every wait is bounded: the
servers' rendezvous give up after :data:`GATE` seconds, the clients' sockets after twice that.
"""

from __future__ import annotations

import http.client
import importlib.util
import secrets
import smtplib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import stackful

from ._net import run_bounded
from ._services import (  # noqa: F401 - session fixtures
    PostgresServer,
    RedisServer,
    RendezvousServer,
    import_client,
    postgres_server_fixture,
    redis_server_fixture,
    rendezvous_server_fixture,
)
from ._support import not_under_qemu

N = 100  # concurrent tasks in each test
GATE = 60.0  # seconds a rendezvous waits for its group (the servers' bound, and ours): 100
# PostgreSQL logins (a forked backend each) took over 20 s on a loaded 2-core CI machine
CLIENT_TIMEOUT = 2 * GATE  # a client's socket timeout: longer than any rendezvous
RUN_BOUND = 3 * GATE  # the whole runtime


@pytest.fixture
def patched() -> Iterator[None]:
    """``stackful.monkey.patch_all()`` for the test, undone after."""
    if importlib.util.find_spec("stackful.monkey") is None:
        pytest.skip("needs stackful.monkey.patch_all() (issue 9, item 4), which this tree "
                    "does not have yet")
    from stackful import monkey

    monkey.patch_all()
    try:
        yield
    finally:
        monkey.unpatch_all()


def tag() -> str:
    """A name no other test (or earlier run against the same server) uses."""
    return "t" + secrets.token_hex(6)


def remaining(deadline: float) -> float:
    """Seconds left until ``deadline`` (monotonic), at least a hundredth: a task that starts
    after the deadline (because an earlier one held the thread) fails fast instead of waiting
    out its own bound too."""
    return max(deadline - time.monotonic(), 0.01)


def in_tasks(body: Callable[[int], Any], n: int = N,
             meanwhile: Callable[[], Any] | None = None) -> list[Any]:
    """Run ``body(i)`` for i in range(n) as n tasks of one runtime; their results, in order.

    ``meanwhile()``, if given, runs in the main task once they are spawned (before the joins).
    """

    def main() -> list[Any]:
        tasks = [stackful.spawn(body, i, name=f"client-{i}") for i in range(n)]
        if meanwhile is not None:
            meanwhile()
        return [task.join() for task in tasks]

    return run_bounded(main, RUN_BOUND)


# --- HTTP: requests, urllib.request, http.client ---------------------------------------------


def get_requests(server: RendezvousServer, path: str) -> tuple[int, str]:
    requests = import_client("requests")
    reply = requests.get(f"http://{server.host}:{server.http_port}{path}",
                         timeout=CLIENT_TIMEOUT)
    return reply.status_code, reply.text


def get_urllib(server: RendezvousServer, path: str) -> tuple[int, str]:
    url = f"http://{server.host}:{server.http_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=CLIENT_TIMEOUT) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:  # a 504 from a rendezvous that did not fill
        return error.code, error.read().decode()


def get_http_client(server: RendezvousServer, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection(server.host, server.http_port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, reply.read().decode()
    finally:
        conn.close()


HTTP_CLIENTS = {"requests": get_requests, "urllib": get_urllib, "http.client": get_http_client}


@pytest.mark.parametrize("client", list(HTTP_CLIENTS))
def test_http_client_from_100_tasks_meets_at_the_server(
        client: str, rendezvous_server: RendezvousServer, patched: None) -> None:
    """100 tasks each GET a URL that the server answers only once all 100 are waiting."""
    if client == "requests":
        import_client("requests")
    get = HTTP_CLIENTS[client]
    group = tag()

    replies = in_tasks(lambda i: get(rendezvous_server, f"/rendezvous/{group}/{N}/{i}"))

    assert replies == [(200, f"{group} {i} {N}") for i in range(N)]


def test_requests_from_tasks_and_plain_threads_together(
        rendezvous_server: RendezvousServer, patched: None) -> None:
    """Patched sockets in plain OS threads still block only their own thread: 50 threads and
    50 tasks of a runtime, all in one rendezvous of 100, all answered."""
    import_client("requests")
    group = tag()
    threads_n = tasks_n = N // 2
    thread_replies: dict[int, tuple[int, str]] = {}

    def in_thread(i: int) -> None:
        thread_replies[i] = get_requests(rendezvous_server, f"/rendezvous/{group}/{N}/{i}")

    threads = [threading.Thread(target=in_thread, args=(i,), daemon=True)
               for i in range(threads_n)]
    for t in threads:
        t.start()
    try:
        task_replies = in_tasks(
            lambda i: get_requests(rendezvous_server,
                                   f"/rendezvous/{group}/{N}/{threads_n + i}"),
            tasks_n)
    finally:
        for t in threads:
            t.join(CLIENT_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a client thread did not finish"

    assert task_replies == [(200, f"{group} {threads_n + i} {N}") for i in range(tasks_n)]
    assert thread_replies == {i: (200, f"{group} {i} {N}") for i in range(threads_n)}


# --- SMTP: smtplib --------------------------------------------------------------------------


def test_smtplib_from_100_tasks_meets_at_the_server(
        rendezvous_server: RendezvousServer, patched: None) -> None:
    """100 tasks each send a message; the server accepts each only once all 100 are in DATA."""
    group = tag()

    def send(i: int) -> tuple[int, bytes]:
        message = (f"From: sender@example.test\r\nTo: rcpt@example.test\r\n"
                   f"Subject: message {i} of {group}\r\nX-Rendezvous: {group} {N}\r\n"
                   f"\r\nHello number {i}.\r\n.leading dot, stuffed and unstuffed\r\n")
        with smtplib.SMTP(rendezvous_server.host, rendezvous_server.smtp_port,
                          timeout=CLIENT_TIMEOUT) as smtp:
            smtp.ehlo()
            smtp.mail("sender@example.test")
            smtp.rcpt("rcpt@example.test")
            return smtp.data(message)

    replies = in_tasks(send)

    assert replies == [(250, f"queued message {i} of {group}".encode()) for i in range(N)]


# --- redis-py against redis-server ----------------------------------------------------------


def redis_client(server: RedisServer, **options: Any) -> Any:
    redis = import_client("redis")
    return redis.Redis(host=server.host, port=server.port, socket_timeout=CLIENT_TIMEOUT,
                       socket_connect_timeout=CLIENT_TIMEOUT, **options)


def test_redis_blpop_from_100_tasks_blocks_them_in_the_server_at_once(
        redis_server: RedisServer, patched: None) -> None:
    """100 tasks, one shared client (its connection pool), each BLPOPs its own empty list.

    The main task waits until redis-server itself reports all 100 connections blocked, then
    pushes one value to each list; each task gets its own value."""
    name = tag()
    client = redis_client(redis_server, client_name=name)
    admin = redis_client(redis_server)
    keys = [f"{name}:{i}" for i in range(N)]
    deadline = time.monotonic() + GATE

    def blocked_in_server() -> int:
        return sum(1 for c in admin.client_list() if c["name"] == name and "b" in c["flags"])

    def push_once_all_blocked() -> None:
        while (blocked := blocked_in_server()) < N:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {blocked} of {N} BLPOPs were blocked in "
                                     f"redis-server at once after {GATE} s")
            stackful.sleep(0.01)
        for i, key in enumerate(keys):
            admin.rpush(key, f"value {i}")

    try:
        popped = in_tasks(lambda i: client.blpop([keys[i]], timeout=remaining(deadline)),
                          meanwhile=push_once_all_blocked)
    finally:
        client.close()
        admin.close()

    assert popped == [(key.encode(), f"value {i}".encode()) for i, key in enumerate(keys)]


def test_redis_pubsub_100_subscriber_tasks(redis_server: RedisServer, patched: None) -> None:
    """100 tasks subscribe (each its own connection) and wait for messages; once the server
    counts 100 subscribers, 5 messages are published, each reaching all 100."""
    channel = tag()
    messages = [f"message {k}".encode() for k in range(5)]
    client = redis_client(redis_server)
    admin = redis_client(redis_server)
    deadline = time.monotonic() + GATE
    receivers: list[int] = []

    def subscriber(i: int) -> list[bytes]:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(channel)
            got: list[bytes] = []
            while len(got) < len(messages) and time.monotonic() < deadline:
                message = pubsub.get_message(timeout=remaining(deadline))
                if message is not None:
                    got.append(message["data"])
            return got
        finally:
            pubsub.close()

    def publish_once_all_subscribed() -> None:
        while (subscribed := admin.pubsub_numsub(channel)[0][1]) < N:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {subscribed} of {N} tasks had subscribed "
                                     f"after {GATE} s")
            stackful.sleep(0.01)
        receivers.extend(admin.publish(channel, m) for m in messages)

    try:
        received = in_tasks(subscriber, meanwhile=publish_once_all_subscribed)
    finally:
        client.close()
        admin.close()

    assert receivers == [N] * len(messages)  # as the server counted them
    assert received == [messages] * N


def test_redis_pipelines_and_transactions_from_100_tasks(
        redis_server: RedisServer, patched: None) -> None:
    """100 tasks share one client: each runs a pipeline on its own key, and a WATCH/MULTI
    transaction on one shared counter (retried on conflict).  Replies go to the right task
    and no update is lost."""
    name = tag()
    client = redis_client(redis_server)
    counter, log = f"{name}:counter", f"{name}:log"

    def work(i: int) -> list[Any]:
        key = f"{name}:{i}"
        with client.pipeline(transaction=False) as pipe:
            own = pipe.set(key, i).incrby(key, 1000).get(key).delete(key).execute()

        def increment(pipe: Any) -> None:
            value = int(pipe.get(counter) or 0)
            pipe.multi()
            pipe.set(counter, value + 1)
            pipe.rpush(log, i)

        client.transaction(increment, counter)
        return list(own)

    try:
        results = in_tasks(work)
        final = int(client.get(counter))
        logged = sorted(int(x) for x in client.lrange(log, 0, -1))
        client.delete(counter, log)
    finally:
        client.close()

    assert results == [[True, i + 1000, str(i + 1000).encode(), 1] for i in range(N)]
    assert final == N
    assert logged == list(range(N))


# --- pg8000 against PostgreSQL --------------------------------------------------------------

# Each session counts itself in (nextval on a sequence: visible to all sessions at once, unlike
# a row, which is invisible until its transaction commits), then waits in its query until the
# sequence says that `size` sessions have; so all `size` are inside a query at the same time.
RENDEZVOUS_FUNCTION = """
CREATE OR REPLACE FUNCTION stackful_rendezvous(seq text, size bigint, seconds float8)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + seconds * interval '1 second';
    seen bigint := nextval(seq::regclass);
BEGIN
    LOOP
        EXECUTE format('SELECT last_value FROM %s', seq::regclass) INTO seen;
        EXIT WHEN seen >= size;
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'only % of % sessions came to the rendezvous', seen, size;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
    RETURN seen;
END $$
"""


def pg_connect(server: PostgresServer, **options: Any) -> Any:
    pg8000 = import_client("pg8000.native")
    return pg8000.Connection(server.user, host=server.host, port=server.port,
                             password=server.password, database=server.database,
                             timeout=CLIENT_TIMEOUT, **options)


@pytest.fixture(scope="module")
def postgres(postgres_server: PostgresServer) -> PostgresServer:
    """The session's PostgreSQL, with the rendezvous function (created unpatched)."""
    conn = pg_connect(postgres_server)
    try:
        conn.run(RENDEZVOUS_FUNCTION)
    finally:
        conn.close()
    return postgres_server


@not_under_qemu("100 pg8000 logins at once by an emulated interpreter take minutes, past "
                "the server's authentication_timeout and this test's gate")
def test_pg8000_from_100_tasks_runs_100_queries_at_once(
        postgres: PostgresServer, patched: None) -> None:
    """100 tasks, each with its own connection (password auth, TLS off), run a query that
    returns only once all 100 sessions are inside it; each gets its own row back."""
    assert postgres.max_connections > N
    sequence = tag()
    admin = pg_connect(postgres)
    admin.run(f"CREATE SEQUENCE {sequence}")
    deadline = time.monotonic() + GATE

    def query(i: int) -> tuple[list[Any], int]:
        conn = pg_connect(postgres, application_name=sequence)
        try:
            rows = conn.run("SELECT stackful_rendezvous(:seq, :size, :seconds), :i * 2, "
                            "pg_backend_pid()",
                            seq=sequence, size=N, seconds=remaining(deadline), i=i)
            return rows[0][:2], rows[0][2]
        finally:
            conn.close()

    try:
        results = in_tasks(query)
    finally:
        admin.run(f"DROP SEQUENCE {sequence}")
        admin.close()

    assert [row for row, _ in results] == [[N, 2 * i] for i in range(N)]
    assert len({pid for _, pid in results}) == N  # 100 server processes, one per task


def test_pg8000_dbapi_transactions_from_tasks(postgres: PostgresServer, patched: None) -> None:
    """20 tasks, each through the DB-API (its own connection): create a table, insert rows
    in a transaction with ``executemany``, read an aggregate back, roll one more row back."""
    dbapi = import_client("pg8000.dbapi")
    name = tag()
    n = 20

    def work(i: int) -> tuple[Any, ...]:
        conn = dbapi.connect(postgres.user, host=postgres.host, port=postgres.port,
                             password=postgres.password, database=postgres.database,
                             timeout=CLIENT_TIMEOUT)
        table = f"{name}_{i}"
        try:
            cur = conn.cursor()
            cur.execute(f"CREATE TABLE {table} (k int PRIMARY KEY, v text)")
            cur.executemany(f"INSERT INTO {table} VALUES (%s, %s)",
                            [(k, f"task {i} row {k}") for k in range(50)])
            conn.commit()
            cur.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1000, "rolled back"))
            conn.rollback()
            cur.execute(f"SELECT count(*), sum(k), max(v) FROM {table}")
            row = tuple(cur.fetchone())
            cur.execute(f"DROP TABLE {table}")
            conn.commit()
            return row
        finally:
            conn.close()

    results = in_tasks(work, n)

    assert results == [(50, sum(range(50)), f"task {i} row 9") for i in range(n)]


# --- the servers themselves ----------------------------------------------------------------


def test_the_servers_answer_plain_clients(redis_server: RedisServer,
                                         postgres: PostgresServer,
                                         rendezvous_server: RendezvousServer) -> None:
    """The fixtures' servers, unpatched and outside any runtime: each answers one request."""
    client = redis_client(redis_server)
    key = tag()
    try:
        assert client.set(key, "stored") and client.getdel(key) == b"stored"
    finally:
        client.close()
    conn = pg_connect(postgres)
    try:
        assert conn.run("SELECT current_user, 6 * 7") == [[postgres.user, 42]]
    finally:
        conn.close()
    assert get_http_client(rendezvous_server, "/sleep/1/seven") == (200, "seven")
    assert get_http_client(rendezvous_server, "/rendezvous/solo/1/0") == (200, "solo 0 1")
    with smtplib.SMTP(rendezvous_server.host, rendezvous_server.smtp_port,
                      timeout=CLIENT_TIMEOUT) as smtp:
        assert smtp.sendmail("a@example.test", ["b@example.test"],
                             "Subject: hello\r\n\r\nbody\r\n") == {}
