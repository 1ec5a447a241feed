"""coverage.py credits every line to the fiber that ran it (stackful.coverage_plugin).

Each program below marks the lines that never run with ``# never``; every other statement
runs.  ``coverage run`` of it, then ``coverage json``, must report exactly those as missing.
Without the plugin coverage.py's trace-function core gets it wrong (checked too, so these
tests can fail); its ``sysmon`` core (3.12+) is exact on its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("coverage")

BOUND = 120

OTHER_MODULE = textwrap.dedent('''
    import stackful


    def deep(n, peer):
        if n:
            return deep(n - 1, peer)
        stackful.current().parent.switch()
        x = 1
        y = 2
        return x + y


    def child():
        stackful.current().parent.switch()
        a = 1
        b = 2
        c = 3
        return a + b + c


    def task_body(ev, results):
        ev.wait()
        results.append(1)
        stackful.sleep(0)
        results.append(2)
        return len(results)


    def unused():
        q = 1  # never
        r = 2  # never
        return q + r  # never
''')

PROGRAM = textwrap.dedent('''
    import stackful
    import other


    def never_called():
        a = 1  # never
        b = 2  # never
        c = 3  # never
        d = 4  # never
        return a + b + c + d  # never


    def plain_fibers():
        f = stackful.Fiber(other.child)
        f.switch()
        g = stackful.Fiber(other.deep)
        g.switch(3, None)
        f.switch()
        g.switch()
        done = 1
        return done


    def tasks():
        ev = stackful.Event()
        results = []
        ts = [stackful.spawn(other.task_body, ev, results) for _ in range(3)]
        stackful.sleep(0)
        ev.set()
        for t in ts:
            t.join()
        total = len(results)
        return total


    plain_fibers()
    stackful.run(tasks)
    finished = True
''')


def measure(tmp_path: Path, plugin: bool, core: str | None) -> dict[str, set[int]]:
    (tmp_path / "other.py").write_text(OTHER_MODULE)
    (tmp_path / "prog.py").write_text(PROGRAM)
    rc = "[run]\nsource = .\n" + ("plugins = stackful.coverage_plugin\n" if plugin else "")
    (tmp_path / "rc").write_text(rc)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop("COVERAGE_CORE", None)
    if core is not None:
        env["COVERAGE_CORE"] = core
    for args in (["run", "--rcfile=rc", "prog.py"], ["json", "--rcfile=rc", "-o", "cov.json"]):
        done = subprocess.run([sys.executable, "-m", "coverage", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=BOUND)
        assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "cov.json").read_text())
    return {Path(name).name: set(data["missing_lines"])
            for name, data in report["files"].items()}


def expected_missing() -> dict[str, set[int]]:
    def never(text: str) -> set[int]:
        return {i for i, line in enumerate(text.splitlines(), 1) if line.endswith("# never")}

    return {"prog.py": never(PROGRAM), "other.py": never(OTHER_MODULE)}


def cores() -> list[str]:
    out = ["ctrace"]
    if sys.version_info >= (3, 12):
        out.append("sysmon")
    return out


@pytest.mark.parametrize("core", cores())
def test_lines_run_on_fibers_are_credited_exactly(tmp_path: Path, core: str) -> None:
    assert measure(tmp_path, plugin=True, core=core) == expected_missing()


def test_without_the_plugin_the_trace_core_misses_lines(tmp_path: Path) -> None:
    # What the plugin fixes (and so what the test above would catch): after a switch, lines
    # are credited to the file of the fiber that switched.
    missing = measure(tmp_path, plugin=False, core="ctrace")
    assert missing != expected_missing()
    assert missing["prog.py"] > expected_missing()["prog.py"]
