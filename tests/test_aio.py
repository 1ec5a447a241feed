"""stackful.aio: plain functions inside asyncio tasks (run_sync / await_ / asyncify)."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import inspect
import sys
import traceback
import warnings
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

import stackful
from stackful import Fiber
from stackful.aio import asyncify, await_, in_bridge, run_sync

T = TypeVar("T")

# Every wait in these tests is bounded by this: a hang fails the test instead.
LIMIT = 10.0


def arun(main: Callable[[], Coroutine[Any, Any, T]], limit: float = LIMIT) -> T:
    """asyncio.run(main()) with the whole run bounded by `limit` seconds."""
    async def bounded() -> T:
        async with asyncio.timeout(limit):
            return await main()
    return asyncio.run(bounded())


async def double_later(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def frame_names(exc: BaseException) -> list[str]:
    return [f.name for f in traceback.extract_tb(exc.__traceback__)]


# -- the round trip --------------------------------------------------------------------------


def test_result_arguments_and_awaited_values() -> None:
    def body(a: int, *, b: int) -> tuple[int, int, bool]:
        return await_(double_later(a)), await_(double_later(b)), in_bridge()

    async def main() -> tuple[int, int, bool]:
        return await run_sync(body, 3, b=5)

    assert arun(main) == (6, 10, True)
    assert not in_bridge()


def test_await_works_at_any_depth_below_the_function() -> None:
    def deep(n: int) -> int:
        if n == 0:
            return await_(double_later(21))
        return deep(n - 1)

    async def main() -> int:
        return await run_sync(deep, 200)

    assert arun(main) == 42


def test_any_awaitable_and_values_come_back_as_they_are() -> None:
    class Custom:
        def __await__(self) -> Any:
            yield from asyncio.sleep(0).__await__()
            return ("a", "tuple")

    def body(fut: asyncio.Future[Any]) -> list[Any]:
        return [await_(Custom()), await_(fut), await_(asyncio.ensure_future(double_later(1)))]

    async def main() -> list[Any]:
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(fut.set_result, None)
        return await run_sync(body, fut)

    assert arun(main) == [("a", "tuple"), None, 2]


def test_a_function_that_never_awaits_runs_to_the_end_at_once() -> None:
    async def main() -> int:
        return await run_sync(sum, [1, 2, 3])

    assert arun(main) == 6


def test_other_tasks_run_while_a_function_waits() -> None:
    order: list[str] = []

    def slow(gate: asyncio.Event) -> str:
        order.append("waiting")
        await_(gate.wait())
        order.append("woken")
        return "done"

    async def opener(gate: asyncio.Event) -> None:
        order.append("opener ran")
        gate.set()

    async def main() -> str:
        gate = asyncio.Event()
        waiting = asyncio.create_task(run_sync(slow, gate))
        await asyncio.sleep(0)
        await opener(gate)
        return await waiting

    assert arun(main) == "done"
    assert order == ["waiting", "opener ran", "woken"]


def test_asyncify_makes_a_coroutine_function() -> None:
    @asyncify
    def add_later(a: int, b: int = 0) -> int:
        """Adds."""
        return await_(double_later(a)) // 2 + b

    assert inspect.iscoroutinefunction(add_later)
    assert add_later.__name__ == "add_later" and add_later.__doc__ == "Adds."

    async def main() -> int:
        return await add_later(4, b=1)

    assert arun(main) == 5


# -- exceptions both ways --------------------------------------------------------------------


class Boom(Exception):
    pass


def test_an_exception_escaping_the_function_is_raised_by_run_sync() -> None:
    def inner() -> None:
        await_(asyncio.sleep(0))
        raise Boom("from the function")

    def outer() -> None:
        inner()

    async def main() -> None:
        await run_sync(outer)

    with pytest.raises(Boom, match="from the function") as info:
        arun(main)
    names = frame_names(info.value)
    # The caller's frames, then the function's, down to the raise.
    assert names.index("main") < names.index("outer") < names.index("inner")
    assert names[-1] == "inner"


def test_an_exception_from_the_awaitable_is_raised_by_await() -> None:
    async def failing() -> None:
        await asyncio.sleep(0)
        raise Boom("from the coroutine")

    def body() -> list[str]:
        with pytest.raises(Boom, match="from the coroutine") as info:
            await_(failing())
        return frame_names(info.value)

    async def main() -> list[str]:
        return await run_sync(body)

    names = arun(main)
    # Raised at await_ in the function, with the coroutine's frames below it.
    assert names.index("body") < names.index("await_") < names.index("failing")
    assert names[-1] == "failing"


def test_the_function_can_catch_and_go_on_awaiting() -> None:
    async def failing(i: int) -> int:
        raise Boom(i)

    def body() -> list[Any]:
        out: list[Any] = []
        for i in range(3):
            try:
                out.append(await_(failing(i)))
            except Boom as e:
                out.append(("caught", e.args[0]))
            out.append(await_(double_later(i)))
        return out

    async def main() -> list[Any]:
        return await run_sync(body)

    assert arun(main) == [("caught", 0), 0, ("caught", 1), 2, ("caught", 2), 4]


def test_base_exceptions_cross_too() -> None:
    class Stop(BaseException):
        pass

    async def raising() -> None:
        raise Stop

    def body() -> str:
        try:
            await_(raising())
        except Stop:
            pass
        raise Stop

    async def main() -> None:
        await run_sync(body)

    with pytest.raises(Stop):
        arun(main)


# -- cancellation and timeouts ---------------------------------------------------------------


def test_cancelling_the_task_raises_cancelled_error_at_the_pending_await() -> None:
    seen: list[str] = []

    def body(never: asyncio.Event) -> None:
        try:
            await_(never.wait())
        except asyncio.CancelledError:
            seen.append("cancelled in the function")
            raise
        finally:
            seen.append("finally ran")

    async def main() -> bool:
        task = asyncio.create_task(run_sync(body, asyncio.Event()))
        await asyncio.sleep(0)
        task.cancel("stop it")
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert arun(main) is True
    assert seen == ["cancelled in the function", "finally ran"]


def test_a_function_may_swallow_a_cancellation_like_a_coroutine() -> None:
    def body(never: asyncio.Event) -> str:
        try:
            await_(never.wait())
        except asyncio.CancelledError:
            pass
        # It may still await after catching it.
        return f"carried on: {await_(double_later(5))}"

    async def main() -> tuple[str, int]:
        task = asyncio.create_task(run_sync(body, asyncio.Event()))
        await asyncio.sleep(0)
        task.cancel()
        result = await task
        return result, task.cancelling()

    assert arun(main) == ("carried on: 10", 1)


def test_asyncio_timeout_around_run_sync() -> None:
    seen: list[str] = []

    def body(never: asyncio.Event) -> None:
        try:
            await_(never.wait())
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main() -> str:
        try:
            async with asyncio.timeout(0.01):
                await run_sync(body, asyncio.Event())
        except TimeoutError:
            return "timed out"
        return "not timed out"

    assert arun(main) == "timed out"
    assert seen == ["cancelled"]


def test_wait_for_around_run_sync_returns_when_in_time() -> None:
    async def main() -> int:
        return await asyncio.wait_for(run_sync(lambda: await_(double_later(4))), LIMIT)

    assert arun(main) == 8


def test_closing_the_coroutine_unwinds_the_function() -> None:
    seen: list[Any] = []

    def body(never: asyncio.Future[None]) -> None:
        try:
            await_(never)
        except GeneratorExit:
            seen.append("GeneratorExit")
            try:
                await_(double_later(1))
            except RuntimeError as e:
                seen.append(str(e))
            raise

    loop = asyncio.new_event_loop()
    try:
        coro = run_sync(body, loop.create_future())
        coro.send(None)  # suspended: the fiber waits for the future
        coro.close()
    finally:
        loop.close()
    assert seen[0] == "GeneratorExit"
    assert "being closed" in seen[1]


# -- context ---------------------------------------------------------------------------------

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def test_the_function_runs_in_the_tasks_context() -> None:
    def body() -> str:
        seen = var.get()
        var.set("set by the function")
        await_(asyncio.sleep(0))
        return seen

    async def one(label: str) -> tuple[str, str]:
        var.set(label)
        seen = await run_sync(body)
        return seen, var.get()

    async def main() -> list[tuple[str, str]]:
        return list(await asyncio.gather(one("a"), one("b")))

    assert arun(main) == [("a", "set by the function"), ("b", "set by the function")]
    assert var.get() == "unset"


def test_awaited_coroutines_see_what_the_function_set() -> None:
    async def read() -> str:
        return var.get()

    def body() -> str:
        var.set("before await_")
        return await_(read())

    async def main() -> str:
        return await run_sync(body)

    assert arun(main) == "before await_"


# -- nesting and scale -----------------------------------------------------------------------


def test_nested_bridges() -> None:
    def leaf(n: int) -> int:
        return await_(double_later(n))

    def middle(n: int) -> int:
        # A bridged function that starts another bridge through the task.
        return await_(run_sync(leaf, n)) + await_(run_sync(leaf, n + 1))

    def top() -> int:
        return await_(run_sync(middle, 1)) + leaf(10)

    async def main() -> int:
        return await run_sync(top)

    assert arun(main) == (2 + 4) + 20


def test_fibers_of_its_own_inside_the_function_do_not_disturb_the_bridge() -> None:
    def body() -> int:
        root = stackful.current()
        helper = Fiber(lambda: root.switch(7))
        got = helper.switch()
        return got + await_(double_later(1))

    async def main() -> int:
        return await run_sync(body)

    assert arun(main) == 9


def test_ten_thousand_concurrent_bridged_calls() -> None:
    n = 10_000

    def body(i: int, gate: asyncio.Event) -> int:
        await_(asyncio.sleep(0))
        await_(gate.wait())  # all of them are suspended at once here
        return i + await_(double_later(i))

    async def main() -> tuple[int, int]:
        gate = asyncio.Event()
        tasks = [asyncio.create_task(run_sync(body, i, gate)) for i in range(n)]
        for _ in range(3):
            await asyncio.sleep(0)
        waiting = sum(not t.done() for t in tasks)
        gate.set()
        results = await asyncio.gather(*tasks)
        return waiting, sum(results)

    waiting, total = arun(main, limit=30 * LIMIT)  # room for sanitizer builds
    assert waiting == n
    assert total == 3 * sum(range(n))


# -- misuse ----------------------------------------------------------------------------------


def test_await_outside_a_bridge_is_a_clear_error_and_closes_the_coroutine() -> None:
    coro = double_later(1)
    with pytest.raises(RuntimeError, match="outside a function run by stackful.aio.run_sync"):
        await_(coro)
    assert coro.cr_frame is None  # closed: no "never awaited" warning

    async def in_a_coroutine() -> None:
        await_(asyncio.sleep(0))

    with pytest.raises(RuntimeError, match="use 'await'"):
        arun(in_a_coroutine)


def test_await_in_a_plain_fiber_below_a_bridge_is_an_error() -> None:
    def body() -> str:
        f = Fiber(lambda: await_(asyncio.sleep(0)))
        with pytest.raises(RuntimeError, match="outside a function run by"):
            f.switch()
        return "ok"

    async def main() -> str:
        return await run_sync(body)

    assert arun(main) == "ok"


def test_await_in_a_stackful_task_says_hosted_mode_is_needed() -> None:
    def main() -> str:
        with pytest.raises(RuntimeError, match="hosted on an asyncio loop"):
            await_(asyncio.sleep(0))
        return "ok"

    assert stackful.run(main) == "ok"


def test_awaiting_a_non_awaitable_raises_type_error_in_the_function() -> None:
    def body() -> str:
        with pytest.raises(TypeError):
            await_(42)  # type: ignore[arg-type]
        return "ok"

    async def main() -> str:
        return await run_sync(body)

    assert arun(main) == "ok"


def test_no_fiber_or_coroutine_is_left_behind() -> None:
    import weakref

    refs: list[weakref.ref[Any]] = []

    def body() -> int:
        refs.append(weakref.ref(stackful.current()))
        return await_(double_later(1))

    async def main() -> int:
        return await run_sync(body)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert arun(main) == 2
    gc.collect()
    assert refs[0]() is None


def test_asyncios_pure_python_running_loop_is_per_fiber_too() -> None:
    # asyncio's fallback (_py__get_running_loop, a threading.local underneath) follows the
    # fiber once stackful.aio is imported, as the C one does.
    from asyncio import events

    get, put = events._py__get_running_loop, events._py__set_running_loop  # type: ignore[attr-defined]
    root = stackful.current()
    marker = object()

    def in_fiber() -> Any:
        put(marker)
        root.switch()
        return get()

    f = Fiber(in_fiber)
    f.switch()
    assert get() is None
    assert f.switch() is marker
    assert get() is None

    async def main() -> tuple[Any, Any]:
        put(marker)  # as the pure-Python loop would while running
        try:
            return await run_sync(get), Fiber(get).switch()
        finally:
            put(None)

    assert arun(main) == (marker, None)  # a bridged fiber sees its task's, a plain one none


# -- asyncio's state follows the fiber -------------------------------------------------------


def test_the_function_sees_the_tasks_loop_and_task() -> None:
    async def main() -> tuple[bool, bool, bool]:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        hooks = sys.get_asyncgen_hooks()

        def body() -> tuple[bool, bool, bool]:
            return (asyncio.get_running_loop() is loop, asyncio.current_task() is task,
                    sys.get_asyncgen_hooks() == hooks)

        return await run_sync(body)

    assert arun(main) == (True, True, True)


def test_an_async_generator_started_in_the_function_is_finalized_by_the_loop() -> None:
    closed: list[str] = []

    async def numbers() -> Any:
        try:
            for i in range(10):
                yield i
        finally:
            closed.append("closed")

    kept: list[Any] = []

    def body() -> int:
        agen = numbers()
        kept.append(agen)  # alive after the run: only the loop can close it
        first = await_(agen.__anext__())  # the loop's firstiter hook sees it here
        return first

    async def main() -> int:
        return await run_sync(body)

    # asyncio.run's shutdown_asyncgens closed it: the loop knew about it.
    assert arun(main) == 0
    assert closed == ["closed"] and kept


def test_asyncio_run_in_two_stackful_tasks_at_once() -> None:
    def in_task(label: str) -> tuple[str, bool, bool]:
        async def main() -> tuple[str, bool, bool]:
            loop = asyncio.get_running_loop()
            # The task parks inside its loop: the other task runs its own meanwhile.
            stackful.sleep(0.01)
            same_in_bridge = await run_sync(
                lambda: (stackful.sleep(0.01), asyncio.get_running_loop() is loop)[1])
            await asyncio.sleep(0)
            return label, asyncio.get_running_loop() is loop, same_in_bridge

        return asyncio.run(main())

    def main() -> list[tuple[str, bool, bool]]:
        tasks = [stackful.spawn(in_task, label) for label in "ab"]
        return [t.join() for t in tasks]

    assert stackful.run(main) == [("a", True, True), ("b", True, True)]


def test_run_until_complete_in_two_fibers_at_once() -> None:
    root = stackful.current()

    async def step(label: str) -> str:
        root.switch(label)
        await asyncio.sleep(0)
        return label

    def in_fiber(label: str) -> str:
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(step(label))
        finally:
            loop.close()

    a, b = Fiber(in_fiber), Fiber(in_fiber)
    assert (a.switch("a"), b.switch("b")) == ("a", "b")  # both suspended inside their loop
    assert (a.switch(), b.switch()) == ("a", "b")


# -- async with / async for from plain code --------------------------------------------------


class Resource:
    def __init__(self, log: list[str], suppress: bool = False) -> None:
        self.log, self.suppress = log, suppress

    async def __aenter__(self) -> str:
        await asyncio.sleep(0)
        self.log.append("enter")
        return "value"

    async def __aexit__(self, typ: Any, exc: Any, tb: Any) -> bool:
        await asyncio.sleep(0)
        self.log.append(f"exit {typ.__name__ if typ else None}")
        return self.suppress


def test_sync_with_enters_and_exits_like_async_with() -> None:
    from stackful.aio import sync_with

    log: list[str] = []

    def body() -> str:
        with sync_with(Resource(log)) as value:
            log.append(f"body {value}")
        with pytest.raises(Boom):
            with sync_with(Resource(log)):
                raise Boom
        with sync_with(Resource(log, suppress=True)):
            raise Boom
        return "ok"

    async def main() -> str:
        return await run_sync(body)

    assert arun(main) == "ok"
    assert log == ["enter", "body value", "exit None", "enter", "exit Boom", "enter", "exit Boom"]


def test_sync_iter_walks_an_async_iterator() -> None:
    from stackful.aio import sync_iter

    async def numbers(n: int) -> Any:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    def body() -> list[int]:
        return [i * i for i in sync_iter(numbers(5))]

    async def main() -> list[int]:
        return await run_sync(body)

    assert arun(main) == [0, 1, 4, 9, 16]
