"""stackful.subprocess: the stdlib's subprocess API, parking the task inside a runtime and
blocking the thread outside one.  Real child processes (sh, cat, this Python); every wait is
bounded (run_bounded, or a timeout handed to the call)."""

from __future__ import annotations

import io
import os
import signal
import subprocess as std
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import stackful
from stackful import subprocess
from stackful.runtime_api import BusyResourceError, Cancelled

from ._net import BOUND, WORLDS, in_world, run_bounded, thread
from ._support import EMULATED

PY = sys.executable
BIG = 8 << 20  # bytes: far past a pipe's 64 KiB, in both directions


@pytest.fixture(params=["pidfd", "polling"])
def exit_notice(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with pidfds, and again as on a kernel without them (waitpid polling)."""
    if request.param == "polling":
        monkeypatch.setattr(subprocess, "_pidfd_works", False)
    elif not subprocess._pidfd_works:
        pytest.skip("no pidfd on this kernel")
    return str(request.param)


def assert_reaped(pid: int) -> None:
    """``pid`` is no child of ours any more: it was reaped, so it is no zombie."""
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def ticker(counter: list[int]) -> None:
    """A task that counts while others wait: proof that a wait parks the task, not the thread."""
    while True:
        counter[0] += 1
        stackful.sleep(0.001)


def wait_until_parked(task: stackful.Task) -> None:
    """Yield until ``task`` is parked in a wait (bounded by the test's run_bounded)."""
    while not task.waiting_on:
        stackful.sleep(0.001)


# -- the module stands in for the stdlib's --------------------------------------------------------


def test_module_has_the_stdlib_names_and_its_own_functions() -> None:
    assert set(subprocess.__all__) == set(std.__all__)
    ours = {"Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}
    for name in std.__all__:
        if name in ours:
            assert getattr(subprocess, name) is not getattr(std, name), name
        else:
            assert getattr(subprocess, name) is getattr(std, name), name
    assert issubclass(subprocess.Popen, std.Popen)
    assert subprocess.Popen.__name__ == "Popen"
    assert subprocess.Popen.__module__ == "stackful.subprocess"
    assert subprocess.Popen[bytes] is not None  # generic, as the stdlib's


def _outcome(fn: Callable[[], Any]) -> Any:
    """What a call gives, comparable between the stdlib and us: a value or an exception."""
    try:
        value = fn()
    except BaseException as exc:  # noqa: B036 - compared below
        return (type(exc), str(exc), getattr(exc, "returncode", None),
                getattr(exc, "output", None), getattr(exc, "stderr", None),
                getattr(exc, "errno", None))
    if isinstance(value, std.CompletedProcess):
        return ("CompletedProcess", value.args, value.returncode, value.stdout, value.stderr)
    return value


def _calls(mod: Any) -> list[Callable[[], Any]]:
    """The same calls, made through ``mod`` (the stdlib's subprocess, or ours)."""
    mixed = ["sh", "-c", r"printf 'a\r\nb\rc\n\351'; printf 'e\r\n' >&2; exit 2"]
    return [
        lambda: mod.run(mixed, capture_output=True),
        lambda: mod.run(mixed, capture_output=True, text=True, errors="replace"),
        lambda: mod.run(mixed, capture_output=True, universal_newlines=True, errors="replace"),
        lambda: mod.run(mixed, capture_output=True, encoding="latin-1"),
        lambda: mod.run(mixed, stdout=mod.PIPE, stderr=mod.STDOUT, encoding="latin-1"),
        lambda: mod.run(mixed, capture_output=True, check=True),
        lambda: mod.run(["cat"], input=b"xyz\r\n", stdout=mod.PIPE),
        lambda: mod.run(["cat"], input="xyz\r\n", text=True, stdout=mod.PIPE),
        lambda: mod.run(["cat"], input=memoryview(b"abcd").cast("I"), stdout=mod.PIPE),
        lambda: mod.run(["sh", "-c", "echo hi"], stdout=mod.DEVNULL),
        # One pipe and no timeout: communicate()'s short cut through the file objects.
        lambda: mod.run(["sh", "-c", "echo hi"], stdout=mod.PIPE),
        lambda: mod.run(["sh", "-c", "echo err >&2"], stderr=mod.PIPE, text=True),
        lambda: mod.run(["sh", "-c", "cat >/dev/null"], input=b"abc" * 100000),
        lambda: mod.run(["sh", "-c", "exec 0<&-"], input=b"x" * BIG),
        lambda: mod.run(["cat"], input=b"x", stdin=mod.PIPE),
        lambda: mod.run(["true"], capture_output=True, stdout=mod.PIPE),
        lambda: mod.run(["/nonexistent/program"]),
        lambda: mod.check_output(["sh", "-c", "echo out"]),
        lambda: mod.check_output(["cat"], input=None),
        lambda: mod.check_output(["cat"], input=None, text=True),
        lambda: mod.check_output(["sh", "-c", "echo out; exit 4"]),
        lambda: mod.check_output(["true"], stdout=mod.PIPE),
        lambda: mod.call(["sh", "-c", "exit 5"]),
        lambda: mod.check_call(["sh", "-c", "exit 6"]),
        lambda: mod.check_call(args=["sh", "-c", "exit 7"]),
        lambda: mod.check_call(["true"]),
        lambda: mod.getstatusoutput("echo a; echo b >&2; exit 3"),
        lambda: mod.getoutput("printf 'x\\n\\n'"),
        lambda: mod.Popen(["true"], bufsize="x"),
    ]


def test_outside_a_runtime_every_call_gives_what_the_stdlib_gives() -> None:
    for ours, theirs in zip(_calls(subprocess), _calls(std), strict=True):
        assert _outcome(ours) == _outcome(theirs)


def test_inside_a_task_every_call_gives_what_the_stdlib_gives() -> None:
    expected = [_outcome(call) for call in _calls(std)]
    got = run_bounded(lambda: [_outcome(call) for call in _calls(subprocess)])
    assert got == expected


@pytest.mark.parametrize("bufsize", [0, -1, 1, 4096])
@pytest.mark.parametrize("mode", [{}, {"text": True}, {"encoding": "utf-16", "errors": "replace"}])
def test_pipes_have_the_stdlib_layers(bufsize: int, mode: dict[str, Any]) -> None:
    def layers(f: Any) -> list[Any]:
        out = []
        while f is not None:
            out.append(type(f).__name__)
            for attr in ("encoding", "errors", "line_buffering", "write_through", "mode"):
                if hasattr(f, attr):
                    out.append((attr, getattr(f, attr)))
            if isinstance(f, io.BufferedReader | io.BufferedWriter):
                out.append(("buffer size", sys.getsizeof(f)))  # counts the buffer in C
            f = getattr(f, "buffer", None) or getattr(f, "raw", None)
        return out

    pipes = dict(stdin=std.PIPE, stdout=std.PIPE, stderr=std.PIPE)
    with warnings.catch_warnings(record=True) as theirs_warned:
        warnings.simplefilter("always")
        theirs = std.Popen(["true"], bufsize=bufsize, **pipes, **mode)
    with warnings.catch_warnings(record=True) as ours_warned:
        warnings.simplefilter("always")
        ours = subprocess.Popen(["true"], bufsize=bufsize, **pipes, **mode)
    # The same warnings (binary line buffering), none of our own.
    assert [str(w.message) for w in ours_warned] == [str(w.message) for w in theirs_warned]
    with theirs, ours:
        for name in ("stdin", "stdout", "stderr"):
            want = [("PipeIO" if x == "FileIO" else x) for x in layers(getattr(theirs, name))]
            assert layers(getattr(ours, name)) == want
            assert isinstance(getattr(ours, name), io.IOBase)


# -- concurrency: waits park the task --------------------------------------------------------------


def test_fifty_sleeping_children_run_at_once(exit_notice: str) -> None:
    """Each child prints when its 0.2 s sleep starts and ends; had a wait blocked the thread,
    no two sleeps would overlap (the next child is only started after the previous exits).
    Under qemu-user a fork of the emulator takes about 0.15 s: the sleeps there are 3 s."""
    script = f"date +%s.%N; sleep {3 if EMULATED else 0.2}; date +%s.%N"

    def one() -> tuple[float, float]:
        out = subprocess.run(["sh", "-c", script], capture_output=True, check=True).stdout
        start, end = map(float, out.split())
        return start, end

    def main() -> list[tuple[float, float]]:
        counter = [0]
        tick = stackful.spawn(ticker, counter)
        tasks = [stackful.spawn(one) for _ in range(50)]
        spans = [t.join() for t in tasks]
        tick.cancel()
        assert counter[0] > 10  # the ticker ran meanwhile
        return spans

    spans = run_bounded(main)
    # The most sleeps going on at one instant (a blocking wait would make it 1).
    peak = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert peak >= 10, spans


def test_reading_a_pipe_parks_the_task() -> None:
    def main() -> list[str]:
        counter = [0]
        tick = stackful.spawn(ticker, counter)
        with subprocess.Popen(["sh", "-c", "echo one; sleep 0.2; echo two; sleep 0.2; echo 3"],
                              stdout=subprocess.PIPE, text=True) as p:
            assert p.stdout is not None
            first = p.stdout.readline()
            seen = counter[0]
            rest = list(p.stdout)
        assert counter[0] > seen  # it ticked while the reader waited for "two"
        tick.cancel()
        assert p.returncode == 0
        return [first, *rest]

    assert run_bounded(main) == ["one\n", "two\n", "3\n"]


@WORLDS
@pytest.mark.parametrize("bufsize", [0, -1])
def test_writing_and_reading_pipes_in_two_tasks(world: str, bufsize: int) -> None:
    """A writer far ahead of the child: its writes wait for room (a raw pipe writes all)."""
    data = os.urandom(BIG)

    def main() -> bytes:
        p = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             bufsize=bufsize)
        assert p.stdin is not None and p.stdout is not None
        stdin, stdout = p.stdin, p.stdout

        def write() -> None:
            try:
                assert stdin.write(data) == len(data)
            finally:
                stdin.close()  # even after a failed write: cat then ends, and so does the read

        if world == "runtime":
            writer = stackful.spawn(write)
            got = stdout.read()
            writer.join()
        else:
            with thread(write):  # joined with a bound, its error re-raised
                got = stdout.read()
        assert p.wait(timeout=BOUND) == 0
        stdout.close()
        return bytes(got)

    assert in_world(world, main) == data


# -- communicate -----------------------------------------------------------------------------------

# Writes a lot to stderr before reading any input, then copies stdin to stdout: a parent that
# writes all the input before reading deadlocks with it.
CROSSED = (
    "import sys\n"
    f"sys.stderr.buffer.write(b'e' * {BIG}); sys.stderr.flush()\n"
    "data = sys.stdin.buffer.read()\n"
    "sys.stdout.buffer.write(data[::-1])\n"
)


@WORLDS
def test_communicate_moves_megabytes_both_ways(world: str, exit_notice: str) -> None:
    data = os.urandom(BIG)

    def main() -> tuple[bytes, bytes]:
        p = subprocess.Popen([PY, "-c", CROSSED], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = p.communicate(data, timeout=BOUND)
        assert p.returncode == 0
        return out, err

    if world == "runtime":
        counter = [0]

        def with_ticker() -> tuple[bytes, bytes]:
            tick = stackful.spawn(ticker, counter)
            try:
                return main()
            finally:
                tick.cancel()

        out, err = run_bounded(with_ticker)
        assert counter[0] > 0
    else:
        out, err = in_world(world, main)
    assert out == data[::-1]
    assert err == b"e" * BIG


def test_communicate_in_text_mode_decodes_and_translates_newlines() -> None:
    script = "import sys; data = sys.stdin.read(); sys.stdout.write(data + '\\r\\nend\\r')"

    def main() -> tuple[str, str]:
        p = subprocess.Popen([PY, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, encoding="utf-8")
        out, err = p.communicate("héllo\n" * 10000, timeout=BOUND)
        return out, err

    assert run_bounded(main) == ("héllo\n" * 10000 + "\nend\n", "")


def test_communicate_after_a_timeout_goes_on_where_it_stopped(exit_notice: str) -> None:
    script = ("import signal, sys\n"
              "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])\n"
              "print('first', flush=True)\n"
              "signal.sigwait([signal.SIGUSR1])\n"
              "print('second', sys.stdin.read(), flush=True)\n")

    def main() -> None:
        p = subprocess.Popen([PY, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
        assert p.stdout is not None
        assert p.stdout.readline() == "first\n"
        with pytest.raises(subprocess.TimeoutExpired) as info:
            p.communicate("the input", timeout=0.1)
        assert info.value.timeout == 0.1
        assert p.poll() is None
        with pytest.raises(ValueError, match="Cannot send input"):
            p.communicate("more input")
        p.send_signal(signal.SIGUSR1)
        out, err = p.communicate(timeout=BOUND)
        assert (out, err) == ("second the input\n", None)
        assert p.returncode == 0

    run_bounded(main)


def test_communicate_with_a_child_that_closes_its_pipes_early() -> None:
    def main() -> None:
        # stdin closed at once: the input is dropped, as the stdlib drops it.
        p = subprocess.Popen(["sh", "-c", "exec 0<&-; echo done"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
        assert p.communicate(b"x" * BIG, timeout=BOUND) == (b"done\n", None)
        # stdout closed, then the child goes on: end of file first, the exit status later.
        p = subprocess.Popen(["sh", "-c", "echo early; exec 1>&-; sleep 0.2; exit 3"],
                             stdout=subprocess.PIPE)
        assert p.stdout is not None
        assert p.stdout.read() == b"early\n"
        assert p.wait(timeout=BOUND) == 3
        # A direct write to a pipe nobody reads raises, as in the stdlib.
        p = subprocess.Popen(["sh", "-c", "exec 0<&-; echo closed; sleep 0.2"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        assert p.stdin is not None and p.stdout is not None
        assert p.stdout.readline() == b"closed\n"
        with pytest.raises(BrokenPipeError):
            p.stdin.write(b"x" * BIG)
        p.stdin.close()
        p.stdout.close()
        assert p.wait(timeout=BOUND) == 0

    run_bounded(main)


# -- timeouts, kill, zombies ---------------------------------------------------------------------


@WORLDS
def test_run_timeout_kills_and_reaps_the_child(world: str, exit_notice: str) -> None:
    """The child prints its pid, then sleeps: TimeoutExpired carries the output so far."""

    def main() -> None:
        with pytest.raises(subprocess.TimeoutExpired) as info:
            subprocess.run(["sh", "-c", "echo $$; exec sleep 30"], capture_output=True,
                           timeout=0.5)
        assert info.value.timeout == 0.5
        assert info.value.output is not None
        assert_reaped(int(info.value.output))

    in_world(world, main)


def test_wait_timeout_leaves_the_child_running(exit_notice: str) -> None:
    def main() -> None:
        p = subprocess.Popen(["sleep", "30"])
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=0.1)
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=0)
        assert p.poll() is None
        p.kill()
        assert p.wait(timeout=BOUND) == -signal.SIGKILL
        assert_reaped(p.pid)

    run_bounded(main)


def test_call_timeout_kills_and_reaps(exit_notice: str) -> None:
    r, w = os.pipe()

    def main() -> None:
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.call(["sh", "-c", "echo $$ >&2; exec sleep 30"], stderr=w,
                            timeout=0.5)
        os.close(w)
        assert_reaped(int(os.read(r, 100)))

    try:
        run_bounded(main)
    finally:
        os.close(r)


def test_no_descriptor_is_left_open() -> None:
    before = open_fds()

    def main() -> None:
        for _ in range(3):
            subprocess.run(["cat"], input=b"x" * 100000, capture_output=True, timeout=BOUND)
            p = subprocess.Popen(["sh", "-c", "exit 1"])
            assert p.wait(timeout=BOUND) == 1

    run_bounded(main)
    assert open_fds() == before


# -- cancellation ------------------------------------------------------------------------------


def test_cancelled_wait_leaves_the_child_which_the_popen_reaps_later(exit_notice: str) -> None:
    def main() -> None:
        p = subprocess.Popen(["sleep", "30"])
        waiter = stackful.spawn(p.wait)
        wait_until_parked(waiter)
        waiter.cancel()
        with pytest.raises(Cancelled):
            waiter.join()
        assert p.poll() is None
        os.kill(p.pid, 0)  # still running
        p.kill()
        assert p.wait(timeout=BOUND) == -signal.SIGKILL
        assert_reaped(p.pid)

    run_bounded(main)


def test_cancelling_the_watching_waiter_hands_the_watch_over(exit_notice: str) -> None:
    """Several tasks wait for one child; the one watching the exit is cancelled."""

    def main() -> None:
        p = subprocess.Popen(["sh", "-c", "read x; exit 9"], stdin=subprocess.PIPE)
        waiters = [stackful.spawn(p.wait) for _ in range(3)]
        for w in waiters:
            wait_until_parked(w)
        watcher = waiters[0]
        watcher.cancel()
        with pytest.raises(Cancelled):
            watcher.join()
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.close()
        assert [w.join() for w in waiters[1:]] == [9, 9]
        assert_reaped(p.pid)

    run_bounded(main)


def test_cancelled_run_kills_and_reaps_its_child(exit_notice: str) -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)

    def main() -> None:
        runner = stackful.spawn(subprocess.run, ["sh", "-c", "echo $$ >&2; exec sleep 30"],
                                stderr=w, stdout=subprocess.PIPE)
        stackful.wait_readable(r)
        pid = int(os.read(r, 100))
        wait_until_parked(runner)
        runner.cancel()
        with pytest.raises(Cancelled):
            runner.join()
        assert_reaped(pid)

    try:
        run_bounded(main)
    finally:
        os.close(r)
        os.close(w)


def test_run_reaps_its_killed_child_through_more_cancellations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Here "kill" is SIGTERM, which the child takes 0.3 s to obey: the task is cancelled
    again and again while run() reaps it, and the reap goes on (``Popen.__exit__``'s own wait
    would survive one more cancellation, not two)."""
    monkeypatch.setattr(subprocess.Popen, "kill", subprocess.Popen.terminate)
    script = ("import os, signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.3), sys.exit(1)))\n"
              "print(os.getpid(), file=sys.stderr, flush=True)\n"
              "time.sleep(30)\n")
    r, w = os.pipe()
    os.set_blocking(r, False)

    def main() -> None:
        runner = stackful.spawn(subprocess.run, [PY, "-c", script], stderr=w)
        stackful.wait_readable(r)
        pid = int(os.read(r, 100))
        for _ in range(3):  # the first lands in communicate(), the others in the reap
            wait_until_parked(runner)
            runner.cancel()
        with pytest.raises(Cancelled):
            runner.join()
        assert_reaped(pid)

    try:
        run_bounded(main)
    finally:
        os.close(r)
        os.close(w)


def test_enclosing_timeout_scope_interrupts_a_wait() -> None:
    def main() -> None:
        p = subprocess.Popen(["sleep", "30"])
        with pytest.raises(TimeoutError) as info, stackful.timeout(0.1):
            p.wait()
        assert not isinstance(info.value, subprocess.TimeoutExpired)
        p.kill()
        p.wait()

    run_bounded(main)


# -- pipelines, and threads ------------------------------------------------------------------------


def test_a_pipe_handed_to_another_child_is_blocking_again() -> None:
    """``cat`` reads a pipe the first child writes 0.2 s later: on a non-blocking pipe its
    read would fail with EAGAIN."""

    def main() -> bytes:
        p1 = subprocess.Popen(["sh", "-c", "sleep 0.2; printf 'a\\nb\\n'"],
                              stdout=subprocess.PIPE)
        assert p1.stdout is not None
        p2 = subprocess.Popen(["cat"], stdin=p1.stdout, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        assert os.get_blocking(p1.stdout.fileno())
        p1.stdout.close()
        out, err = p2.communicate(timeout=BOUND)
        assert err == b""
        assert p1.wait(timeout=BOUND) == 0 and p2.returncode == 0
        return bytes(out)

    assert run_bounded(main) == b"a\nb\n"


def test_a_plain_thread_waits_the_stdlib_way() -> None:
    """Inside the thread no runtime runs: its wait blocks that thread, not the runtime."""

    def main() -> int:
        p = subprocess.Popen(["sh", "-c", "read x; exit 4"], stdin=subprocess.PIPE)
        result: list[int] = []
        t = threading.Thread(target=lambda: result.append(p.wait(timeout=BOUND)))
        t.start()
        stackful.sleep(0.05)
        assert p.stdin is not None
        p.stdin.write(b"\n")
        p.stdin.close()
        while t.is_alive():
            stackful.sleep(0.01)
        return result[0]

    assert run_bounded(main) == 4


# -- misuse --------------------------------------------------------------------------------------


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(["sleep", "30"])
    try:
        yield p
    finally:
        p.kill()
        p.wait(timeout=BOUND)


def test_a_popen_serves_one_runtime_at_a_time() -> None:
    """Another thread's runtime waits for the child and reads its (raw) stdout meanwhile."""
    p = subprocess.Popen(["sleep", "30"], stdout=subprocess.PIPE, bufsize=0)
    assert p.stdout is not None
    stdout = p.stdout
    parked = threading.Event()
    errors: list[BaseException] = []

    def other_runtime() -> None:
        def main() -> None:
            waiter = stackful.spawn(p.wait)
            reader = stackful.spawn(stdout.read, 1)
            wait_until_parked(waiter)
            wait_until_parked(reader)
            parked.set()
            waiter.join()
            assert reader.join() == b""

        try:
            run_bounded(main)
        except BaseException as exc:  # noqa: B036 - reported below
            errors.append(exc)

    t = threading.Thread(target=other_runtime)
    t.start()
    try:
        assert parked.wait(BOUND)

        def main() -> None:
            with pytest.raises(RuntimeError, match="Popen.wait.*belongs to another runtime"):
                p.wait(timeout=1)
            with pytest.raises(RuntimeError, match="Popen.communicate.*another runtime"):
                p.communicate(timeout=1)
            with pytest.raises(RuntimeError, match="pipe.read.*belongs to another runtime"):
                stdout.read(1)

        run_bounded(main)
    finally:
        p.kill()
        t.join(BOUND)
    assert not t.is_alive() and not errors
    assert p.returncode == -signal.SIGKILL
    stdout.close()


def test_waiting_from_the_scheduler_is_an_error(sleeper: subprocess.Popen[bytes]) -> None:
    def main() -> None:
        stackful.lowlevel.call_later(0, lambda _: sleeper.wait())
        stackful.sleep(1)

    with pytest.raises(RuntimeError, match="must be called from a task"):
        stackful.run(main)


@pytest.mark.parametrize("bufsize", [0, -1])
def test_two_tasks_reading_one_pipe_is_an_error(bufsize: int) -> None:
    """The raw pipe reports the second waiter; a buffered one refuses the reentrant call."""

    def main() -> None:
        with subprocess.Popen(["sleep", "30"], stdout=subprocess.PIPE, bufsize=bufsize) as p:
            assert p.stdout is not None
            stdout = p.stdout
            first = stackful.spawn(stdout.read, 1)
            wait_until_parked(first)
            with pytest.raises(BusyResourceError if bufsize == 0 else RuntimeError,
                               match="already waiting" if bufsize == 0 else "reentrant"):
                stdout.read(1)
            first.cancel()
            with pytest.raises(Cancelled):
                first.join()
            p.kill()

    run_bounded(main)
