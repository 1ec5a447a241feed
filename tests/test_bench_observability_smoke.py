"""``benchmarks/bench_observability.py --quick`` runs and prints its tables (smoke test only:
no timing assertions).  With ``--compare-with`` it measures a second tree side by side: here
the same tree twice, which is enough to check the columns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import stackful

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_observability.py"
PACKAGE_PARENT = str(Path(stackful.__file__).resolve().parents[1])


def rows(out: str) -> dict[str, list[str]]:
    found = {}
    for line in out.splitlines():
        if line.startswith("| ") and not line.startswith(("| dump ", "| path ")):
            cells = [c.strip() for c in line.strip("|").split("|")]
            found[cells[0]] = cells[1:]
    return found


def test_quick_run_prints_every_row() -> None:
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--compare-with",
                           PACKAGE_PARENT], env=env, capture_output=True, text=True,
                          timeout=300, cwd=BENCH.parent)
    assert done.returncode == 0, done.stderr
    table = rows(done.stdout)
    assert list(table) == ["snapshot", "text", "json", "yield_now (one switch)",
                           "park + wake (one switch)"]
    for name in ("snapshot", "text", "json"):
        assert float(table[name][0]) > 0 and float(table[name][1]) > 0
    for name in ("yield_now (one switch)", "park + wake (one switch)"):
        this, other, ratio = table[name]
        assert float(this) > 0 and float(other) > 0 and float(ratio) > 0
