"""Helpers shared by the tests: subprocesses, and running a runtime on a virtual clock."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def run_crash_script(name: str, *args: str, python: str = sys.executable,
                     timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run tests/crash/<name> in a fresh interpreter; capture its output."""
    return subprocess.run([python, str(CRASH / name), *args], capture_output=True, text=True,
                          timeout=timeout, env=child_env(**extra_env))


def vrun(main: Callable[..., Any], *args: Any) -> Any:
    """Run ``main(*args)`` in a fresh runtime on a virtual clock (timers never sleep for real)."""
    return run(main, *args, clock=VirtualClock())
