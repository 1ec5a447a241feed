"""Cases that would take the interpreter down run in a subprocess."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import stackful

from ._support import not_under_qemu, run_crash_script

CRASH = Path(__file__).parent / "crash"
SRC = Path(__file__).parent.parent / "src"  # for an interpreter that cannot install us


run_script = run_crash_script


def test_stack_overflow_is_reported_by_name_and_size() -> None:
    result = run_script("stack_overflow.py")
    assert result.returncode != 0
    assert "unreachable" not in result.stdout
    assert "stackful: fiber 'deep-diver' overflowed its 64 KiB stack" in result.stderr


def test_overflow_report_survives_faulthandler_enabled_after_import() -> None:
    """faulthandler's handler, installed after ours, runs first and re-raises: both the
    traceback dump and the report appear."""
    result = run_script("stack_overflow.py", "faulthandler-after")
    assert result.returncode != 0
    assert "Fatal Python error: Segmentation fault" in result.stderr
    assert "stackful: fiber 'deep-diver' overflowed its 64 KiB stack" in result.stderr


def test_overflow_in_a_subinterpreter_on_another_thread_is_reported() -> None:
    result = run_script("stack_overflow.py", "subinterpreter-thread")
    assert result.returncode != 0
    assert "stackful: fiber 'sub-diver' overflowed its 64 KiB stack" in result.stderr


def test_signal_stack_outlives_a_destroyed_subinterpreter() -> None:
    """The signal stack belongs to the OS thread: destroying the subinterpreter where the
    thread first used fibers must not free it while it is installed."""
    result = run_script("stack_overflow.py", "after-subinterpreter")
    assert "subinterpreter destroyed" in result.stdout
    assert result.returncode != 0
    assert "stackful: fiber 'after-sub' overflowed its 64 KiB stack" in result.stderr


def test_a_large_c_frame_cannot_jump_the_guard(tmp_path: Path) -> None:
    """A C frame landing 20 KiB below the stack's base (a 16 KiB buffer and change) hits
    the guard, with the neighbouring stacks mapped right below: reported, never a silent
    write into a neighbour."""
    # The compiler this interpreter was built with: a cross compiler under qemu-user.
    cc = shutil.which((sysconfig.get_config_var("CC") or "gcc").split()[0])
    if cc is None:
        pytest.skip("no C compiler to build the big-frame helper")
    lib = tmp_path / "big_frame.so"
    subprocess.run([cc, "-O0", "-fno-stack-clash-protection", "-shared", "-fPIC",
                    str(Path(__file__).parent / "native" / "big_frame.c"), "-o", str(lib)],
                   check=True, capture_output=True, timeout=120)
    result = run_script("stack_overflow.py", "big-frame", str(lib))
    assert "unreachable" not in result.stdout
    assert result.returncode != 0
    assert "stackful: fiber 'big-frame' overflowed its 64 KiB stack" in result.stderr


def test_setrecursionlimit_inside_a_small_fiber_keeps_its_budget() -> None:
    result = run_script("recursion_limit_in_fiber.py")
    assert result.returncode == 0, result.stderr
    line = result.stdout.splitlines()[0]
    fields = dict(part.split("=", 1) for part in line.split(" ", 2))
    free, raised = int(fields["free"]), int(fields["raised"])
    assert "the limit is too low" in fields["too_low"]
    if sys.version_info < (3, 12):
        # one counter for Python and C recursion: the budget caps both, before and after
        assert raised == free < 100
    else:
        # Python recursion is on the heap; the C budget has a counter of its own
        assert raised > free

RESUMED_RESULTS = ["handled", "caught unwound", "yielded [1]", "reraised first"]
RESUMED_FUNCS = ("caller_of_unwinder", "generator_parked_inside", "raises_after_resume",
                 "reraises_after_resume", "runs_generator", "unwinds_after_resume")
needs_monitoring = pytest.mark.skipif(sys.version_info < (3, 12),
                                      reason="instrumentation per code object is 3.12+")


def run_turned_on_while_suspended(mode: str) -> tuple[list[str], set[str]]:
    result = run_script("monitoring_turned_on_while_suspended.py", mode)
    assert result.returncode == 0, result.stderr
    *results, events = result.stdout.splitlines()
    return results, set(events.split())


@needs_monitoring
def test_exceptions_in_frames_resumed_after_monitoring_came_on_are_reported() -> None:
    """RAISE, EXCEPTION_HANDLED, PY_UNWIND and RERAISE from code first run, on each fiber,
    before the tool was on (3.15 crashed reading the code's missing monitoring data)."""
    results, events = run_turned_on_while_suspended("monitoring")
    assert results == RESUMED_RESULTS
    assert events == {
        "raise:raises_after_resume", "handled:raises_after_resume",
        "raise:unwinds_after_resume", "unwind:unwinds_after_resume",
        "raise:caller_of_unwinder", "handled:caller_of_unwinder",
        "raise:generator_parked_inside", "handled:generator_parked_inside",
        "raise:reraises_after_resume", "reraise:reraises_after_resume",
        "handled:reraises_after_resume"}


@needs_monitoring
def test_frames_resumed_after_settrace_raise_without_crashing() -> None:
    """Frames started before settrace have no local trace function, as on a thread: only
    the generator, started after, is traced."""
    results, events = run_turned_on_while_suspended("settrace")
    assert results == RESUMED_RESULTS
    assert events == {"call:generator_parked_inside", "return:generator_parked_inside"}


@needs_monitoring
def test_frames_resumed_after_setprofile_raise_without_crashing() -> None:
    results, events = run_turned_on_while_suspended("setprofile")
    assert results == RESUMED_RESULTS
    assert "return:unwinds_after_resume" in events


@needs_monitoring
def test_frames_resumed_after_setprofile_report_their_returns() -> None:
    """As for a thread's frames when setprofile is called: each resumed frame's return is
    seen (the code of a fiber's frames is instrumented when it lands)."""
    _, events = run_turned_on_while_suspended("setprofile")
    assert events == {"call:generator_parked_inside"} | {f"return:{f}" for f in RESUMED_FUNCS}


@pytest.mark.skipif(sys.version_info < (3, 13),
                    reason="the trash can defers by C stack (not by depth) from 3.13")
def test_resuming_stale_code_with_deferred_garbage_pending_frees_it_on_the_right_stack() -> None:
    """A small fiber near its stack's end, with garbage the trash can deferred, switches to
    fibers suspended before settrace: 3.15 instrumented their code before the stack switch,
    and the deferred garbage was freed on the small stack by the resumed fiber's bounds
    (unchecked recursion through a deep list: a segfault)."""
    result = run_script("stale_code_resumed_with_trash_pending.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "resumed with pending", "resumed with pending", "small fiber done", "ok"]


def test_shutdown_with_suspended_fibers_in_threads_is_clean() -> None:
    result = run_script("shutdown_with_suspended_fibers.py")
    assert result.returncode == 0, result.stderr
    assert "parked 25" in result.stdout
    assert "atexit ran" in result.stdout
    assert "Fatal" not in result.stderr


def test_exit_with_fibers_suspended_inside_a_generator_and_a_coroutine_is_quiet() -> None:
    result = run_script("exit_inside_a_generator.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["in a generator", "in a coroutine"]
    assert result.stderr == ""  # no "generator already executing", no coroutine warning


def test_unsupported_python_gets_a_clear_import_error() -> None:
    other = None
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True,
                              timeout=60).stdout.strip()
        found = sorted(Path(root, "versions").glob("3.10*/bin/python3.10"))
        other = str(found[-1]) if found else None
    if other is None:
        pytest.skip("no CPython outside 3.11-3.15 on this machine")
    result = subprocess.run(
        [other, "-c", "import stackful"], capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=str(SRC)),
    )
    assert result.returncode == 1
    assert "ImportError: stackful supports CPython 3.11 to 3.15" in result.stderr


def test_mprotect_guard_fallback_works_and_reports_overflow() -> None:
    result = run_crash_script("guard_fallback.py", STACKFUL_GUARD_MPROTECT="1")
    assert "guard method: mprotect" in result.stdout
    assert "stackful: fiber 'deep-diver' overflowed its 64 KiB stack" in result.stderr
    assert result.returncode != 0


def test_guard_region_stops_an_access() -> None:
    """Whatever method installed it, a fiber's guard refuses access: the kernel's own
    read for write() fails with EFAULT.  (qemu-user accepts MADV_GUARD_INSTALL and
    installs nothing: the guard must then fall back to mprotect.)"""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    libc.write.restype = ctypes.c_ssize_t

    def body() -> tuple[int, int]:
        info = stackful.current().stack_info()
        page = os.sysconf("SC_PAGESIZE")
        inside_guard = (info.base & ~(page - 1)) - info.guard_size // 2
        read_fd, write_fd = os.pipe()
        try:
            ctypes.set_errno(0)
            n = libc.write(write_fd, inside_guard, 1)
            return n, ctypes.get_errno()
        finally:
            os.close(read_fd)
            os.close(write_fd)

    stackful.clear_stack_pool()
    n, err = stackful.Fiber(body, stack_size=64 * 1024).switch()
    assert (n, err) == (-1, errno.EFAULT), stackful.stack_pool()["guard_method"]


@not_under_qemu("qemu-user keeps RLIMIT_AS for itself (setrlimit is accepted and ignored)")
def test_refused_stack_is_a_memory_error_naming_the_limits() -> None:
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("AddressSanitizer reserves terabytes of shadow memory: no RLIMIT_AS test")
    result = run_script("out_of_address_space.py")
    assert result.returncode == 0, result.stderr
    assert "MemoryError: stackful: cannot map a fiber stack" in result.stdout
    assert "vm.max_map_count" in result.stdout and "RLIMIT_AS" in result.stdout
    assert result.stdout.splitlines()[-1] == "alive"
