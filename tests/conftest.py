"""Every core test (tests/test_fiber.py) runs under a leak check.

The test body runs once to warm caches and pools, then three more times,
each measured after a full collection: objects tracked by the GC and blocks
held by CPython's allocator.  A test that leaks leaks on every run, so the
smallest of the three growths is what counts; a little slack absorbs
allocator noise.  Mark a test `no_leak_check` to opt out, or `leak_check`
to opt in from another file.
"""

from __future__ import annotations

import gc
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# A runner that starts the tests as a background job without job control (`cmd &` in a
# script, nohup) hands them SIGINT ignored, and Python then leaves it ignored: every test of
# Ctrl-C would fail or wait forever.  The tests (and the scripts they start) get Python's
# default, as an interactive or CI shell would give them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

LEAK_CHECKED_FILES = ("test_fiber.py", "test_interp_state.py")
RUNS = 3
SLACK_OBJECTS = 0
SLACK_BLOCKS = 20
# Tests whose repeats legitimately leave something behind: threads that
# record per-thread state, one-shot warnings.
SKIP = {
    "test_each_thread_has_its_own_root",
    "test_switch_to_other_threads_fiber_is_an_error",
    "test_thread_exit_with_suspended_fibers_frees_them_without_running",
    "test_dropping_other_threads_fiber_kills_it_on_its_thread",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "leak_check: run the test body repeatedly, fail on growth")
    config.addinivalue_line("markers", "no_leak_check: exempt from the leak check")


def wants_leak_check(item: pytest.Function) -> bool:
    if item.get_closest_marker("no_leak_check") or item.originalname in SKIP:
        return False
    return bool(item.get_closest_marker("leak_check")) or item.path.name in LEAK_CHECKED_FILES


def measure() -> tuple[int, int]:
    gc.collect()
    gc.collect()
    return len(gc.get_objects()), sys.getallocatedblocks()


def growth(body: Callable[[], Any]) -> tuple[int, int]:
    """The smallest growth in (objects, blocks) over RUNS runs of `body`."""
    objects, blocks = [], []
    for _ in range(RUNS):
        o0, b0 = measure()
        body()
        o1, b1 = measure()
        objects.append(o1 - o0)
        blocks.append(b1 - b0)
    return min(objects), min(blocks)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not wants_leak_check(pyfuncitem):
        return None
    func = pyfuncitem.obj
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}

    def body() -> None:
        func(**args)

    body()  # warm-up, and the test itself: a failure here is reported as usual
    objects, blocks = growth(body)
    if objects > SLACK_OBJECTS or blocks > SLACK_BLOCKS:
        pytest.fail(f"leak: every run of {pyfuncitem.name} keeps {objects} more objects "
                    f"and {blocks} more memory blocks", pytrace=False)
    return True


@pytest.fixture(autouse=True)
def signal_handlers_left_alone() -> Iterator[None]:
    """A test that leaves SIGINT or SIGTERM handled otherwise breaks Ctrl-C (or kill) in every
    later test (the signal then goes to the leftover handler, or nowhere): fail the test."""
    watched = (signal.SIGINT, signal.SIGTERM)
    before = [signal.getsignal(s) for s in watched]
    yield
    for signum, old in zip(watched, before, strict=True):
        after = signal.getsignal(signum)
        if after is not old:
            signal.signal(signum, old)
            pytest.fail(f"the test left {signal.Signals(signum).name} handled by {after!r} "
                        f"(was {old!r})", pytrace=False)
