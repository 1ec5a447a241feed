"""stackful.files: file objects whose blocking calls park the task (files.py)."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

import stackful
from stackful import Cancelled, files

from ._net import run_bounded

# Every blocking call runs on a worker thread: each run is a run_bounded, so a call that
# never comes back fails the test instead of hanging it.
LIMIT = 10.0


def test_text_and_binary_round_trips_in_a_task(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"

    def main() -> tuple[list[str], bytes, int]:
        with files.open(path, "w", encoding="utf-8") as f:
            f.write("first\n")
            f.writelines(["second\n", "third\n"])
        with files.open(path, encoding="utf-8") as f:
            lines = list(f)
        with files.open(path, "rb") as f:
            f.seek(6)
            head = f.read(6)
            return lines, head, f.tell()

    assert run_bounded(main) == (["first\n", "second\n", "third\n"], b"second", 12)


def test_blocking_calls_run_on_a_worker_thread_while_other_tasks_run() -> None:
    # The "disk" answers only after another task ran: a read on the runtime's thread would
    # wait out LIMIT and fail.
    answered = threading.Event()
    readers: list[int] = []

    class SlowDisk(io.BytesIO):
        def read(self, size: int | None = -1, /) -> bytes:
            readers.append(threading.get_ident())
            assert answered.wait(LIMIT), "the other task never ran"
            return super().read(size)

    def main() -> bytes:
        f = files.wrap_file(SlowDisk(b"payload"))
        stackful.spawn(answered.set)
        data: bytes = f.read()
        return data

    assert run_bounded(main) == b"payload"
    assert readers and readers[0] != threading.get_ident()


def test_outside_a_runtime_calls_go_straight_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "plain.bin"
    with files.open(path, "wb") as f:
        assert f.write(b"abc") == 3
        assert f.name == str(path) and f.mode == "wb" and not f.closed
    with files.open(path, "rb") as f:
        assert f.read() == b"abc"
    assert f.closed


def test_a_cancelled_read_stops_waiting_at_once() -> None:
    release = threading.Event()

    class Stuck(io.BytesIO):
        def read(self, size: int | None = -1, /) -> bytes:
            release.wait(LIMIT)
            return b""

    def main() -> None:
        f = files.wrap_file(Stuck())
        reader = stackful.spawn(f.read)
        stackful.sleep(0.02)
        reader.cancel()
        with pytest.raises(Cancelled):
            reader.join()
        release.set()

    run_bounded(main)


def test_errors_come_back_as_the_files_own() -> None:
    def main() -> None:
        with pytest.raises(FileNotFoundError):
            files.open("/nonexistent/dir/file")
        f = files.wrap_file(io.BytesIO(b"x"))
        f.close()
        with pytest.raises(ValueError, match="closed"):
            f.read()

    run_bounded(main)


def test_wrap_file_checks_its_argument() -> None:
    with pytest.raises(TypeError, match="file object"):
        files.wrap_file(42)
    inner = io.StringIO("x")
    wrapped = files.wrap_file(inner)
    assert files.wrap_file(wrapped) is wrapped and wrapped.wrapped is inner
    assert "CooperativeFile" in repr(wrapped)


def test_many_tasks_write_their_own_files(tmp_path: Path) -> None:
    def writer(i: int) -> None:
        with files.open(tmp_path / f"f{i}", "w") as f:
            f.write(str(i) * 100)

    def main() -> None:
        tasks = [stackful.spawn(writer, i) for i in range(50)]
        for t in tasks:
            t.join()

    run_bounded(main)
    assert all((tmp_path / f"f{i}").read_text() == str(i) * 100 for i in range(50))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_a_fifo_goes_through_the_poller_not_worker_threads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    lines = [f"line {i}\n" for i in range(2000)]  # more than a pipe holds: both sides wait
    opened = stackful.Event()

    def writer() -> None:
        with files.open(fifo, "w") as f:  # the open waits for the reader (on a worker)
            opened.set()
            for line in lines:
                f.write(line)

    def no_worker(*args: object) -> None:
        raise AssertionError("a FIFO's read or write went to a worker thread")

    def main() -> list[str]:
        task = stackful.spawn(writer)
        with files.open(fifo) as f:
            assert "FIFO" in repr(f)
            opened.wait()
            monkeypatch.setattr("stackful.files.to_thread", no_worker)
            got = list(f)
        task.join()
        return got

    assert run_bounded(main) == lines
