"""stackful.dump(): every live fiber of every thread, what each task waits on, the task tree."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import stackful
from stackful import debug
from stackful._core._tree import tree_lines

from ._schema import errors

BOUND = 30.0  # seconds any wait in these tests may take before failing


def all_fibers(snap: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for th in snap["threads"] for f in th["fibers"]]


def task_record(snap: dict[str, Any], name: str) -> dict[str, Any]:
    found = [f for f in all_fibers(snap) if f["task"] and f["task"]["name"] == name
             and f["kind"] == "task"]
    assert len(found) == 1, [f["name"] for f in all_fibers(snap)]
    return found[0]


def functions(record: dict[str, Any]) -> list[str]:
    return [fr["function"] for fr in record["frames"] if not fr["internal"]]


def check_schema(snap: dict[str, Any]) -> None:
    problems = errors(json.loads(json.dumps(snap)), debug.dump_schema())
    assert not problems, "\n".join(problems[:20])


# -- a task parked on each kind of primitive ------------------------------------------------------

def parked_world(checks: Callable[[dict[str, Any], str], None]) -> None:
    """Park one task on every kind of wait, take a JSON snapshot and a text dump, run checks."""

    def main() -> None:
        lock = stackful.Lock()
        lock.acquire()
        event = stackful.Event()
        sem = stackful.Semaphore(0)
        cond = stackful.Condition()
        full: stackful.Queue[int] = stackful.Queue(maxsize=1)
        full.put_nowait(1)
        empty: stackful.Queue[int] = stackful.Queue()
        chan: stackful.Channel[int] = stackful.Channel()
        chan2: stackful.Channel[int] = stackful.Channel()
        a, b = socket.socketpair()
        gate = threading.Event()

        def on_lock() -> None:
            with lock:
                pass

        def on_condition() -> None:
            with cond:
                cond.wait()

        def on_fd() -> None:
            stackful.wait_readable(a)

        def with_timeout() -> None:
            with stackful.timeout(500):
                event.wait()

        def in_thread() -> None:
            stackful.to_thread(gate.wait, BOUND)

        tasks = [
            stackful.spawn(on_lock, name="on-lock"),
            stackful.spawn(event.wait, name="on-event"),
            stackful.spawn(sem.acquire, name="on-semaphore"),
            stackful.spawn(on_condition, name="on-condition"),
            stackful.spawn(empty.get, name="on-queue-get"),
            stackful.spawn(full.put, 2, name="on-queue-put"),
            stackful.spawn(chan.recv, name="on-channel-recv"),
            stackful.spawn(chan2.send, 5, name="on-channel-send"),
            stackful.spawn(on_fd, name="on-fd"),
            stackful.spawn(stackful.sleep, 1000, name="sleeper"),
            stackful.spawn(with_timeout, name="with-timeout"),
            stackful.spawn(in_thread, name="in-thread"),
        ]
        joiner = stackful.spawn(tasks[0].join, name="joiner")
        stackful.sleep(0.05)
        try:
            snap = debug.snapshot()
            text = io.StringIO()
            stackful.dump(text)
            checks(snap, text.getvalue())
        finally:
            gate.set()
            lock.release()
            b.send(b"x")
            for t in [*tasks, joiner]:
                t.cancel()
            a.close()
            b.close()

    stackful.run(main)


def test_dump_names_what_each_task_is_parked_on() -> None:
    def checks(snap: dict[str, Any], text: str) -> None:
        check_schema(snap)

        def wait(name: str) -> dict[str, Any]:
            rec = task_record(snap, name)
            assert rec["task"]["state"] == "blocked"
            assert rec["state"] == "suspended"
            assert rec["parked_for"] is not None and rec["parked_for"] >= 0
            assert rec["task"]["parent_id"] == 1  # spawned by main
            w: dict[str, Any] = rec["waiting"]
            return w

        w = wait("on-lock")
        assert (w["kind"], w["reason"]) == ("lock", "Lock.acquire")
        assert "<Lock owner='main' waiters=1>" == w["object"]
        assert functions(task_record(snap, "on-lock"))[0] == "on_lock"
        assert wait("on-event")["kind"] == "event"
        assert wait("on-semaphore")["kind"] == "semaphore"
        assert wait("on-condition")["kind"] == "condition"
        assert functions(task_record(snap, "on-condition"))[0] == "on_condition"
        w = wait("on-queue-get")
        assert (w["kind"], w["reason"]) == ("queue", "Queue.get")
        assert w["object"] is not None and "Queue" in w["object"]
        assert wait("on-queue-put")["reason"] == "Queue.put"
        w = wait("on-channel-recv")
        assert (w["kind"], w["reason"]) == ("channel", "Channel.recv")
        assert w["object"] is not None and "Channel" in w["object"]
        assert wait("on-channel-send")["reason"] == "Channel.send"
        w = wait("on-fd")
        assert w["kind"] == "fd" and w["direction"] == "read"
        assert isinstance(w["fd"], int) and w["fd"] >= 0
        w = wait("sleeper")
        assert w["kind"] == "sleep"
        assert w["in"] is not None and 900 < w["in"] <= 1000
        w = wait("with-timeout")
        assert w["kind"] == "event"
        assert w["timeout_in"] is not None and 400 < w["timeout_in"] <= 500
        w = wait("in-thread")
        assert w["kind"] == "to_thread"
        assert w["object"] is not None and "wait" in w["object"]
        w = wait("joiner")
        assert w["kind"] == "join" and w["task_id"] == task_record(snap, "on-lock")["task"]["id"]

        main = task_record(snap, "main")
        assert main["current"] and main["task"]["state"] == "running"
        assert functions(main)[0] == "main"
        hubs = [f for f in all_fibers(snap) if f["kind"] == "hub"]
        assert len(hubs) == 1

        # The text: faulthandler-like frames, innermost first, and the task tree.
        assert "Task 2 'on-lock' (blocked for " in text
        assert "on Lock.acquire <Lock owner='main' waiters=1>" in text
        lines = text.splitlines()
        at = next(i for i, line in enumerate(lines) if "Task 2 'on-lock'" in line)
        assert lines[at + 1].strip().startswith('File "') and lines[at + 1].endswith("in on_lock")
        assert "    task 1 'main' running" in lines
        assert any(line.startswith("    ├─ task 2 'on-lock' blocked on Lock.acquire")
                   for line in lines)
        assert "wakes in " in text and "times out in " in text

    parked_world(checks)


def test_json_dump_is_one_document_following_the_schema() -> None:
    def main() -> None:
        out = io.StringIO()
        stackful.spawn(stackful.sleep, 10, name="napper")
        stackful.sleep(0)
        stackful.dump(out, format="json")
        doc = json.loads(out.getvalue())
        check_schema(doc)
        assert doc["format"] == "stackful-dump" and doc["pid"] == os.getpid()
        assert task_record(doc, "napper")["waiting"]["kind"] == "sleep"

    stackful.run(main)


def test_schema_checker_rejects_a_broken_dump() -> None:
    def main() -> dict[str, Any]:
        return debug.snapshot()

    snap = stackful.run(main)
    check_schema(snap)
    snap["threads"][0]["fibers"][0]["state"] = "sleeping"
    del snap["threads"][0]["fibers"][0]["frames"]
    snap["surprise"] = 1
    problems = errors(snap, debug.dump_schema())
    assert any("'sleeping' not in" in p for p in problems)
    assert any("missing 'frames'" in p for p in problems)
    assert any("unexpected 'surprise'" in p for p in problems)


def test_bad_format_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="format must be"):
        stackful.dump(io.StringIO(), format="xml")


# -- fibers that are not tasks, other threads ------------------------------------------------------

def test_plain_fibers_and_fibers_of_other_threads_are_listed() -> None:
    def parked() -> None:
        stackful.current().parent.switch()

    mine = stackful.Fiber(parked, name="mine-suspended")
    mine.switch()
    unstarted = stackful.Fiber(parked, name="never-started")
    started = threading.Event()
    release = threading.Event()
    holder: list[stackful.Fiber] = []

    def other_thread() -> None:
        f = stackful.Fiber(parked, name="theirs-suspended")
        f.switch()
        holder.append(f)
        started.set()
        release.wait(BOUND)
        f.switch()

    t = threading.Thread(target=other_thread, name="other-thread")
    t.start()
    try:
        assert started.wait(BOUND)
        snap = debug.snapshot()
        check_schema(snap)
        by_name = {f["name"]: (th, f) for th in snap["threads"] for f in th["fibers"]}
        th, f = by_name["mine-suspended"]
        assert f["kind"] == "fiber" and f["state"] == "suspended" and f["task"] is None
        assert [fr["function"] for fr in f["frames"]] == ["parked"]
        assert f["stack"]["depth"] is not None and 0 < f["stack"]["depth"] < f["stack"]["size"]
        assert by_name["never-started"][1]["state"] == "new"
        assert by_name["never-started"][1]["frames"] == []
        th, f = by_name["theirs-suspended"]
        assert th["name"] == "other-thread" and th["thread_id"] == t.ident
        assert [fr["function"] for fr in f["frames"]] == ["parked"]
        # The other thread's root is running: its frames come from the thread itself.
        roots = [f for f in th["fibers"] if f["kind"] == "root"]
        assert roots and "other_thread" in [fr["function"] for fr in roots[0]["frames"]]
    finally:
        release.set()
        t.join(BOUND)
    assert not t.is_alive(), "the other thread did not finish"
    mine.switch()
    del unstarted


def test_dump_from_another_thread_while_the_runtime_runs() -> None:
    parked = threading.Event()
    gate = threading.Event()
    result: dict[str, Any] = {}

    def main() -> None:
        lock = stackful.Lock()
        lock.acquire()

        def waiter() -> None:
            with lock:
                pass

        w = stackful.spawn(waiter, name="waiter")
        stackful.sleep(0)
        parked.set()
        stackful.to_thread(gate.wait, BOUND)  # main parks; the dump happens meanwhile
        lock.release()
        w.join()

    def runtime_thread() -> None:
        try:
            stackful.run(main)
        except BaseException as exc:  # reported by the assertion below
            result["error"] = exc

    t = threading.Thread(target=runtime_thread, name="runtime-thread")
    t.start()
    try:
        assert parked.wait(BOUND)
        # main parks in to_thread right after setting the flag: wait (bounded) until it has.
        deadline = time.monotonic() + BOUND
        while task_record(snap := debug.snapshot(), "main")["task"]["state"] != "blocked":
            assert time.monotonic() < deadline, "main never parked in to_thread"
            time.sleep(0.001)
        out = io.StringIO()
        stackful.dump(out)
    finally:
        gate.set()
        t.join(BOUND)
    assert not t.is_alive() and "error" not in result
    check_schema(snap)
    th = next(th for th in snap["threads"] if th["thread_id"] == t.ident)
    assert th["runtime"] is not None and th["runtime"]["blocked"] == 2
    assert task_record(snap, "waiter")["waiting"]["kind"] == "lock"
    assert task_record(snap, "main")["waiting"]["kind"] == "to_thread"
    assert "runtime-thread" in out.getvalue()
    assert "on Lock.acquire <Lock owner='main' waiters=1>" in out.getvalue()


# -- from a signal ------------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_dump_on_a_signal_in_the_middle_of_a_run() -> None:
    with tempfile.TemporaryFile("w+") as out:
        stackful.debug.dump_on(signal.SIGUSR1, file=out)
        try:
            def main() -> None:
                ev = stackful.Event()
                stackful.spawn(ev.wait, name="patient")
                stackful.sleep(0)
                os.kill(os.getpid(), signal.SIGUSR1)  # the handler runs before the next line
                ev.set()

            stackful.run(main)
        finally:
            debug.cancel_dump_on(signal.SIGUSR1)
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
        out.seek(0)
        text = out.read()
    assert text.startswith("Stackful dump of pid ")
    assert "Task 2 'patient' (blocked for " in text and "on Event.wait" in text
    assert "Task 1 'main' (running, current" in text


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_dump_on_a_signal_while_the_hub_waits_in_the_poller() -> None:
    # The signal comes from another thread while every task is parked and the hub is blocked
    # in the poller: the handler runs there (the wait is interrupted, then resumed).
    with tempfile.TemporaryFile("w+") as out:
        debug.dump_on(signal.SIGUSR1, file=out)
        try:
            def signal_and_wait() -> str:
                os.kill(os.getpid(), signal.SIGUSR1)
                deadline = time.monotonic() + BOUND
                while os.fstat(out.fileno()).st_size == 0:
                    assert time.monotonic() < deadline, "no dump arrived"
                    time.sleep(0.005)
                return "dumped"

            def main() -> str:
                ev = stackful.Event()
                stackful.spawn(ev.wait, name="idle-waiter")
                result: str = stackful.to_thread(signal_and_wait)
                ev.set()
                return result

            assert stackful.run(main) == "dumped"
        finally:
            debug.cancel_dump_on(signal.SIGUSR1)
        out.seek(0)
        text = out.read()
    assert "Task 2 'idle-waiter' (blocked for " in text
    assert "Task 1 'main' (blocked for " in text and "signal_and_wait) <function " in text
    assert "2 blocked), idle:" in text  # the runtime line: its hub was waiting in the poller


SIGNAL_SCRIPT = textwrap.dedent("""
    import os, signal, stackful

    def main():
        q = stackful.Queue()
        stackful.spawn(q.get, name="consumer")
        stackful.sleep(0)
        os.kill(os.getpid(), signal.SIGUSR1)
        q.put(1)

    stackful.run(main)
    print("finished")
""")


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
@pytest.mark.parametrize("setting", ["SIGUSR1", "usr1,json"])
def test_environment_variable_installs_the_dump(setting: str) -> None:
    env = dict(os.environ, STACKFUL_DUMP_ON=setting,
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", SIGNAL_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=BOUND)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "finished\n"
    if setting.endswith("json"):
        doc = json.loads(proc.stderr)
        check_schema(doc)
        assert task_record(doc, "consumer")["waiting"]["reason"] == "Queue.get"
    else:
        assert "Task 2 'consumer' (blocked for " in proc.stderr


def test_environment_variable_naming_no_signal_is_reported_not_fatal() -> None:
    env = dict(os.environ, STACKFUL_DUMP_ON="SIGNOPE",
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", "import stackful; print('ok')"], env=env,
                          capture_output=True, text=True, timeout=BOUND)
    assert proc.returncode == 0 and proc.stdout == "ok\n"
    assert "STACKFUL_DUMP_ON='SIGNOPE' names no signal" in proc.stderr


def test_dump_on_refuses_other_threads_and_uncatchable_signals() -> None:
    with pytest.raises(ValueError, match="cannot be caught"):
        debug.dump_on(signal.SIGKILL)
    caught: list[BaseException] = []

    def body() -> None:
        try:
            debug.dump_on(signal.SIGUSR1)
        except ValueError as exc:
            caught.append(exc)

    t = threading.Thread(target=body)
    t.start()
    t.join(BOUND)
    assert caught and "main thread" in str(caught[0])


# -- the task tree ------------------------------------------------------------------------------

def test_task_tree_follows_spawners_and_the_deadlock_report_uses_it() -> None:
    def leaf(ev: stackful.Event) -> None:
        ev.wait()

    def middle(ev: stackful.Event) -> None:
        stackful.spawn(leaf, ev, name="leaf")
        ev.wait()

    def main() -> None:
        ev = stackful.Event()
        stackful.spawn(middle, ev, name="middle")
        stackful.spawn(leaf, ev, name="sibling")
        stackful.sleep(0)
        stackful.sleep(0)
        ev.wait()

    with pytest.raises(stackful.DeadlockError) as info:
        stackful.run(main)
    lines = str(info.value).splitlines()[1:]
    assert lines == [
        "  task 'main' waiting on Event.wait",
        "  ├─ task 'middle' waiting on Event.wait",
        "  │  └─ task 'leaf' waiting on Event.wait",
        "  └─ task 'sibling' waiting on Event.wait",
    ]


class _FakeTask:
    """What tree_lines reads of a task, with a group (the hook task groups will use)."""

    def __init__(self, tid: int, parent: int | None, group: object = None) -> None:
        self.id, self.name, self._parent_id, self._group = tid, f"t{tid}", parent, group
        self.state = "ready"


def test_tree_draws_groups_orphans_and_deep_chains() -> None:
    g = "<group 'workers'>"
    tasks: list[Any] = [_FakeTask(1, None), _FakeTask(2, 1, g), _FakeTask(3, 1),
                        _FakeTask(4, 1, g), _FakeTask(5, 99)]
    lines = tree_lines(tasks, lambda t: t.name, indent="")
    assert lines == [
        "t1",
        "├─ group <group 'workers'>",
        "│  ├─ t2",
        "│  └─ t4",
        "└─ t3",
        "t5 (spawned by finished task 99)",
    ]
    chain: list[Any] = [_FakeTask(1, None)] + [_FakeTask(i, i - 1) for i in range(2, 5000)]
    deep = tree_lines(chain, lambda t: t.name, indent="")
    assert len(deep) == 4999 and deep[-1].endswith("└─ t4999")


# -- statistics --------------------------------------------------------------------------------

def test_stats_count_switches_tasks_and_polling() -> None:
    def main() -> debug.RuntimeStats:
        before = debug.stats()
        done = [stackful.spawn(stackful.yield_now, name=f"y{i}") for i in range(5)]
        for t in done:
            t.join()
        ev = stackful.Event()
        stackful.spawn(ev.wait, name="blocked")
        stackful.sleep(0.01)  # the hub polls: nothing else is ready
        after = debug.stats()
        assert after.switches >= before.switches + 5
        assert after.tasks_spawned == before.tasks_spawned + 6
        assert after.tasks_finished == before.tasks_finished + 5
        assert (after.tasks_running, after.tasks_blocked) == (1, 1)
        assert after.seconds_polling > before.seconds_polling
        assert after.fibers >= 2
        assert set(after.discarded_fibers) >= {"thread_exited", "at_shutdown"}
        assert after.as_dict()["tasks_blocked"] == 1
        ev.set()
        return after

    stackful.run(main)
    with pytest.raises(RuntimeError, match="inside stackful.run"):
        debug.stats()


def test_command_line_renders_a_json_dump(tmp_path: Any) -> None:
    def main() -> None:
        ev = stackful.Event()
        stackful.spawn(ev.wait, name="waiting-one")
        stackful.sleep(0)
        with open(tmp_path / "dump.json", "w") as f:
            stackful.dump(f, format="json")
        ev.set()

    stackful.run(main)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    for command, expected in (("show", "Task 2 'waiting-one' (blocked for "),
                              ("tree", "  └─ task 2 'waiting-one' blocked on Event.wait")):
        proc = subprocess.run([sys.executable, "-m", "stackful", command,
                               str(tmp_path / "dump.json")], env=env, capture_output=True,
                              text=True, timeout=BOUND)
        assert proc.returncode == 0, proc.stderr
        assert expected in proc.stdout
    (tmp_path / "other.json").write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "stackful", "show",
                           str(tmp_path / "other.json")], env=env, capture_output=True,
                          text=True, timeout=BOUND)
    assert proc.returncode == 2 and "not a stackful dump" in proc.stderr


def test_task_groups_appear_in_the_tree_and_the_json() -> None:
    def main() -> None:
        ev = stackful.Event()
        with stackful.TaskGroup() as group:
            group.spawn(ev.wait, name="in-group-1")
            group.spawn(ev.wait, name="in-group-2")
            stackful.spawn(ev.wait, name="loose")
            stackful.sleep(0)
            snap = debug.snapshot()
            shown = repr(group)  # while it is open, as the dump saw it
            ev.set()
        check_schema(snap)
        tree = snap["threads"][0]["runtime"]["task_tree"]
        assert tree[0] == "task 1 'main' running"
        assert tree[1] == f"├─ group {shown}" and "open, 2 children" in shown
        assert tree[2].startswith("│  ├─ task 2 'in-group-1' blocked on Event.wait")
        assert tree[3].startswith("│  └─ task 3 'in-group-2' blocked on Event.wait")
        assert tree[4].startswith("└─ task 4 'loose' blocked on Event.wait")
        assert task_record(snap, "in-group-1")["task"]["group"] == shown
        assert task_record(snap, "loose")["task"]["group"] is None

    stackful.run(main)
