"""The numbered examples run and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def run_example(name: str) -> str:
    result = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                            text=True, timeout=60)
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
