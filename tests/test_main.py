"""``python -m stackful``: the seeds' demo prints the book's interleaving."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stackful.__main__ import main

from ._support import child_env


def expected(threads: int) -> list[str]:
    """The book's output, generalised: round-robin over threads still counting."""
    counts = {k: 5 * (k + 1) for k in range(1, threads + 1)}
    lines: list[str] = []
    progress = dict.fromkeys(counts, -1)  # -1: not started yet
    live = list(counts)
    while live:
        for k in list(live):
            if progress[k] == -1:
                lines.append(f"THREAD {k} STARTING")
            progress[k] += 1
            if progress[k] < counts[k]:
                lines.append(f"thread: {k} counter: {progress[k]}")
            else:
                lines.append(f"THREAD {k} FINISHED")
                live.remove(k)
    return lines


def test_book_output_starts_like_the_book() -> None:
    assert expected(2)[:5] == [
        "THREAD 1 STARTING",
        "thread: 1 counter: 0",
        "THREAD 2 STARTING",
        "thread: 2 counter: 0",
        "thread: 1 counter: 1",
    ]
    assert expected(2)[-2:] == ["thread: 2 counter: 14", "THREAD 2 FINISHED"]


def test_module_runs_the_demo() -> None:
    env = child_env()
    out = subprocess.run([sys.executable, "-m", "stackful"], capture_output=True, text=True,
                         env=env, timeout=60, check=True)
    assert out.stdout.splitlines() == expected(2)
    assert out.stderr == ""


@pytest.mark.parametrize("argv,threads", [(["--threads", "4"], 4),
                                           (["--threads", "3", "--stack-size", "64k"], 3),
                                           (["--stack-size", "1048576"], 2)])
def test_options(argv: list[str], threads: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == expected(threads)


@pytest.mark.parametrize("argv,message", [(["--threads", "0"], "--threads must be at least 1"),
                                          (["--stack-size", "12"], "stack size must be at least"),
                                          (["--stack-size", "lots"], "not a size: 'lots'")])
def test_bad_options(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
