"""Run a program on stackful.greenlet: ``python -m stackful.greenlet script.py [args]``.

``install()`` runs first, so every ``import greenlet`` in the program (gevent, eventlet,
SQLAlchemy...) gets stackful's; then the target runs as ``python script.py`` or
``python -m module`` would run it: as ``__main__``, with ``sys.argv`` set to the target and
its arguments, and the script's directory first on ``sys.path``.
"""

from __future__ import annotations

import os
import runpy
import sys

from stackful.greenlet import install

USAGE = "usage: python -m stackful.greenlet (script.py | -m module) [args...]"


def main(argv: list[str]) -> None:
    """Run the target named by ``argv`` (without the program name) on stackful.greenlet."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        raise SystemExit(2 if not argv else 0)
    install()
    if argv[0] == "-m":
        if len(argv) < 2:
            print(USAGE, file=sys.stderr)
            raise SystemExit(2)
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
