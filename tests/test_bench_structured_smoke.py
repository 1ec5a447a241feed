"""``benchmarks/bench_structured.py --quick`` runs and prints its table (smoke test only: no
timing assertions; trio, if not installed, shows as ``-``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import stackful

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_structured.py"
PACKAGE_PARENT = str(Path(stackful.__file__).resolve().parents[1])
ROWS = [
    "group: spawn+join 10,000",
    "scope with deadline, enter+exit",
    "scope, no deadline, enter+exit",
    "deadline expires in a wait",
]


def test_quick_run_prints_every_row() -> None:
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--rounds", "1"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {}
    for line in done.stdout.splitlines():
        if line.startswith("| ") and not line.startswith("| workload"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    assert list(rows) == ROWS
    for cells in rows.values():
        assert len(cells) == 5
        assert float(cells[0]) > 0 and float(cells[1]) > 0  # stackful, asyncio
        assert cells[3].endswith("x")  # asyncio/stackful
