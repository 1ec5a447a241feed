"""``benchmarks/bench_core.py --quick`` runs and prints its table.

Smoke tests only: CI machines are too noisy for timing assertions, so these check that every
row is there and that a missing greenlet is reported rather than fatal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import stackful

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_core.py"
# Run the benchmark on the stackful this test imported (in place or installed).
PACKAGE_PARENT = str(Path(stackful.__file__).resolve().parents[1])
ROWS = [
    "switch, depth 0",
    "switch, 10 Python levels deep",
    "switch, 100 C-heavy levels deep",
    "spawn + finish",
    "RSS per suspended, KiB",
    "page tables per suspended, KiB",
]


def run_quick(*front_of_path: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*front_of_path, PACKAGE_PARENT]))
    done = subprocess.run([sys.executable, str(BENCH), "--quick"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def table_rows(out: str) -> dict[str, list[str]]:
    """The table's body: first cell -> the other cells."""
    rows = {}
    for line in out.splitlines():
        if line.startswith("| ") and not line.startswith("| workload"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_quick_run_prints_every_row_and_the_targets() -> None:
    out = run_quick()
    rows = table_rows(out)
    assert list(rows) == ROWS
    assert all(len(cells) == 5 for cells in rows.values())
    stackful_column = [cells[0] for cells in rows.values()]
    assert all(float(v) >= 0 for v in stackful_column)
    # Generators cannot suspend across sorted()'s C frames.
    assert rows["switch, 100 C-heavy levels deep"][2] == "n/a"
    assert "Targets of issue #2:" in out
    assert out.count("\n- ") == 4


def test_a_missing_greenlet_is_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "greenlet.py").write_text("raise ImportError('hidden by the test')\n")
    out = run_quick(str(tmp_path))
    assert "greenlet not installed" in out
    rows = table_rows(out)
    assert list(rows) == ROWS
    assert all(cells[1] == "not installed" for cells in rows.values())
    assert all(cells[3] == "-" for cells in rows.values())  # no greenlet/stackful ratio
