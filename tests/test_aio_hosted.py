"""The stackful runtime hosted on an asyncio loop: stackful.aio.run / run_hosted."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import stackful
from stackful.aio import await_, in_bridge, run, run_hosted, sync_with

# Every wait in these tests is bounded by this: a hang fails the test instead.
LIMIT = 20.0


def hosted(main: Any, *args: Any) -> Any:
    """run(main, *args) with the whole run bounded by LIMIT."""
    async def bounded() -> Any:
        async with asyncio.timeout(LIMIT):
            return await run_hosted(main, *args)
    return asyncio.run(bounded())


async def double_later(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def test_tasks_await_coroutines_and_switch_as_fibers() -> None:
    def worker(i: int) -> int:
        stackful.yield_now()
        return await_(double_later(i)) + await_(double_later(i))

    def main() -> tuple[list[int], bool, bool]:
        tasks = [stackful.spawn(worker, i) for i in range(10)]
        return [t.join() for t in tasks], in_bridge(), asyncio.get_running_loop() is not None

    assert run(main) == ([4 * i for i in range(10)], True, True)


def test_asyncio_tasks_and_stackful_tasks_interleave_both_ways() -> None:
    def main() -> list[str]:
        to_async: asyncio.Queue[int] = asyncio.Queue()
        to_stackful: asyncio.Queue[int] = asyncio.Queue()
        log: list[str] = []

        async def echo() -> None:
            for _ in range(5):
                i = await to_async.get()
                log.append(f"asyncio {i}")
                to_stackful.put_nowait(i)

        echoer = await_(_start(echo()))
        for i in range(5):
            to_async.put_nowait(i)  # plain call: the loop runs the echo while we wait
            got = await_(to_stackful.get())
            log.append(f"stackful {got}")
        await_(echoer)
        return log

    expected = [line for i in range(5) for line in (f"asyncio {i}", f"stackful {i}")]
    assert hosted(main) == expected


async def _start(coro: Any) -> asyncio.Task[Any]:
    return asyncio.ensure_future(coro)


def test_stackful_sleep_and_io_go_through_the_loop() -> None:
    from stackful import socket

    def main() -> tuple[bytes, int]:
        a, b = socket.socketpair()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        tick_task = await_(_start(ticker()))
        reader = stackful.spawn(b.recv, 100)
        stackful.sleep(0.05)  # the hub waits in the loop: the asyncio ticker runs meanwhile
        a.sendall(b"through add_reader")
        got = reader.join()
        tick_task.cancel()
        a.close()
        b.close()
        return got, ticks

    got, ticks = hosted(main)
    assert got == b"through add_reader"
    assert ticks > 0


def test_exceptions_and_cancellation_cross_both_ways() -> None:
    seen: list[str] = []

    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("from asyncio")

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("asyncio side cancelled")
            raise

    def waits_forever() -> None:
        await_(forever())

    def main() -> str:
        with pytest.raises(ValueError, match="from asyncio"):
            await_(failing())
        t = stackful.spawn(waits_forever)
        stackful.sleep(0.01)
        t.cancel()
        with pytest.raises(stackful.Cancelled):
            t.join()
        with pytest.raises(TimeoutError):
            with stackful.timeout(0.01):
                await_(forever())
        return "ok"

    assert hosted(main) == "ok"
    assert seen == ["asyncio side cancelled", "asyncio side cancelled"]


def test_cancelling_the_hosting_task_winds_the_run_down() -> None:
    seen: list[str] = []

    def child() -> None:
        try:
            stackful.sleep(LIMIT)
        finally:
            seen.append("child finally")

    def main() -> None:
        stackful.spawn(child)
        try:
            stackful.sleep(LIMIT)
        finally:
            seen.append("main finally")

    async def outer() -> str:
        try:
            async with asyncio.timeout(0.05):
                await run_hosted(main)
        except TimeoutError:
            return "timed out"
        return "not timed out"

    assert asyncio.run(outer()) == "timed out"
    assert sorted(seen) == ["child finally", "main finally"]


def test_deadlocks_are_still_reported() -> None:
    def main() -> None:
        stackful.Event().wait()

    with pytest.raises(stackful.DeadlockError):
        hosted(main)


def test_to_thread_from_a_hosted_task() -> None:
    def main() -> tuple[int, bool]:
        ident = threading.get_ident()
        return stackful.to_thread(lambda: (7, threading.get_ident() != ident))  # type: ignore[no-any-return]

    assert hosted(main) == (7, True)


def test_sniffio_and_httpx_from_a_stackful_task() -> None:
    sniffio = pytest.importorskip("sniffio")
    httpx = pytest.importorskip("httpx")
    from .test_aio_libraries import serve_http

    def fetch(url: str) -> tuple[str, list[str]]:
        with sync_with(httpx.AsyncClient(base_url=url, timeout=LIMIT)) as client:
            texts = [await_(client.get(f"/{i}")).text for i in range(3)]
        return sniffio.current_async_library(), texts

    def main() -> list[tuple[str, list[str]]]:
        server, url = await_(serve_http(lambda path: path.encode()))
        try:
            tasks = [stackful.spawn(fetch, url) for _ in range(3)]
            return [t.join() for t in tasks]
        finally:
            server.close()
            await_(server.wait_closed())

    assert hosted(main) == [("asyncio", ["/0", "/1", "/2"])] * 3


def test_hosted_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    from stackful import socket

    def main() -> tuple[list[int], bytes, str]:
        a, b = socket.socketpair()
        reader = stackful.spawn(b.recv, 10)
        stackful.sleep(0.01)
        a.sendall(b"uv")
        workers = [stackful.spawn(lambda i=i: await_(double_later(i))) for i in range(3)]
        loop_module = type(asyncio.get_running_loop()).__module__
        out = [t.join() for t in workers], reader.join(), loop_module
        a.close()
        b.close()
        return out

    async def bounded() -> Any:
        async with asyncio.timeout(LIMIT):
            return await run_hosted(main)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(bounded()) == ([0, 2, 4], b"uv", "uvloop")
