"""Profilers, tracers and pdb across fiber switches (stackful.debug.Profile and the core).

The program below ping-pongs two fibers through nested functions, then runs a runtime with
tasks that yield: every function's call count is known.  cProfile alone miscounts it (checked
too, so these tests can fail); ``stackful.debug.Profile`` must count it exactly and keep every
time within the wall time profiled.
"""

from __future__ import annotations

import cProfile
import gc
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import stackful
from stackful import Fiber
from stackful._native import FiberClock, call_untraced, get_switch_hook, set_switch_hook
from stackful.debug import Profile

ROUNDS = 20
TASKS = 3
YIELDS = 4


def a_leaf(other: Fiber, i: int) -> Any:
    return other.switch(i)


def a_mid(other: Fiber, i: int) -> Any:
    return a_leaf(other, i)


def b_leaf(other: Fiber, i: int) -> Any:
    return other.switch(i)


def b_mid(other: Fiber, i: int) -> Any:
    return b_leaf(other, i)


def worker(n: int) -> int:
    for _ in range(n):
        stackful.yield_now()
    return n


def run_main() -> int:
    tasks = [stackful.spawn(worker, YIELDS) for _ in range(TASKS)]
    return sum(t.join() for t in tasks)


def program() -> tuple[str, int]:
    fibers: dict[str, Fiber] = {}

    def a_body() -> str:
        for i in range(ROUNDS):
            a_mid(fibers["b"], i)
        return "a-done"

    def b_body(_: int) -> None:
        for i in range(ROUNDS):
            b_mid(fibers["a"], i)

    fibers["a"] = Fiber(a_body, name="a")
    fibers["b"] = Fiber(b_body, name="b")
    done = fibers["a"].switch()
    fibers["b"].kill()  # b is suspended in its last switch: unwind it here, not in a later GC
    return done, stackful.run(run_main)


# Every call the program makes to these: (calls, primitive calls).
EXPECTED = {
    "program": (1, 1),
    "a_body": (1, 1),
    "b_body": (1, 1),
    "a_mid": (ROUNDS, ROUNDS),
    "a_leaf": (ROUNDS, ROUNDS),
    "b_mid": (ROUNDS, ROUNDS),
    "b_leaf": (ROUNDS, ROUNDS),
    "run_main": (1, 1),
    "worker": (TASKS, TASKS),
}
SWITCHES = 2 * ROUNDS + 1  # a's and b's, and root's first


def by_name(stats: dict[Any, Any]) -> dict[str, tuple[int, int, float, float]]:
    out: dict[str, tuple[int, int, float, float]] = {}
    for (filename, _, name), (cc, nc, tt, ct, _) in stats.items():
        if filename == __file__ or "yield_now" in name:
            key = "yield_now" if "yield_now" in name else name
            assert key not in out, key
            out[key] = (nc, cc, tt, ct)
    return out


def test_profile_counts_every_call_exactly() -> None:
    prof = Profile()
    with prof:
        assert program() == ("a-done", TASKS * YIELDS)
    got = by_name(prof.stats().stats)
    for name, (calls, primitive) in EXPECTED.items():
        assert got[name][:2] == (calls, primitive), name
    switch = [v for k, v in prof.stats().stats.items() if "'switch'" in k[2]]
    assert len(switch) == 1
    from_here = [cc for (filename, _, _), cc in switch[0][4].items() if filename == __file__]
    assert sum(nc for _, nc, _, _ in from_here) == SWITCHES
    assert got["yield_now"][:2] == (TASKS * YIELDS, TASKS * YIELDS)


def test_cprofile_alone_miscounts_the_same_program() -> None:
    # The control: one stack of open calls for all fibers gets this program wrong.
    prof = cProfile.Profile()
    prof.enable()
    try:
        program()
    finally:
        prof.disable()
    prof.create_stats()
    got = by_name(prof.stats)  # type: ignore[attr-defined]
    wrong = {name for name, want in EXPECTED.items() if got.get(name, (0, 0))[:2] != want}
    assert wrong, "cProfile counted a fiber program exactly: the control no longer fails"


def test_profile_times_stay_within_the_wall_time() -> None:
    prof = Profile()
    start = time.perf_counter()
    with prof:
        program()
    wall = time.perf_counter() - start
    stats = prof.stats().stats
    for func, (_, _, tt, ct, _) in stats.items():
        assert 0 <= tt <= ct <= wall, func
    # Each instant of the thread is charged to one function once.
    assert sum(tt for (_, _, tt, _, _) in stats.values()) <= wall
    got = by_name(stats)
    # Callers include their callees; a fiber's body includes its whole loop.
    assert got["a_leaf"][3] <= got["a_mid"][3] <= got["a_body"][3]
    assert got["b_leaf"][3] <= got["b_mid"][3] <= got["b_body"][3]
    assert got["worker"][3] <= wall


def test_each_fiber_has_a_profile_of_its_own() -> None:
    prof = Profile()
    with prof:
        program()
    fibers = dict(prof.per_fiber())
    assert {"a", "b", "main"} <= set(fibers)
    assert sum(1 for name in fibers if name.startswith("task-")) == TASKS
    names = {name: set(by_name(s.stats)) for name, s in fibers.items()}
    assert {"a_body", "a_mid", "a_leaf"} <= names["a"] and not names["a"] & {"b_mid", "b_leaf"}
    assert {"b_body", "b_mid", "b_leaf"} <= names["b"] and not names["b"] & {"a_mid", "a_leaf"}
    assert "run_main" in names["main"]
    # The root runs program(); a's last return lands there, and the kill of b starts there.
    assert names[stackful.current().name] == {"program"}
    assert not (names["a"] | names["b"]) & {"program", "run_main", "worker"}
    for name, funcs in names.items():
        if name.startswith("task-"):
            assert "worker" in funcs and "yield_now" in funcs


def test_profile_runs_the_previous_switch_hook_and_puts_it_back() -> None:
    seen: list[str] = []

    def hook(event: str, fibers: tuple[Fiber, Fiber]) -> None:
        seen.append(fibers[1].name)

    before = set_switch_hook(hook)
    try:
        prof = Profile()
        result = prof.runcall(program)
        assert result[0] == "a-done"
        assert get_switch_hook() is hook
        assert seen.count("a") == ROUNDS + 1 and seen.count("b") == ROUNDS + 1  # + the kill
        # The hook's own calls are profiled, in the fiber that landed.
        assert by_name(prof.stats().stats)["hook"][0] == len(seen)
    finally:
        set_switch_hook(before)


def test_only_one_profile_at_a_time() -> None:
    with Profile():
        with pytest.raises(RuntimeError, match="already enabled"):
            Profile().enable()
    with Profile() as again:  # the first one's disable let go
        pass
    with pytest.raises(RuntimeError, match="disable"):
        with again:
            again.stats()


def test_profile_follows_greenlets_and_a_region_inside_a_task() -> None:
    from stackful.greenlet import greenlet

    main_g: Any = None

    def g_leaf(n: int) -> int:
        return main_g.switch(n)

    def g_body(n: int) -> int:
        for i in range(n):
            g_leaf(i)
        return n

    def task() -> int:
        nonlocal main_g
        main_g = greenlet.getcurrent()  # the task's own greenlet
        g = greenlet(g_body)
        prof = Profile()
        with prof:  # enabled and disabled in a task, with greenlet switches between
            g.switch(ROUNDS)
            for _ in range(ROUNDS):
                g.switch()
            yielder = stackful.spawn(worker, YIELDS)
            stackful.yield_now()
        assert yielder.join() == YIELDS
        got = by_name(prof.stats().stats)
        assert got["g_body"][:2] == (1, 1) and got["g_leaf"][:2] == (ROUNDS, ROUNDS)
        # The worker ran only while this task was suspended in yield_now: its first step.
        assert got["worker"][:2] == (1, 1) and got["yield_now"][:2] == (2, 2)
        return 0

    assert stackful.run(task) == 0


def test_profile_is_disabled_on_its_own_thread() -> None:
    import threading

    prof = Profile()
    prof.enable()
    try:
        errors: list[BaseException] = []
        t = threading.Thread(target=lambda: errors.append(pytest.raises(RuntimeError,
                                                                        prof.disable).value))
        t.start()
        t.join(60)
        assert not t.is_alive() and len(errors) == 1
    finally:
        prof.disable()
    assert Profile._enabled is None


def test_fiber_clock_subtracts_the_time_paused() -> None:
    clock = FiberClock()
    assert (clock.paused_ns, clock.left_ns) == (0, 0)
    before = time.monotonic_ns()
    reading = clock()
    assert before <= reading <= time.monotonic_ns()  # the same clock as time.monotonic_ns
    clock.paused_ns = reading
    assert 0 <= clock() < reading
    with pytest.raises(TypeError):
        clock(1)  # type: ignore[call-arg]


def test_call_untraced_hides_its_callee_from_the_profile_function() -> None:
    events: list[tuple[str, str]] = []

    def profiler(frame: Any, event: str, arg: Any) -> None:
        events.append((event, frame.f_code.co_name))

    def hidden(x: int) -> None:
        assert x == 1

    def shown(x: int) -> None:
        assert x == 1

    sys.setprofile(profiler)
    try:
        call_untraced(hidden, shown, 1)
    finally:
        sys.setprofile(None)
    assert ("call", "shown") in events and not any(name == "hidden" for _, name in events)
    with pytest.raises(ZeroDivisionError):
        call_untraced(lambda: 1 / 0, None)
    with pytest.raises(TypeError):
        call_untraced(print)  # type: ignore[call-arg]


# -- a profile/trace function of one's own: balanced per fiber --------------------------------

def test_setprofile_events_balance_per_fiber() -> None:
    stacks: dict[Fiber, list[Any]] = {}
    problems: list[Any] = []

    def profiler(frame: Any, event: str, arg: Any) -> None:
        stack = stacks.setdefault(stackful.current(), [])
        if event in ("call", "c_call"):
            stack.append((event, frame, arg))
        elif not stack:
            problems.append(("unopened", event, frame.f_code.co_name))
        else:
            opened, opened_frame, opened_arg = stack.pop()
            if (opened != ("call" if event == "return" else "c_call") or opened_frame is not frame
                    or (event != "return" and opened_arg != arg)):
                problems.append(("mismatch", event, frame.f_code.co_name))

    gc.collect()  # no fiber left suspended by an earlier test unwinds in the middle
    sys.setprofile(profiler)
    try:
        program()
    finally:
        sys.setprofile(None)
    assert problems == [], problems
    open_calls = [[(e, fr.f_code.co_name) for e, fr, _ in s] for s in stacks.values() if s]
    # Only this test's own sys.setprofile(None).
    assert open_calls == [[("c_call", "test_setprofile_events_balance_per_fiber")]]
    assert {f.name for f in stacks} >= {"a", "b", "main", "task-2", "task-3", "task-4"}


def test_settrace_events_balance_per_fiber() -> None:
    stacks: dict[Fiber, list[Any]] = {}
    problems: list[Any] = []

    def local(frame: Any, event: str, arg: Any) -> Any:
        stack = stacks.setdefault(stackful.current(), [])
        if event == "line" and (not stack or stack[-1] is not frame):
            problems.append(("line elsewhere", frame.f_code.co_name))
        elif event == "return" and (not stack or stack.pop() is not frame):
            problems.append(("return mismatch", frame.f_code.co_name))
        return local

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        stacks.setdefault(stackful.current(), []).append(frame)
        return local

    gc.collect()
    sys.settrace(tracer)
    try:
        program()
    finally:
        sys.settrace(None)
    assert problems == [], problems
    assert [s for s in stacks.values() if s] == []
    assert {f.name for f in stacks} >= {"a", "b", "main", "task-2", "task-3", "task-4"}


# -- pdb ----------------------------------------------------------------------------------------

PDB_PROGRAM = textwrap.dedent('''
    import pdb
    import sys

    import stackful
    import stackful.debug
    from stackful import Fiber

    root = stackful.current()


    def stop():
        if sys.argv[2] == "pdb":
            pdb.Pdb(nosigint=True, readrc=False).set_trace(sys._getframe(1))
        else:
            stackful.debug.set_trace(frame=sys._getframe(1))


    def child():
        got = root.switch("x")  # C1
        return got  # C2


    def in_root():
        f = Fiber(child)
        stop()  # STOP
        x = f.switch()  # R1
        y = f.switch("back")  # R2
        return x, y  # R3


    def child_stepping():
        stop()  # STOP
        got = root.switch("x")  # K1
        return got  # K2


    def in_fiber():
        f = Fiber(child_stepping)
        x = f.switch()  # F1
        y = f.switch("back")  # F2
        return x, y  # F3


    def sleeper():
        got = root.switch()
        return got  # B1


    def breakpoint_in_a_suspended_fiber():
        f = Fiber(sleeper)
        f.switch()
        stop()  # STOP
        return f.switch("back")  # B0


    def task_body():
        stop()  # STOP
        stackful.yield_now()  # T1
        stackful.sleep(0)  # T2
        return 7  # T3


    def other():
        for _ in range(3):
            stackful.yield_now()  # O1


    def main():
        t = stackful.spawn(task_body)
        stackful.spawn(other).join()
        return t.join()


    def in_task():
        return stackful.run(main)


    print("RESULT", globals()[sys.argv[1]]())
''')


def pdb_stops(tmp_path: Path, scenario: str, commands: list[str], debugger: str = "pdb"
              ) -> list[str]:
    """Run `scenario` under `debugger` ("pdb": pdb.set_trace, else stackful.debug.set_trace)
    fed `commands`; return the marks of the lines it stopped at, in the program's file."""
    script = tmp_path / "prog.py"
    script.write_text(PDB_PROGRAM)
    lines = PDB_PROGRAM.splitlines()
    if sys.version_info >= (3, 13):
        commands = ["n", *commands]  # past the stop at the set_trace() line itself
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    b1 = next(n for n, line in enumerate(lines, 1) if line.endswith("# B1"))
    commands = [c.replace("LINE:B1", str(b1)) for c in commands]
    proc = subprocess.run([sys.executable, str(script), scenario, debugger],
                          input="\n".join(commands) + "\n", capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "RESULT" in proc.stdout, proc.stdout
    stops = []
    for part in proc.stdout.split("> ")[1:]:
        head = part.split("\n", 1)[0]
        if head.startswith(str(script) + "("):
            lineno = int(head[len(str(script)) + 1:].split(")", 1)[0])
            mark = lines[lineno - 1].rsplit("# ", 1)
            stops.append(mark[1] if len(mark) == 2 else "return" if "->" in head else "?")
    # 3.13+ stops at the set_trace() line itself, older versions at the line after it.
    return stops[1:] if stops[:1] == ["STOP"] else stops


def test_pdb_next_over_a_switch_in_the_root_stops_at_the_next_line(tmp_path: Path) -> None:
    assert pdb_stops(tmp_path, "in_root", ["n", "n", "c"]) == ["R1", "R2", "R3"]


def test_pdb_next_over_a_switch_in_a_fiber_stops_at_its_next_line(tmp_path: Path) -> None:
    assert pdb_stops(tmp_path, "in_fiber", ["n", "c"]) == ["K1", "K2"]


def test_pdb_next_over_blocking_calls_in_a_task_stays_in_the_task(tmp_path: Path) -> None:
    assert pdb_stops(tmp_path, "in_task", ["n", "n", "c"]) == ["T1", "T2", "T3"]


def test_pdb_step_into_a_switch_lands_in_the_fiber_switched_to(tmp_path: Path) -> None:
    assert pdb_stops(tmp_path, "in_root", ["s", "s", "c"])[:3] == ["R1", "?", "C1"]


def test_pdb_next_off_the_end_of_a_fiber_lands_after_the_parents_switch(tmp_path: Path) -> None:
    # Stepped into the child from the root, so the root's frame is traced too.
    assert pdb_stops(tmp_path, "in_root", ["s", "n", "n", "n", "n", "c"]) == [
        "R1", "?", "C1", "C2", "C2", "R3"]


def test_pdb_alone_leaves_suspended_fibers_untraced(tmp_path: Path) -> None:
    # The control for the two below: pdb sets f_trace only on the running fiber's frames.
    assert pdb_stops(tmp_path, "breakpoint_in_a_suspended_fiber", ["b LINE:B1", "c"]) == ["B0"]
    assert pdb_stops(tmp_path, "in_fiber", ["n", "n", "n", "c"]) == ["K1", "K2", "K2"]


def test_stackful_set_trace_stops_at_a_breakpoint_in_a_suspended_fiber(tmp_path: Path) -> None:
    assert pdb_stops(tmp_path, "breakpoint_in_a_suspended_fiber", ["b LINE:B1", "c", "c"],
                     "stackful") == ["B0", "B1"]


def test_stackful_set_trace_next_off_a_fiber_lands_in_its_suspended_parent(
        tmp_path: Path) -> None:
    assert pdb_stops(tmp_path, "in_fiber", ["n", "n", "n", "c"], "stackful") == [
        "K1", "K2", "K2", "F3"]
