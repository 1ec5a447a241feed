"""Run eventlet's own test suite on real greenlet and on stackful.greenlet, side by side.

eventlet's tests are not in its wheel: this downloads its sdist from PyPI (pinned below;
cached), takes its ``tests/`` as they are, and runs them with pytest against the eventlet
installed in this interpreter (the wheel from PyPI), twice: once as ``python -m pytest`` (on
the real greenlet eventlet installed) and once as ``python -m stackful.greenlet -m pytest``.
On that side, eventlet's tests that start a Python of their own (its ``tests/isolated``
scripts, the patcher tests) get stackful.greenlet too: a package named ``greenlet`` that
hands out stackful.greenlet is put ahead on PYTHONPATH, which they inherit.

Prints passed / failed / skipped per test file and side, then every test that ended
differently; the tests left out are listed below with the reason for each.

    python tools/eventlet_suite.py [--check] [--cache DIR] [TEST ...] [--pytest-option=VALUE ...]

TEST is a path or node id under eventlet's ``tests/`` (all of it by default); pytest's own
options go through when written in one piece (``--maxfail=3``, ``-kgreenio``).

``--check`` exits 1 if a test ends differently on stackful.greenlet (each difference is run
once more on both sides first: some of eventlet's tests are timing-sensitive).  The
interpreter needs eventlet (from PyPI, the version pinned here), pytest and pytest-timeout;
stackful is found installed, or in the source tree's ``src`` when built in place there.
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from suite_common import default_cache, pypi_sdist, with_pythonpath  # a script beside this one

EVENTLET_VERSION = "0.41.3"

# Tests left out, and why.  Only what depends on the machine may be listed; a test that
# ends differently on stackful.greenlet is a bug to fix, not a line here.  (The tests of
# eventlet's MySQL, PostgreSQL and ZeroMQ support skip themselves, on both sides alike,
# without those servers and drivers; they are not set up here.)
NOT_RUN: dict[str, str] = {
    # Both connect to 192.0.2.1 (TEST-NET-1) and expect the connect to hang until the
    # socket's timeout: they need a network that silently drops it.  Without a route to
    # it the connect fails at once, and the test fails (on real greenlet as on stackful).
    "tests/greenio_test.py::TestGreenSocket::test_connect_timeout":
        "needs a network that silently drops a connect to 192.0.2.1",
    "tests/greenio_test.py::TestGreenSocket::test_connect_ex_timeout":
        "needs a network that silently drops a connect to 192.0.2.1",
}

# The package ``import greenlet`` finds first on the stackful side, for the Pythons that
# eventlet's tests start (the pytest process itself runs under python -m stackful.greenlet).
SHIM_INIT = '''\
"""greenlet's name, stackful's greenlet: eventlet's test subprocesses import this."""
import sys

import stackful.greenlet

sys.modules[__name__] = stackful.greenlet  # the import statement hands this out instead
'''

Outcomes = dict[str, str]  # pytest node id -> "passed" / "failed" / "error" / "skipped"


def lay_out(archive: Path, work: Path) -> Path:
    """eventlet's tests/ from the sdist into `work`, and the greenlet shim beside them;
    returns the shim's directory."""
    top = f"eventlet-{EVENTLET_VERSION}/"
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.name.startswith(top + "tests/"):
                member.name = member.name[len(top):]
                tar.extract(member, work, filter="data")
    shim = work / "stackful-shim"
    (shim / "greenlet").mkdir(parents=True)
    (shim / "greenlet" / "__init__.py").write_text(SHIM_INIT)
    return shim


def node_id(work: Path, classname: str, name: str) -> str:
    """pytest's node id of a junit-xml test case (its classname is dotted module[.class]);
    a module skipped whole has no classname, its name is the dotted module."""
    if not classname:
        return name.replace(".", "/") + ".py"
    parts = classname.split(".")
    for i in range(len(parts), 0, -1):
        path = "/".join(parts[:i]) + ".py"
        if (work / path).exists():
            return "::".join([path, *parts[i:], name])
    return f"{classname}::{name}"


def read_junit(work: Path, report: Path) -> Outcomes:
    """Each test's outcome in a pytest junit-xml report (an error in setup or teardown
    counts as the test's)."""
    outcomes: Outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = ("error" if "error" in kinds else "failed" if "failure" in kinds
                   else "skipped" if "skipped" in kinds else "passed")
        outcomes[node_id(work, case.get("classname", ""), case.get("name", ""))] = outcome
    return outcomes


def run_side(work: Path, shim: Path | None, targets: list[str], extra: list[str],
             timeout: float) -> tuple[Outcomes | None, float, str]:
    """(outcomes, seconds, output tail) of one pytest run; on stackful.greenlet if `shim`
    is given.  Outcomes are None if pytest did not finish."""
    report = work / ("stackful.xml" if shim else "greenlet.xml")
    report.unlink(missing_ok=True)
    runner = ["-m", "stackful.greenlet"] if shim else []
    # eventlet's own LimitedTestCase uses SIGALRM: pytest-timeout must use its thread.
    cmd = [sys.executable, *runner, "-m", "pytest", "-p", "no:cacheprovider", "-q",
           "--timeout=120", "-o", "timeout_method=thread", f"--junitxml={report}",
           *extra, *targets]
    env = with_pythonpath(dict(os.environ), *([str(shim)] if shim else []))
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout or b""
        return None, time.monotonic() - start, (
            out.decode(errors="replace") if isinstance(out, bytes) else out)[-3000:]
    took = time.monotonic() - start
    tail = (done.stdout + done.stderr)[-3000:]
    if not report.exists():
        return None, took, tail
    return read_junit(work, report), took, tail


def check_setup(shim: Path) -> None:
    """Fail early unless the installed eventlet is the version whose tests are run, and a
    Python started with the stackful side's environment imports stackful.greenlet as greenlet."""
    installed = importlib.metadata.version("eventlet")
    if installed != EVENTLET_VERSION:
        raise SystemExit(f"eventlet_suite: eventlet {installed} is installed; its tests are "
                         f"{EVENTLET_VERSION}'s (pip install eventlet=={EVENTLET_VERSION})")
    env = with_pythonpath(dict(os.environ), str(shim))
    name = subprocess.run([sys.executable, "-c", "import greenlet; print(greenlet.__name__)"],
                          env=env, capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()
    if name != "stackful.greenlet":
        raise SystemExit(f"eventlet_suite: a test subprocess would import {name}, "
                         "not stackful.greenlet")


def counts(outcomes: Outcomes, file: str | None = None) -> str:
    """'P passed, F failed, ...' of all the tests, or of one test file's."""
    tally = collections.Counter(o for t, o in outcomes.items()
                                if file is None or t.split("::")[0] == file)
    return ", ".join(f"{tally[k]} {k}" for k in ("passed", "failed", "error", "skipped")
                     if tally[k]) or "none"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a test ends differently on stackful.greenlet (each "
                             "difference is run once more on both sides first)")
    parser.add_argument("--cache", type=Path, default=default_cache("stackful-eventlet-suite"))
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds a side may take in all")
    args, pytest_args = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="eventlet-suite-") as tmp:
        work = Path(tmp)
        shim = lay_out(pypi_sdist("eventlet", EVENTLET_VERSION, args.cache), work)
        check_setup(shim)
        left_out = [a for t in NOT_RUN for a in ("--deselect", t)]
        targets = [a for a in pytest_args if not a.startswith("-")] or ["tests"]
        extra = [*left_out, *(a for a in pytest_args if a.startswith("-"))]
        sides = {}
        for label, side_shim in (("greenlet", None), ("stackful.greenlet", shim)):
            outcomes, took, tail = run_side(work, side_shim, targets, extra, args.timeout)
            if outcomes is None:
                print(f"eventlet's tests did not finish on {label} ({took:.0f}s):\n{tail}")
                return 1
            print(f"{label}: {counts(outcomes)} ({took:.0f}s)", flush=True)
            sides[label] = outcomes
        real, ours = sides["greenlet"], sides["stackful.greenlet"]
        files = sorted({t.split("::")[0] for t in real.keys() | ours.keys()})
        print(f"\n{'test file':38} {'greenlet':30} {'stackful.greenlet':30}")
        for name in files:
            print(f"{name:38} {counts(real, name):30} {counts(ours, name):30}")
        differ = sorted(t for t in real.keys() | ours.keys() if real.get(t) != ours.get(t))
        if differ and args.check:
            print(f"\n{len(differ)} tests ended differently; running them once more on both")
            again_real, _, _ = run_side(work, None, differ, extra, args.timeout)
            again_ours, _, _ = run_side(work, shim, differ, extra, args.timeout)
            differ = [t for t in differ
                      if again_real is None or again_ours is None
                      or again_real.get(t) != again_ours.get(t)]
        for test in differ:
            print(f"  differs: {test}: greenlet {real.get(test, 'not run')}, "
                  f"stackful.greenlet {ours.get(test, 'not run')}")
        print(f"\n{len(real.keys() | ours.keys()) - len(differ)} of "
              f"{len(real.keys() | ours.keys())} tests end the same on both; "
              f"{len(NOT_RUN)} left out (listed in tools/eventlet_suite.py)")
        return 1 if args.check and differ else 0


if __name__ == "__main__":
    sys.exit(main())
