"""Cases that would take the interpreter down run in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ._support import run_crash_script

CRASH = Path(__file__).parent / "crash"
SRC = Path(__file__).parent.parent / "src"  # for an interpreter that cannot install us


run_script = run_crash_script


def test_stack_overflow_is_reported_by_name_and_size() -> None:
    result = run_script("stack_overflow.py")
    assert result.returncode != 0
    assert "unreachable" not in result.stdout
    assert "stackful: fiber 'deep-diver' overflowed its 64 KiB stack" in result.stderr


def test_shutdown_with_suspended_fibers_in_threads_is_clean() -> None:
    result = run_script("shutdown_with_suspended_fibers.py")
    assert result.returncode == 0, result.stderr
    assert "parked 25" in result.stdout
    assert "atexit ran" in result.stdout
    assert "Fatal" not in result.stderr


def test_unsupported_python_gets_a_clear_import_error() -> None:
    other = None
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        found = sorted(Path(root, "versions").glob("3.10*/bin/python3.10"))
        other = str(found[-1]) if found else None
    if other is None:
        pytest.skip("no CPython outside 3.11-3.13 on this machine")
    result = subprocess.run(
        [other, "-c", "import stackful"], capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=str(SRC)),
    )
    assert result.returncode == 1
    assert "ImportError: stackful supports CPython 3.11, 3.12 and 3.13" in result.stderr


def test_mprotect_guard_fallback_works_and_reports_overflow() -> None:
    result = run_crash_script("guard_fallback.py", STACKFUL_GUARD_MPROTECT="1")
    assert "guard method: mprotect" in result.stdout
    assert "stackful: fiber 'deep-diver' overflowed its 64 KiB stack" in result.stderr
    assert result.returncode != 0


def test_refused_stack_is_a_memory_error_naming_the_limits() -> None:
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("AddressSanitizer reserves terabytes of shadow memory: no RLIMIT_AS test")
    result = run_script("out_of_address_space.py")
    assert result.returncode == 0, result.stderr
    assert "MemoryError: stackful: cannot map a fiber stack" in result.stdout
    assert "vm.max_map_count" in result.stdout and "RLIMIT_AS" in result.stdout
    assert result.stdout.splitlines()[-1] == "alive"
