"""Run a Python command under Valgrind memcheck and fail on errors that matter.

    python tools/valgrind_check.py [pytest args...]

CPython is not built for Valgrind here, so memcheck reports noise from the
interpreter itself (uninitialised values in its startup, over-reads by libc's
vectorised string functions).  This fails on every invalid read, write or free
outside those string functions, and on any error with a frame in stackful's
own native code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

# A frame is ours if it is in the extension: matched on the shared object, not on source
# names (CPython has thread.c and gcmodule.c too).
OURS = "/stackful/_native.cpython"
SERIOUS = {"InvalidRead", "InvalidWrite", "InvalidFree", "MismatchedFree", "InvalidJump",
           "Overlap", "FishyValue"}
LIBC_VECTOR_STRING = ("avx", "sse", "evex")
# Seconds the run under valgrind may take (tens of times slower than without): a hang fails.
RUN_TIMEOUT = 1800


def frames(error: ET.Element) -> list[str]:
    out = []
    for frame in error.iter("frame"):
        parts = [frame.findtext(tag) or "" for tag in ("fn", "file", "obj")]
        out.append(" ".join(p for p in parts if p))
    return out


def matters(error: ET.Element) -> bool:
    kind = error.findtext("kind") or ""
    if kind.startswith("Leak_"):
        return False  # what CPython keeps at exit; leaks are checked in Python (tests)
    stack = frames(error)
    if any((frame.findtext("obj") or "").find(OURS) >= 0 for frame in error.iter("frame")):
        return True
    if kind in SERIOUS:
        top = stack[0] if stack else ""
        return not any(mark in top for mark in LIBC_VECTOR_STRING)
    return False


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        xml_path = os.path.join(tmp, "vg-%p.xml")
        cmd = ["valgrind", "--tool=memcheck", "--xml=yes", f"--xml-file={xml_path}",
               "--leak-check=no", "--num-callers=40", sys.executable, "-m", "pytest",
               "-q", "-p", "no:cacheprovider", *argv]
        env = dict(os.environ, PYTHONMALLOC="malloc")
        try:
            run = subprocess.run(cmd, env=env, timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"valgrind: the run did not finish in {RUN_TIMEOUT} s")
            return 1
        bad = 0
        for name in sorted(os.listdir(tmp)):
            try:
                root = ET.parse(os.path.join(tmp, name)).getroot()
            except ET.ParseError:
                # A child process that exec'd (valgrind does not follow it) leaves a
                # truncated file: nothing of it ran under valgrind.
                continue
            for error in root.iter("error"):
                if matters(error):
                    bad += 1
                    print(f"valgrind: {error.findtext('kind')}: "
                          f"{error.findtext('what') or error.findtext('xwhat/text')}")
                    for f in frames(error)[:15]:
                        print("    ", f)
        print(f"valgrind: {bad} error(s) in stackful's code or invalid accesses")
        if run.returncode != 0:
            return run.returncode
        return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
