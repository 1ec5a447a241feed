"""Environment for tests that run Python in a subprocess."""

from __future__ import annotations

import os
from pathlib import Path

import stackful

# Where this process imported stackful from: src/ in a development tree (with the extension
# built in place), site-packages when installed.  Children import it from the same place.
PACKAGE_PARENT = str(Path(stackful.__file__).resolve().parents[1])


def child_env(**extra: str) -> dict[str, str]:
    """os.environ with stackful importable as here, no inherited faulthandler, plus `extra`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    env.pop("PYTHONFAULTHANDLER", None)
    env.update(extra)
    return env
