"""Helpers shared by the tests: subprocesses, and running a runtime on a virtual clock."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import stackful
from stackful.runtime_api import VirtualClock, run

# Where this process imported stackful from: src/ in a development tree (with the extension
# built in place), site-packages when installed.  Children import it from the same place.
PACKAGE_PARENT = str(Path(stackful.__file__).resolve().parents[1])


def child_env(**extra: str) -> dict[str, str]:
    """os.environ with stackful importable as here, no inherited faulthandler, plus `extra`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    env.pop("PYTHONFAULTHANDLER", None)
    env.update(extra)
    return env


CRASH = Path(__file__).parent / "crash"

# The architecture qemu-user emulates for this interpreter, or "": tools/arm64-python.sh's
# wrapper sets it.  Said explicitly, so a test that cannot run under an emulator skips with
# its reason there and never silently elsewhere.
EMULATED = os.environ.get("STACKFUL_QEMU", "")


def not_under_qemu(why: str) -> pytest.MarkDecorator:
    """Skip the test when running under qemu-user, saying why it cannot run there."""
    return pytest.mark.skipif(bool(EMULATED), reason=f"under qemu-user ({EMULATED}): {why}")


def run_crash_script(name: str, *args: str, python: str = sys.executable,
                     timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run tests/crash/<name> in a fresh interpreter; capture its output."""
    return subprocess.run([python, str(CRASH / name), *args], capture_output=True, text=True,
                          timeout=timeout, env=child_env(**extra_env))


def vrun(main: Callable[..., Any], *args: Any) -> Any:
    """Run ``main(*args)`` in a fresh runtime on a virtual clock (timers never sleep for real).

    No deadline of its own: tasks blocked on each other end in DeadlockError, but a wait on an
    fd or a thread needs a timeout scope (which, on this clock, fires once nothing else can).
    """
    return run(main, *args, clock=VirtualClock())


def in_forked_child(body: Callable[[], object]) -> int:
    """Fork; the child runs ``body()`` and exits 0 if it returned, 1 if it raised (its
    traceback on stderr).  The parent gets the child's pid back, for :func:`child_status`."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child)
        code = 1
        try:
            body()
            code = 0
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def child_status(pid: int, limit: float = 30.0) -> int:
    """Wait (at most ``limit`` seconds, then kill it) for the forked child ``pid``; its exit
    code (negative: the signal that ended it)."""
    import signal
    import time

    deadline = time.monotonic() + limit
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the forked child {pid} did not finish in {limit} s")
        time.sleep(0.01)
