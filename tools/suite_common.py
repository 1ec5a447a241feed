"""What the scripts that run other projects' test suites on stackful.greenlet share
(greenlet_suite.py, gevent_suite.py, eventlet_suite.py): where stackful is found, the pinned
sdists from PyPI."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOWNLOAD_TIMEOUT = 600  # seconds for pip to fetch one sdist: a stalled download fails the run


def source_tree_path() -> list[str]:
    """The source tree's src, if stackful is built in place there for this interpreter
    (else the installed stackful is used)."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    built = (ROOT / "src" / "stackful" / f"_native{suffix}").exists()
    return [str(ROOT / "src")] if built else []


def default_cache(tool: str) -> Path:
    """Where a tool keeps what it downloads between runs."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / tool


def pypi_sdist(name: str, version: str, cache: Path) -> Path:
    """The sdist of `name`==`version` from PyPI, downloaded into `cache` the first time."""
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"{name}-{version}.tar.gz"
    if not archive.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", f"{name}=={version}", "-d", str(cache)],
            check=True, timeout=DOWNLOAD_TIMEOUT,
        )
    return archive


def with_pythonpath(env: dict[str, str], *first: str) -> dict[str, str]:
    """`env` with `first`, then the source tree's src (if built), ahead on PYTHONPATH."""
    paths = [*first, *source_tree_path(), env.get("PYTHONPATH", "")]
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}

