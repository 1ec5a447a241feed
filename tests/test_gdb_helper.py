"""The gdb helper (stackful/gdb_fibers.py) lists fibers and stacks without the process's help.

A child process parks a task on an Event and a plain fiber three calls deep, then blocks its
only thread in a read: nothing in it can answer.  gdb, attached live and on the kernel's core
file of it, must list each fiber with its frames, innermost first.
"""

from __future__ import annotations

import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import stackful
from stackful import debug

from ._support import not_under_qemu

BOUND = 120

pytestmark = [
    pytest.mark.skipif(shutil.which("gdb") is None, reason="needs gdb"),
    not_under_qemu("gdb attaches to the emulator, not to the arm64 process it runs "
                   "(that takes qemu's gdb stub)"),
]

CHILD = textwrap.dedent("""
    import sys, stackful

    def parked_deep(n):
        if n:
            return parked_deep(n - 1)
        stackful.current().parent.switch()

    def waiter(ev):
        ev.wait()

    def main():
        ev = stackful.Event()
        stackful.spawn(waiter, ev, name="gdb-waiter")
        f = stackful.Fiber(parked_deep, name="gdb-plain")
        f.switch(2)
        stackful.sleep(0)
        print("ready", flush=True)
        sys.stdin.readline()  # the thread blocks in C: the process cannot be asked
        ev.set()

    stackful.run(main)
""")


def start_child(cwd: Path) -> subprocess.Popen[str]:
    (cwd / "child.py").write_text(CHILD)
    package_parent = str(Path(stackful.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=package_parent)

    def allow_core() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    child = subprocess.Popen([sys.executable, "child.py"], cwd=cwd, env=env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             preexec_fn=allow_core)
    assert child.stdout is not None
    # Bounded: a child that never says it is ready fails the test instead of hanging it (the
    # line comes in one write, so once there is something to read, readline() returns).
    if not select.select([child.stdout], [], [], BOUND)[0]:
        child.kill()
        child.communicate(timeout=BOUND)
        raise AssertionError(f"the child did not say it was ready in {BOUND} s")
    line = child.stdout.readline()
    assert line == "ready\n", line
    return child


def gdb(*args: str) -> str:
    done = subprocess.run(["gdb", "-nx", "-batch", *args, "-ex", f"source {debug.GDB_SCRIPT}",
                           "-ex", "stackful-fibers"], capture_output=True, text=True,
                          timeout=BOUND)
    return done.stdout + done.stderr


def blocks(output: str) -> dict[str, list[str]]:
    """Fiber name -> its frame lines ('function file:line' shortened to 'function@file')."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("Fiber '"):
            current = out.setdefault(line.split("'")[1], [])
        elif line.startswith('  File "') and current is not None:
            filename = line.split('"')[1]
            function = line.rsplit(" in ", 1)[1]
            number = line.split(", line ")[1].split()[0]
            current.append(f"{function}@{Path(filename).name}:{number}")
    return out


def check(output: str) -> None:
    fibers = blocks(output)
    assert "stackful: 4 fibers" in output, output
    assert fibers["gdb-plain"] == ["parked_deep@child.py:7", "parked_deep@child.py:6",
                                   "parked_deep@child.py:6"], output
    waiter = fibers["gdb-waiter"]
    assert [f.split("@")[0] for f in waiter[:3]] == ["park", "park_for", "wait"], output
    assert "waiter@child.py:10" in waiter, output
    # main prints "ready" then blocks reading: the dump may catch it just after the write.
    assert fibers["main"][0] in ("main@child.py:18", "main@child.py:19"), output
    assert any(f.startswith("<module>@child.py") for f in fibers["root"]), output


def test_gdb_lists_fibers_of_a_live_process(tmp_path: Path) -> None:
    child = start_child(tmp_path)
    try:
        output = gdb("-p", str(child.pid))
        if "ptrace" in output and "Operation not permitted" in output:
            pytest.skip("this machine does not let gdb attach")
        check(output)
    finally:
        child.kill()
        child.communicate(timeout=BOUND)


def test_gdb_lists_fibers_from_a_core_file(tmp_path: Path) -> None:
    pattern = Path("/proc/sys/kernel/core_pattern")
    if not pattern.exists() or not pattern.read_text().startswith("core"):
        pytest.skip("the kernel does not write core files to the working directory here")
    executable = os.path.realpath(sys.executable)
    with open(executable, "rb") as f:
        if f.read(4) != b"\x7fELF":
            pytest.skip("this Python runs through a launcher script: gdb cannot load its core")
    child = start_child(tmp_path)
    child.send_signal(signal.SIGABRT)
    child.communicate(timeout=BOUND)
    cores = list(tmp_path.glob("core*"))
    if not cores:
        pytest.skip("no core file was written (core dumps disabled)")
    try:
        check(gdb(executable, str(cores[0])))
    finally:
        for core in cores:
            core.unlink()
