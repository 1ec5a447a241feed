"""stackful.files: file objects whose blocking calls park the task (files.py)."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

import stackful
from stackful import Cancelled, files

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

    assert stackful.run(main) == (["first\n", "second\n", "third\n"], b"second", 12)


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

    assert stackful.run(main) == b"payload"
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

    stackful.run(main)


def test_errors_come_back_as_the_files_own() -> None:
    def main() -> None:
        with pytest.raises(FileNotFoundError):
            files.open("/nonexistent/dir/file")
        f = files.wrap_file(io.BytesIO(b"x"))
        f.close()
        with pytest.raises(ValueError, match="closed"):
            f.read()

    stackful.run(main)


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

    stackful.run(main)
    assert all((tmp_path / f"f{i}").read_text() == str(i) * 100 for i in range(50))
