"""Markdown tables for the benchmarks, so their output pastes into BENCHMARKS.md as is.

A benchmark builds rows of already-formatted cells; ``render`` pads the columns (text left,
numbers right) and ``ratio`` formats "theirs / ours" the same way everywhere: above 1 means
stackful is better, a missing side gives "-".
"""

from __future__ import annotations

from collections.abc import Sequence


def ratio(theirs: float | None, ours: float | None) -> str:
    """``theirs / ours`` as ``"5.6x"``, or ``"-"`` when either side was not measured."""
    if theirs is None or ours is None or ours <= 0:
        return "-"
    value = theirs / ours
    return f"{value:.1f}x" if value >= 10 else f"{value:.2f}x"


def render(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; the first column is left-aligned, the others right-aligned."""
    widths = [len(h) for h in header]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row has {len(row)} cells, header has {len(header)}: {row!r}")
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [cells[0].ljust(widths[0])]
        padded += [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        ":" + "-" * (w + 1) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)
    ) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])
