"""Run greenlet's own test suite against stackful.greenlet (issue 13).

Downloads greenlet's sdist from PyPI (pinned below; cached), lays its ``tests/`` out as
``greenlet.tests`` in a package named ``greenlet`` that re-exports ``stackful.greenlet``,
builds the suite's two C extensions against the sdist's own ``greenlet.h`` (so the C API
capsule and the instance layout are tested by code written for real greenlet), and runs
the suite with pytest, less the tests listed in NOT_PASSED with the reason for each.

    python tools/greenlet_suite.py [--real] [--all] [--cache DIR] [pytest args...]

``--real`` runs the same suite against the real greenlet installed in that interpreter
(its wheel ships the tests), for the side-by-side count; ``--all`` runs the listed tests
too.  The interpreter needs pytest, psutil and objgraph (the suite imports them); the
stackful run needs stackful importable (installed, or the source tree's ``src`` on
PYTHONPATH, which this script adds when stackful is built in place there).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

from suite_common import default_cache, pypi_sdist, with_pythonpath  # a script beside this one

GREENLET_VERSION = "3.5.6"
COMPILE_TIMEOUT = 300  # seconds to build one of the suite's C extensions


# greenlet's tests that stackful.greenlet does not pass, and why.  Only greenlet's own
# internals may be listed (its C++ helpers, stack copying, its per-thread bookkeeping);
# a behaviour a program could rely on is a bug to fix, not a line here.
NOT_PASSED: dict[str, str] = {
    # greenlet's failure injection into its own stack switch (UnswitchableGreenlet's
    # force_switch_error, a script that breaks slp_switch): there is no such switch here.
    "test_greenlet.py::TestBrokenGreenlets::test_failed_to_initialstub":
        "injects a failure into greenlet's C stack switch",
    "test_greenlet.py::TestBrokenGreenlets::test_failed_to_switch_into_running":
        "injects a failure into greenlet's C stack switch",
    "test_greenlet.py::TestBrokenGreenlets::test_failed_to_slp_switch_into_running":
        "breaks greenlet's slp_switch in a subprocess and expects it to abort",
    # greenlet copies stacks; _stack_saved counts the bytes copied off the C stack.
    "test_stack_saved.py::Test::test_stack_saved":
        "greenlet's stack copying (stackful never copies a stack: _stack_saved is 0)",
    # Reads CPython's trashcan nesting through greenlet._greenlet's private helpers.
    "test_greenlet_trash.py::TestTrashCanReEnter::test_it":
        "needs greenlet._greenlet.get_tstate_trash_delete_nesting, a private C helper",
}

# The stand-in for greenlet's private extension module, greenlet._greenlet: what the
# suite's harness reads of greenlet's bookkeeping.  stackful has no delayed cleanup
# queue (a dropped greenlet of another thread is killed at that thread's next switch).
SHIM_PRIVATE = '''\
"""Stand-ins for greenlet's private module, for greenlet's test harness only."""

from stackful.greenlet import *  # noqa: F401,F403
from stackful.greenlet import greenlet as UnswitchableGreenlet  # noqa: F401

CLOCKS_PER_SEC = 1000000


def get_pending_cleanup_count():
    return 0


def get_total_main_greenlets():
    return 0


def enable_optional_cleanup(enabled):
    pass


def get_clocks_used_doing_optional_cleanup():
    return None


def set_thread_local(key, value):
    import threading
    setattr(threading.current_thread(), "_greenlet_local_" + str(key), value)
'''

# greenlet marks some tests as leaking (greenlet's own leaks), and its harness fails a marked
# test that does not leak.  stackful does not leak there, so on stackful the marks are
# dropped and those tests run under the same leak check as every other.
CONFTEST = '''\
"""Drop greenlet's marks of its own leaks: on stackful those tests must not leak."""
from greenlet.tests import leakcheck


def _checked(func):
    return func


leakcheck.fails_leakcheck = _checked
leakcheck.fails_leakcheck_on_py314_or_less = _checked
'''

SHIM_INIT = f'''\
"""greenlet's name, stackful's greenlet: the package greenlet's suite imports."""
from stackful.greenlet import *  # noqa: F401,F403
from stackful.greenlet import (  # noqa: F401
    GREENLET_USE_CONTEXT_VARS,
    GREENLET_USE_GC,
    GREENLET_USE_STANDARD_THREADING,
    GREENLET_USE_TRACING,
    _C_API,
)
from . import _greenlet  # noqa: F401

__version__ = "{GREENLET_VERSION}"
'''


def build_extension(source: Path, include: Path) -> None:
    """Compile one of the suite's C extensions next to its source, against `include`."""
    cxx = source.suffix == ".cpp"
    compiler = (sysconfig.get_config_var("CXX") if cxx else sysconfig.get_config_var("CC")) or (
        "g++" if cxx else "cc")
    out = source.with_name(source.stem + sysconfig.get_config_var("EXT_SUFFIX"))
    cmd = [*compiler.split(), "-shared", "-fPIC", "-O1", f"-I{sysconfig.get_paths()['include']}",
           f"-I{include}", str(source), "-o", str(out)]
    subprocess.run(cmd, check=True, timeout=COMPILE_TIMEOUT)


def lay_out(archive: Path, work: Path) -> Path:
    """The shim package with greenlet's tests in it; returns the directory to put on sys.path."""
    top = f"greenlet-{GREENLET_VERSION}/src/greenlet/"
    pkg = work / "greenlet"
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.name.startswith(top + "tests/") or member.name in (
                    top + "greenlet.h", top + "greenlet_compiler_compat.hpp"):
                member.name = member.name[len(top):]
                tar.extract(member, pkg, filter="data")
    (pkg / "__init__.py").write_text(SHIM_INIT)
    (pkg / "_greenlet.py").write_text(SHIM_PRIVATE)
    (work / "conftest.py").write_text(CONFTEST)
    for source in ("_test_extension.c", "_test_extension_cpp.cpp"):
        build_extension(pkg / "tests" / source, pkg)
    return work


def run_suite(cmd: list[str], timeout: float, env: dict[str, str], cwd: Path | None = None
              ) -> int:
    """The suite's exit status; 1, said so, if it did not finish in ``timeout`` seconds
    (pytest's per-test timeout cannot end a hang outside a test)."""
    try:
        return subprocess.run(cmd, env=env, cwd=cwd, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"greenlet_suite: the suite did not finish in {timeout:.0f} s", file=sys.stderr)
        return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", action="store_true", help="test the real greenlet instead")
    parser.add_argument("--all", action="store_true", help="run the NOT_PASSED tests too")
    parser.add_argument("--cache", type=Path,
                        default=default_cache("stackful-greenlet-suite"))
    # Not --timeout: that one goes through to pytest (the per-test bound).
    parser.add_argument("--suite-timeout", type=float, default=1200,
                        help="seconds the whole suite may take (default: %(default)s)")
    args, pytest_args = parser.parse_known_args()
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o",
            "addopts=", "--timeout=60", "-o", "timeout_method=signal", *pytest_args]
    env = dict(os.environ)
    if args.real:
        return run_suite([*base, "--pyargs", "greenlet.tests"], args.suite_timeout, env=env)
    with tempfile.TemporaryDirectory(prefix="greenlet-suite-") as tmp:
        work = lay_out(pypi_sdist("greenlet", GREENLET_VERSION, args.cache), Path(tmp))
        tests = work / "greenlet" / "tests"
        deselect = [] if args.all else [
            a for test_id in NOT_PASSED for a in ("--deselect", f"greenlet/tests/{test_id}")]
        env = with_pythonpath(env, str(work))
        cmd = [*base, "--rootdir", str(work), *deselect, str(tests)]
        return run_suite(cmd, args.suite_timeout, env=env, cwd=work)


if __name__ == "__main__":
    shutil.which("cc")  # a C compiler is needed for the suite's extensions
    sys.exit(main())
