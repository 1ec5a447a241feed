"""Run part of gevent's own test suite on real greenlet and on stackful.greenlet, side by side.

gevent ships its tests inside the package; each chosen module runs as a script in a fresh
process, once as ``python -m gevent.tests.MODULE`` (on the real greenlet gevent installed)
and once as ``python -m stackful.greenlet -m gevent.tests.MODULE`` (the same compiled gevent,
its Cython modules reaching stackful through greenlet's C API capsule).  Prints a table of
tests run / failed / errors per module and side; a module that does not finish within the
timeout is shown as such.

    python tools/gevent_suite.py [--timeout 300] [--check] [MODULE ...]

The interpreter needs gevent (from PyPI) installed; stackful is found on PYTHONPATH or
installed (this script adds the source tree's ``src``).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

from suite_common import with_pythonpath  # a script beside this one

# The part of gevent's suite issue 13 names: greenlets, hub, events, queues, pools, locks,
# timeouts, sockets, monkey.patch_all(), subprocess, DNS resolver threads, gevent.local.
MODULES = [
    "test__greenlet", "test__GreenletExit", "test__greenletset", "test__joinall", "test__iwait",
    "test__hub", "test__hub_join", "test__sleep0", "test__api", "test__api_timeout",
    "test__event", "test__queue", "test__pool", "test__semaphore", "test__lock",
    "test__timeout", "test__local", "test__contextvars", "test__exc_info",
    "test__socket", "test__socketpair", "test__socket_close", "test__socket_timeout",
    "test__server", "test__pywsgi", "test__select", "test__selectors",
    "test__monkey", "test__monkey_queue", "test__monkey_select",
    "test__subprocess", "test__subprocess_poll", "test__socket_dns", "test__getaddrinfo_import",
    "test__threadpool", "test__threading", "test__thread", "test__fileobject",
    "test__os", "test__signal", "test__refcount", "test__destroy", "test__order",
]

SUMMARY = re.compile(r"^Ran (\d+) tests? in")
FAILED = re.compile(r"^FAILED \((.*)\)")


def run_one(module: str, stackful: bool, timeout: float) -> tuple[str, float]:
    """(outcome, seconds) of one module on one side."""
    target = ["-m", f"gevent.tests.{module}"]
    cmd = [sys.executable, *(["-m", "stackful.greenlet"] if stackful else []), *target]
    env = with_pythonpath(dict(os.environ))
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start
    took = time.monotonic() - start
    ran, failed = None, ""
    for line in done.stderr.splitlines() + done.stdout.splitlines():
        if m := SUMMARY.match(line):
            ran = int(m.group(1))
        if m := FAILED.match(line):
            failed = m.group(1)
    if ran is None:
        return f"crashed (rc {done.returncode})", took
    if done.returncode == 0:
        return f"ok {ran}", took
    return f"{ran} run: {failed or 'rc ' + str(done.returncode)}", took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a module ends differently on stackful.greenlet (each "
                             "difference is run once more on both sides first: gevent's suite "
                             "has timing-sensitive tests)")
    parser.add_argument("--skip", action="append", default=[], metavar="MODULE",
                        help="leave a module out (repeatable)")
    parser.add_argument("modules", nargs="*", default=MODULES)
    args = parser.parse_args()
    args.modules = [m for m in args.modules if m not in args.skip]
    differ = []
    print(f"{'module':32} {'greenlet':34} {'stackful.greenlet':34}")
    for module in args.modules:
        for attempt in range(2 if args.check else 1):
            real, t_real = run_one(module, False, args.timeout)
            ours, t_ours = run_one(module, True, args.timeout)
            again = " (again)" if attempt else ""
            print(f"{module + again:32} {real + f' ({t_real:.0f}s)':34} "
                  f"{ours + f' ({t_ours:.0f}s)':34}", flush=True)
            if real == ours:
                break
        else:
            differ.append(module)
    print(f"{len(args.modules) - len(differ)} of {len(args.modules)} modules end the same on "
          f"both" + (f"; different: {' '.join(differ)}" if differ else ""))
    return 1 if args.check and differ else 0


if __name__ == "__main__":
    sys.exit(main())
