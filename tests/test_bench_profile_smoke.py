"""``benchmarks/bench_profile.py --quick`` runs and prints its table (smoke test only: no
timing assertions)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import stackful

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_profile.py"
PACKAGE_PARENT = str(Path(stackful.__file__).resolve().parents[1])


def test_quick_run_prints_every_row() -> None:
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    done = subprocess.run([sys.executable, str(BENCH), "--quick"], env=env,
                          capture_output=True, text=True, timeout=300, cwd=BENCH.parent)
    assert done.returncode == 0, done.stderr
    rows = {}
    for line in done.stdout.splitlines():
        if line.startswith("| ") and not line.startswith("| ns per operation"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = [float(c) for c in cells[1:]]
    assert list(rows) == ["python call", "fiber switch", "yield_now"]
    assert all(v > 0 for cells in rows.values() for v in cells)
