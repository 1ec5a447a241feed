"""Real asyncio libraries driven from plain functions through stackful.aio.

sniffio (what anyio-based libraries ask "which event loop is this?"), anyio, httpx's
AsyncClient, and an aiohttp client and server, all on loopback.  Each test skips only if
its library is not installed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from stackful.aio import await_, run_sync, sync_iter, sync_with

T = TypeVar("T")

# Every wait in these tests is bounded by this: a hang fails the test instead.
LIMIT = 20.0


def arun(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(LIMIT):
            return await main()
    return asyncio.run(bounded())


# -- a tiny HTTP/1.1 server on asyncio's streams (no library needed) --------------------------


async def serve_http(body_for: Callable[[str], bytes]) -> tuple[asyncio.Server, str]:
    """Answer every request with 200 and body_for(path); returns the server and its URL."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                body = body_for(path)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


# -- sniffio and anyio -----------------------------------------------------------------------


def test_sniffio_says_asyncio_inside_bridged_code() -> None:
    sniffio = pytest.importorskip("sniffio")

    def deep(n: int) -> str:
        return deep(n - 1) if n else sniffio.current_async_library()

    async def main() -> str:
        return await run_sync(deep, 20)

    assert arun(main) == "asyncio"


def test_anyio_primitives_made_in_bridged_code_are_asyncio_ones() -> None:
    anyio = pytest.importorskip("anyio")

    def body() -> list[Any]:
        event = anyio.Event()  # anyio asks sniffio which backend to build it for
        lock = anyio.Lock()
        with sync_with(lock):
            await_(anyio.sleep(0))
        await_(asyncio.sleep(0))
        event.set()
        await_(event.wait())
        return [event.is_set(), type(event).__module__]

    async def main() -> list[Any]:
        return await run_sync(body)

    is_set, module = arun(main)
    assert is_set and "asyncio" in module


def test_anyio_to_thread_from_a_bridged_fiber() -> None:
    pytest.importorskip("anyio")
    import anyio.from_thread
    import anyio.to_thread

    loop_thread = threading.get_ident()

    async def on_the_loop(x: int) -> tuple[int, bool]:
        await asyncio.sleep(0)
        return x + 1, threading.get_ident() == loop_thread

    def in_worker(x: int) -> tuple[int, bool, tuple[int, bool]]:
        # A worker thread calls back into the event loop while the bridged fiber waits.
        return (x * 10, threading.get_ident() != loop_thread,
                anyio.from_thread.run(on_the_loop, x))

    def body() -> list[Any]:
        return [await_(anyio.to_thread.run_sync(in_worker, i)) for i in range(3)]

    async def main() -> list[Any]:
        return await run_sync(body)

    assert arun(main) == [(i * 10, True, (i + 1, True)) for i in range(3)]


def test_anyio_task_group_run_from_bridged_code() -> None:
    anyio = pytest.importorskip("anyio")

    results: list[int] = []

    async def child(i: int) -> None:
        await anyio.sleep(0)
        results.append(i)

    async def group() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(child, i)

    def body() -> None:
        await_(group())

    async def main() -> None:
        await run_sync(body)

    arun(main)
    assert sorted(results) == list(range(5))


# -- httpx -----------------------------------------------------------------------------------


def test_httpx_async_client_from_a_plain_function() -> None:
    httpx = pytest.importorskip("httpx")

    def fetch_all(base: str) -> list[tuple[int, str]]:
        with sync_with(httpx.AsyncClient(base_url=base, timeout=LIMIT)) as client:
            out = []
            for name in ("a", "b", "c"):
                response = await_(client.get(f"/{name}"))
                out.append((response.status_code, response.text))
            return out

    async def main() -> list[tuple[int, str]]:
        server, url = await serve_http(lambda path: f"hello {path}".encode())
        async with server:
            return await run_sync(fetch_all, url)

    assert arun(main) == [(200, "hello /a"), (200, "hello /b"), (200, "hello /c")]


def test_httpx_requests_from_many_bridged_calls_at_once() -> None:
    httpx = pytest.importorskip("httpx")

    def fetch(client: Any, i: int) -> str:
        return str(await_(client.get(f"/{i}")).text)

    async def main() -> list[str]:
        server, url = await serve_http(lambda path: path.encode())
        async with server, httpx.AsyncClient(base_url=url, timeout=LIMIT) as client:
            return list(await asyncio.gather(*(run_sync(fetch, client, i) for i in range(20))))

    assert arun(main) == [f"/{i}" for i in range(20)]


# -- aiohttp ---------------------------------------------------------------------------------


def test_aiohttp_client_and_server_from_a_plain_function() -> None:
    aiohttp = pytest.importorskip("aiohttp")
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.match_info['name']}")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(4):
            await response.write(f"chunk{i};".encode())
        await response.write_eof()
        return response

    def client(base: str) -> tuple[list[str], str]:
        # Plain code: the session is made here, so it needs the task's running loop.
        with sync_with(aiohttp.ClientSession(base)) as session:
            texts = []
            for name in ("x", "y"):
                with sync_with(session.get(f"/hello/{name}")) as response:
                    response.raise_for_status()
                    texts.append(await_(response.text()))
            with sync_with(session.get("/stream")) as response:
                chunks = b"".join(sync_iter(response.content.iter_any()))
        return texts, chunks.decode()

    async def main() -> tuple[list[str], str]:
        app = web.Application()
        app.router.add_get("/hello/{name}", hello)
        app.router.add_get("/stream", stream)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            return await run_sync(client, f"http://127.0.0.1:{port}")
        finally:
            await runner.cleanup()

    texts, streamed = arun(main)
    assert texts == ["hello x", "hello y"]
    assert streamed == "chunk0;chunk1;chunk2;chunk3;"


def test_aiohttp_server_handler_written_as_a_plain_function() -> None:
    aiohttp = pytest.importorskip("aiohttp")
    from aiohttp import web

    from stackful.aio import asyncify

    @asyncify
    def handler(request: web.Request) -> web.Response:
        # A request handler in plain code: reading the body is an await_.
        body = await_(request.text())
        return web.Response(text=body.upper())

    async def main() -> list[str]:
        app = web.Application()
        app.router.add_post("/", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            async with aiohttp.ClientSession() as session:
                out = []
                for word in ("one", "two"):
                    async with session.post(f"http://127.0.0.1:{port}/", data=word) as r:
                        out.append(await r.text())
                return out
        finally:
            await runner.cleanup()

    assert arun(main) == ["ONE", "TWO"]
