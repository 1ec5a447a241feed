"""The numbered examples run and print what they promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ._support import child_env

EXAMPLES = Path(__file__).parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                            text=True, timeout=60, env=child_env())
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_00_stack_jump() -> None:
    out = run_example("00_stack_jump.py")
    assert "I LOVE WAKING UP ON A NEW STACK!" in out
    assert "is inside the new stack" in out
    assert "top (16-byte aligned: True)" in out
    assert "the fiber is dead" in out


def test_01_switch() -> None:
    out = run_example("01_switch.py").splitlines()
    assert out == ["ping 0", "  pong got 0", "ping 1", "  pong got 1", "ping 2", "  pong got 2",
                   "ping done"]


# The servers run in their --demo mode: serve, run clients against themselves, stop.


def test_02_echo_server() -> None:
    assert run_example("02_echo_server.py", "--demo").splitlines() == [
        "ann heard back: hello from ann", "bob heard back: hello from bob",
        "cy heard back: hello from cy", "server stopped"]


def test_03_http_server() -> None:
    out = run_example("03_http_server.py", "--demo").splitlines()
    assert out == [f"request {i}: HTTP/1.1 200 OK b'Hello, world!'" for i in (1, 2, 3, 4)] + [
        "then the server closed the connection: True"]


def test_04_tls_echo() -> None:
    out = run_example("04_tls_echo.py", "--demo").splitlines()
    if out and out[0].startswith("skipped:"):
        pytest.skip(out[0])
    assert [line.split(" over ")[0] for line in out] == [
        "echoed 'secret one'", "echoed 'secret two'", "echoed 'secret three'"]
    assert all(line.split(" over ")[1].startswith("TLSv1.") for line in out)


def test_05_chat_server() -> None:
    assert run_example("05_chat_server.py", "--demo").splitlines() == [
        "alice heard: * bob joined | * carol joined | alice: hi all | bob: hello alice"
        " | * carol left",
        "  bob heard: * carol joined | alice: hi all | bob: hello alice | * carol left",
        "carol heard: alice: hi all | bob: hello alice",
    ]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_06_prefork_server() -> None:
    assert run_example("06_prefork_server.py", "--demo").splitlines() == [
        "answered 20 of 20 requests", "every answer came from a worker: True",
        "workers stopped cleanly: 2 of 2"]
