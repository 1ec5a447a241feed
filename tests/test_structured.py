"""Structured concurrency: TaskGroup (spawn, start, failures, cancellation) and cancel scopes
(move_on, fail, cancel() from anywhere, shields, nesting).  Every test runs on a virtual
clock unless it needs another thread; the orders asserted are the documented rules."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import stackful
from stackful import lowlevel
from stackful.lowlevel import TimeoutScope
from stackful.runtime_api import (
    Cancelled,
    CancelScope,
    DeadlockError,
    TaskExceptHookArgs,
    TaskGroup,
    TaskStatus,
    VirtualClock,
    current_task,
    run,
    sleep,
    spawn,
    yield_now,
)
from stackful.sync import Event
from stackful.timeouts import (
    current_time,
    fail_after,
    fail_at,
    move_on_after,
    move_on_at,
    timeout,
)

from ._support import vrun


class Boom(Exception):
    """A failure raised on purpose."""


def failing(delay: float, tag: Any = None) -> None:
    sleep(delay)
    raise Boom(tag)


def recorder() -> tuple[list[str], Any]:
    log: list[str] = []
    return log, log.append


# -- groups: waiting and results ----------------------------------------------------------------


def test_the_block_ends_only_when_every_child_has_finished() -> None:
    def main() -> None:
        done: list[float] = []

        def child(d: float) -> float:
            sleep(d)
            done.append(current_time())
            return d * 2

        with TaskGroup() as tg:
            tasks = [tg.spawn(child, d) for d in (3, 1, 2)]
        assert current_time() == 3 and sorted(done) == [1, 2, 3]
        assert all(t.done() for t in tasks)
        assert [t.result() for t in tasks] == [6, 2, 4]
        assert tg.closed and tg.tasks == []

    vrun(main)


def test_an_empty_group_and_a_group_whose_children_already_ended() -> None:
    def main() -> None:
        with TaskGroup():
            pass
        with TaskGroup() as tg:
            tg.spawn(lambda: None)
            sleep(1)  # the child ends while the body runs
        assert current_time() == 1

    vrun(main)


def test_exports() -> None:
    assert stackful.TaskGroup is TaskGroup and stackful.CancelScope is CancelScope
    assert stackful.move_on_after is move_on_after and stackful.fail_after is fail_after
    assert lowlevel.CancelScope is CancelScope


# -- groups: failures ---------------------------------------------------------------------------


def test_first_failure_cancels_siblings_and_body_then_finallies_run_before_the_group_raises(
) -> None:
    log, note = recorder()

    def sibling(name: str) -> None:
        try:
            sleep(100)
        except Cancelled:
            note(f"{name} cancelled")
            raise
        finally:
            note(f"{name} finally")

    def main() -> None:
        with pytest.raises(ExceptionGroup) as info:
            with TaskGroup() as tg:
                tg.spawn(sibling, "a")
                tg.spawn(failing, 1, "x")
                tg.spawn(sibling, "b")
                try:
                    sleep(100)
                finally:
                    note(f"body finally at {current_time():g}")
            note("not reached")
        note("after")
        assert [type(e) for e in info.value.exceptions] == [Boom]
        assert info.value.exceptions[0].args == ("x",)
        assert current_time() == 1

    vrun(main)
    # The body is cancelled first (the group cancels its scope, then its children), and every
    # finally has run before the group raises.
    assert log == ["body finally at 1", "a cancelled", "a finally", "b cancelled", "b finally",
                   "after"]


def test_every_failure_is_collected_cancellations_are_not() -> None:
    def main() -> None:
        with pytest.raises(ExceptionGroup) as info:
            with TaskGroup(name="g") as tg:
                tg.spawn(failing, 1, 1)
                tg.spawn(failing, 1, 2)  # fails in the same tick: collected, not cancelled
                tg.spawn(sleep, 100)  # cancelled: not a failure

                def swallows_and_fails() -> None:
                    try:
                        sleep(100)
                    except Cancelled:
                        raise Boom(3) from None

                tg.spawn(swallows_and_fails)  # fails while being cancelled: collected
        assert sorted(e.args[0] for e in info.value.exceptions) == [1, 2, 3]
        assert str(info.value).startswith("TaskGroup 'g': 3 failures")

    vrun(main)


def test_the_body_s_failure_is_in_the_group_and_cancels_the_children() -> None:
    log, note = recorder()

    def child() -> None:
        try:
            sleep(100)
        finally:
            note(f"child finally at {current_time():g}")

    def main() -> None:
        with pytest.raises(ExceptionGroup) as info:
            with TaskGroup() as tg:
                tg.spawn(child)
                sleep(1)
                raise Boom("body")
        assert [e.args for e in info.value.exceptions] == [("body",)]

    vrun(main)
    assert log == ["child finally at 1"]


def test_a_base_exception_failure_makes_a_base_exception_group() -> None:
    class Fatal(BaseException):
        pass

    def child() -> None:
        raise Fatal

    def main() -> None:
        with pytest.raises(BaseExceptionGroup) as info:
            with TaskGroup() as tg:
                tg.spawn(child)
        assert not isinstance(info.value, ExceptionGroup)
        assert isinstance(info.value.exceptions[0], Fatal)

    vrun(main)


def test_failures_collected_by_a_group_are_not_reported_again() -> None:
    reported: list[TaskExceptHookArgs] = []

    def main() -> None:
        with pytest.raises(ExceptionGroup):
            with TaskGroup() as tg:
                tg.spawn(failing, 0)
        spawn(failing, 0, "loose")  # a loose task's failure is still reported
        sleep(1)

    stackful.Runtime(clock=stackful.VirtualClock(), excepthook=reported.append).run(main)
    assert [r.exc_value.args for r in reported] == [("loose",)]


def test_nested_groups_an_inner_failure_fails_the_outer_body() -> None:
    def main() -> None:
        with pytest.raises(ExceptionGroup) as info:
            with TaskGroup() as outer:
                outer.spawn(sleep, 100)
                with TaskGroup() as inner:
                    inner.spawn(failing, 1, "deep")
                    inner.spawn(sleep, 100)
        (nested,) = info.value.exceptions
        assert isinstance(nested, ExceptionGroup)
        assert [e.args for e in nested.exceptions] == [("deep",)]
        assert current_time() == 1

    vrun(main)


# -- groups: cancellation from outside ----------------------------------------------------------


def test_cancelling_the_owner_cancels_the_children_and_the_group_re_raises() -> None:
    log, note = recorder()

    def child(i: int) -> None:
        try:
            sleep(100)
        finally:
            note(f"child {i} finally")

    def owner() -> None:
        try:
            with TaskGroup() as tg:
                tg.spawn(child, 1)
                tg.spawn(child, 2)
                sleep(100)
        finally:
            note("owner finally")

    def main() -> None:
        task = spawn(owner)
        sleep(1)
        task.cancel()
        with pytest.raises(Cancelled):
            task.join()
        assert task.cancelled()

    vrun(main)
    assert log == ["child 1 finally", "child 2 finally", "owner finally"]


def test_cancelling_the_owner_while_it_waits_at_the_end_cancels_the_children() -> None:
    def owner(tasks: list[stackful.Task]) -> None:
        with TaskGroup() as tg:
            tasks.append(tg.spawn(sleep, 100))

    def main() -> None:
        tasks: list[stackful.Task] = []
        task = spawn(owner, tasks)
        sleep(1)
        assert task.waiting_on.startswith("TaskGroup: 1 child")
        task.cancel()
        with pytest.raises(Cancelled):
            task.join()
        assert tasks[0].cancelled() and current_time() == 1

    vrun(main)


def test_an_outer_timeout_goes_through_a_group_as_itself() -> None:
    def main() -> None:
        with pytest.raises(TimeoutError) as info:
            with timeout(2) as scope:
                with TaskGroup() as tg:
                    child = tg.spawn(sleep, 100)
                    sleep(100)
        assert scope.owns(info.value) and child.cancelled() and current_time() == 2

    vrun(main)


def test_a_group_in_move_on_after_is_left_quietly_with_its_children_done() -> None:
    def main() -> None:
        with move_on_after(2) as scope:
            with TaskGroup() as tg:
                child = tg.spawn(sleep, 100)
        assert scope.cancelled_caught and child.cancelled() and current_time() == 2

    vrun(main)


def test_an_interruption_together_with_failures_raises_the_group_and_keeps_the_interruption(
) -> None:
    def child() -> None:
        try:
            sleep(100)
        except Cancelled:
            raise Boom("while cancelled") from None

    def owner() -> None:
        with pytest.raises(ExceptionGroup):
            with TaskGroup() as tg:
                tg.spawn(child)
                sleep(100)
        sleep(0)  # the owner's cancellation was kept: raised at its next blocking point

    def main() -> None:
        task = spawn(owner)
        sleep(1)
        task.cancel()
        with pytest.raises(Cancelled):
            task.join()

    vrun(main)


def test_tg_cancel_cancels_body_and_children_quietly() -> None:
    def main() -> None:
        with TaskGroup() as tg:
            child = tg.spawn(sleep, 100)

            def canceller() -> None:
                sleep(1)
                tg.cancel()

            tg.spawn(canceller)
            sleep(100)
        assert child.cancelled() and tg.cancel_scope.cancelled_caught and current_time() == 1
        late = []
        with TaskGroup() as tg2:
            tg2.cancel()
            late.append(tg2.spawn(sleep, 5))  # spawned into a cancelled group: cancelled
        assert late[0].cancelled() and current_time() == 1

    vrun(main)


# -- groups: handing over, misuse ----------------------------------------------------------------


def test_another_task_spawns_into_the_group_and_children_spawn_siblings_during_the_wait(
) -> None:
    def main() -> None:
        ran: list[str] = []

        def helper(tg: TaskGroup) -> None:
            tg.spawn(lambda: ran.append("from helper"))

        def grandchild_spawner(tg: TaskGroup) -> None:
            sleep(2)  # the owner is already waiting at the end of the block
            tg.spawn(lambda: (sleep(1), ran.append("late sibling")))

        with TaskGroup() as tg:
            spawn(helper, tg)
            tg.spawn(grandchild_spawner, tg)
        assert ran == ["from helper", "late sibling"] and current_time() == 3

    vrun(main)


def test_spawning_into_a_group_not_entered_or_closed_is_a_clear_error() -> None:
    def main() -> None:
        tg = TaskGroup(name="jobs")
        with pytest.raises(RuntimeError, match="not been entered"):
            tg.spawn(sleep, 1)
        with tg:
            pass
        with pytest.raises(RuntimeError, match="'jobs' is closed"):
            tg.spawn(sleep, 1)
        with pytest.raises(RuntimeError, match="is closed"):
            tg.start(sleep, 1)
        with pytest.raises(RuntimeError, match="entered twice"):
            with tg:
                pass

        # Used from another task after its owner left it.
        def late(group: TaskGroup) -> None:
            sleep(1)
            group.spawn(sleep, 1)

        holder: list[TaskGroup] = []
        with TaskGroup() as short:
            holder.append(short)
        task = spawn(late, holder[0])
        with pytest.raises(RuntimeError, match="is closed"):
            task.join()

    vrun(main)


def test_a_group_outside_a_task_and_from_another_thread() -> None:
    with pytest.raises(RuntimeError, match="inside stackful.run"):
        with TaskGroup():
            pass

    def main() -> None:
        errors: list[BaseException] = []
        with TaskGroup() as tg:
            def other_thread() -> None:
                try:
                    tg.spawn(sleep, 1)
                except RuntimeError as exc:
                    errors.append(exc)

            thread = threading.Thread(target=other_thread)
            thread.start()
            lowlevel.current_runtime().sleep(0)
            thread.join(10)
        assert len(errors) == 1 and "another thread" in str(errors[0])

    run(main)


def test_ten_thousand_children() -> None:
    def main() -> None:
        count = [0]

        def child() -> None:
            yield_now()
            count[0] += 1

        with TaskGroup() as tg:
            for _ in range(10_000):
                tg.spawn(child, stack_size=64 * 1024)
        assert count[0] == 10_000 and len(stackful.tasks()) == 1

    vrun(main)


def test_the_tree_of_groups() -> None:
    def main() -> None:
        seen: dict[str, Any] = {}
        with TaskGroup(name="outer") as outer:
            assert outer.owner is current_task() and outer.parent is None

            def child() -> None:
                with TaskGroup(name="in child") as g:
                    seen["child group"] = g
                    seen["its parent"] = g.parent
                    sleep(1)

            task = outer.spawn(child)
            assert task.group is outer and current_task().group is None
            with TaskGroup(name="inner") as inner:
                assert inner.parent is outer
                sleep(0.5)
                assert set(outer.groups) == {inner, seen["child group"]}
                assert outer.tasks == [task]
        assert seen["its parent"] is outer and outer.groups == []
        assert "outer" in repr(outer) and "closed" in repr(outer)

    vrun(main)


# -- run(structured=True): the root group --------------------------------------------------------


def structured_vrun(main: Any, **options: Any) -> Any:
    return lowlevel.Runtime(clock=VirtualClock(), structured=True, **options).run(main)


def test_a_structured_run_returns_once_every_spawned_task_has_finished() -> None:
    # spawn() from main or from a child joins the root group main's body runs in: run()
    # waits for them all (the default cancels what is left when main returns).
    log, note = recorder()

    def grandchild() -> None:
        sleep(3)
        note(f"grandchild at {current_time()}")

    def child(delay: float) -> None:
        sleep(delay)
        if delay == 2:
            spawn(grandchild)
        note(f"child at {current_time()}")

    def main() -> str:
        first = spawn(child, 1)
        spawn(child, 2)
        root = first.group
        assert root is not None and root.name == "root" and root.owner is current_task()
        assert current_task().group is None
        assert "group <TaskGroup 'root' open, 2 children" in stackful.debug.render()
        return "main's result"

    assert structured_vrun(main) == "main's result"
    assert log == ["child at 1.0", "child at 2.0", "grandchild at 5.0"]


def test_in_a_structured_run_the_first_failure_cancels_main_and_the_others() -> None:
    log, note = recorder()
    hooked: list[TaskExceptHookArgs] = []

    def waiter(name: str) -> None:
        try:
            sleep(10)
        except Cancelled:
            note(f"{name} cancelled at {current_time()}")
            raise

    def main() -> None:
        spawn(waiter, "sibling")
        spawn(failing, 1, "child")
        waiter("main")

    with pytest.raises(ExceptionGroup) as caught:
        structured_vrun(main, excepthook=hooked.append)
    assert [str(e) for e in caught.value.exceptions] == ["child"]
    assert all(isinstance(e, Boom) for e in caught.value.exceptions)
    assert sorted(log) == ["main cancelled at 1.0", "sibling cancelled at 1.0"]
    assert hooked == []  # the group collected it: not reported again


def test_in_a_structured_run_mains_failure_is_one_of_the_group() -> None:
    def main() -> None:
        spawn(failing, 1, "child")
        sleep(2)  # cancelled at 1 by the child's failure: main's own failure comes after it

    def main_fails_first() -> None:
        spawn(failing, 5, "child")
        raise Boom("main")

    with pytest.raises(ExceptionGroup) as caught:
        structured_vrun(main)
    assert [str(e) for e in caught.value.exceptions] == ["child"]
    with pytest.raises(ExceptionGroup) as caught:
        structured_vrun(main_fails_first)
    # main's failure cancels the child before it fails: it is the one failure
    assert [str(e) for e in caught.value.exceptions] == ["main"]


def test_a_structured_run_shows_the_root_group_in_its_deadlock_report() -> None:
    def main() -> None:
        spawn(Event().wait, name="stuck")

    with pytest.raises(DeadlockError) as caught:
        structured_vrun(main)
    report = str(caught.value)
    assert "TaskGroup: 1 child to finish" in report  # main, waiting at the root group's end
    assert "group <TaskGroup 'root'" in report and "task 'stuck' waiting on" in report


def test_ctrl_c_ends_a_structured_run_after_every_finally() -> None:
    import os
    import signal

    log, note = recorder()

    def child(name: str) -> None:
        try:
            sleep(30)
        finally:
            note(f"{name} finally")

    def main() -> None:
        spawn(child, "a")
        spawn(child, "b")
        timer = threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            child("main")
        finally:
            timer.join()

    with pytest.raises(KeyboardInterrupt):
        run(main, structured=True)
    assert sorted(log) == ["a finally", "b finally", "main finally"]


def test_structured_must_be_a_bool_and_main_a_callable() -> None:
    with pytest.raises(TypeError, match="structured must be True or False"):
        run(lambda: None, structured=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs a callable, got int"):
        run(5, structured=True)  # type: ignore[arg-type]  # at once, not as a group's failure


# -- start() ------------------------------------------------------------------------------------


def test_start_returns_the_value_the_child_signals_and_the_child_goes_on() -> None:
    def server(port: int, *, task_status: TaskStatus) -> None:
        sleep(1)  # binding...
        task_status.started(port + 1)
        sleep(5)

    def main() -> None:
        with TaskGroup() as tg:
            assert tg.start(server, 8000) == 8001
            assert current_time() == 1
        assert current_time() == 6

    vrun(main)


def test_start_raises_what_the_child_raised_before_it_was_ready() -> None:
    def broken(*, task_status: TaskStatus) -> None:
        sleep(1)
        raise Boom("bind failed")

    def lazy(*, task_status: TaskStatus) -> None:
        return

    def twice(*, task_status: TaskStatus) -> None:
        task_status.started()
        task_status.started()

    def victim(*, task_status: TaskStatus) -> None:
        sleep(100)

    def main() -> None:
        with TaskGroup() as tg:
            with pytest.raises(Boom, match="bind failed"):
                tg.start(broken)

            def cancel_the_child() -> None:
                sleep(1)
                (child,) = [t for t in tg.tasks if t.name == "victim"]
                child.cancel()

            spawn(cancel_the_child)
            with pytest.raises(RuntimeError, match="was cancelled before") as info:
                tg.start(victim, name="victim")  # its cancellation is not the caller's
            assert isinstance(info.value.__cause__, Cancelled)
            with pytest.raises(RuntimeError, match="without calling task_status.started"):
                tg.start(lazy)
            sleep(1)
        with pytest.raises(ExceptionGroup) as info:  # after started(): a failure of the group
            with TaskGroup() as tg:
                tg.start(twice)
        assert "already called" in str(info.value.exceptions[0])

    vrun(main)


def test_a_caller_interrupted_in_start_cancels_the_child() -> None:
    def slow(*, task_status: TaskStatus) -> None:
        sleep(100)
        task_status.started()

    def main() -> None:
        with TaskGroup() as tg:
            with move_on_after(1) as scope:
                tg.start(slow)
        assert scope.cancelled_caught and current_time() == 1 and tg.tasks == []

    vrun(main)


# -- cancel scopes ------------------------------------------------------------------------------


def test_move_on_after_leaves_the_block_quietly() -> None:
    def main() -> None:
        log, note = recorder()
        with move_on_after(2) as scope:
            try:
                sleep(10)
            finally:
                note("finally")
            note("not reached")
        note("after")
        assert log == ["finally", "after"] and current_time() == 2
        assert scope.cancelled_caught and scope.cancel_called and scope.expired
        with move_on_at(current_time() + 1) as scope2:
            sleep(0.5)
        assert not scope2.cancel_called and not scope2.cancelled_caught
        sleep(5)  # its timer is gone
        with move_on_after(None) as scope3:
            sleep(1)
        assert scope3.deadline is None

    vrun(main)


def test_fail_after_raises_timeout_error_and_its_cancel_does_too() -> None:
    def main() -> None:
        with pytest.raises(TimeoutError, match=r"timed out in fail_after") as info:
            with fail_after(1) as scope:
                sleep(10)
        assert scope.owns(info.value) and current_time() == 1
        with pytest.raises(TimeoutError):
            with fail_at(current_time() + 5) as scope:
                scope.cancel()
                sleep(10)
        assert current_time() == 1

    vrun(main)


def test_cancel_from_another_task_before_during_and_after_the_block() -> None:
    def main() -> None:
        scope = CancelScope()

        def canceller() -> None:
            sleep(1)
            scope.cancel()

        spawn(canceller)
        with scope:
            sleep(10)
        assert scope.cancelled_caught and current_time() == 1
        scope.cancel()  # after the block: no effect

        early = CancelScope()
        early.cancel()
        with early:
            yield_now()  # the first blocking point raises
            raise AssertionError("not reached")
        assert early.cancelled_caught

        never_blocks = CancelScope()
        with never_blocks:
            never_blocks.cancel()
        assert not never_blocks.cancelled_caught  # withdrawn: the body never blocked again
        sleep(0)  # and nothing is left pending

    vrun(main)


def test_a_caught_cancellation_is_not_raised_again_in_the_same_scope() -> None:
    # The rule chosen here (unlike trio): a scope delivers once.
    def main() -> None:
        with CancelScope() as scope:
            scope.cancel()
            with pytest.raises(Cancelled):
                sleep(1)
            sleep(1)
        assert not scope.cancelled_caught and current_time() == 1

    vrun(main)


def test_moving_the_deadline() -> None:
    def main() -> None:
        with move_on_after(10) as scope:
            scope.deadline = current_time() + 1
            sleep(5)
        assert current_time() == 1 and scope.cancelled_caught
        with move_on_after(1) as scope:
            scope.deadline = None
            sleep(5)
        assert current_time() == 6 and not scope.cancel_called
        with pytest.raises(ValueError):
            CancelScope(deadline=float("nan"))

    vrun(main)


def test_a_scope_s_arguments_are_checked_and_kept() -> None:
    # (CancelScope's __init__ is C, its arguments parsed by hand: scope.c.)
    scope = CancelScope(5, "what", shield=1, fail=True)
    assert (scope.deadline, scope.what, scope.shield, scope._fail) == (5.0, "what", True, True)
    assert CancelScope(float("inf")).deadline is None
    assert TimeoutScope(None)._fail is True
    assert TimeoutScope(None, fail=False)._fail is False  # type: ignore[call-arg]
    for args, kwargs in [((1.0, "a", "b"), {}), ((1.0,), {"deadline": 2.0}),
                         ((), {"bogus": 1}), ((), {"what": "x", "sheild": True})]:
        with pytest.raises(TypeError):
            CancelScope(*args, **kwargs)
    with pytest.raises(ValueError):
        CancelScope(-float("nan"))


def test_nesting_an_inner_scope_that_expires_alone_is_caught_by_itself() -> None:
    def main() -> None:
        with move_on_after(10) as outer:
            with move_on_after(1) as inner:
                sleep(5)
            assert inner.cancelled_caught
            sleep(2)
        assert not outer.cancel_called and current_time() == 3

    vrun(main)


def test_nesting_when_both_expire_the_outer_scope_wins() -> None:
    def main() -> None:
        log, note = recorder()
        with move_on_after(1) as outer:
            with move_on_after(1) as inner:  # same deadline: both fire before the task runs
                try:
                    sleep(5)
                finally:
                    note("inner finally")
            note("between the scopes: not reached")
        assert log == ["inner finally"]
        assert outer.cancelled_caught and not inner.cancelled_caught and inner.cancel_called

    vrun(main)


def test_task_cancel_beats_a_scope_s_cancellation() -> None:
    def victim(scope: CancelScope) -> None:
        with scope:
            sleep(100)
        raise AssertionError("not reached")

    def main() -> None:
        scope = CancelScope()
        task = spawn(victim, scope)
        sleep(1)
        scope.cancel()
        task.cancel()  # lands before the task runs: the stronger one is raised
        with pytest.raises(Cancelled, match="was cancelled"):
            task.join()

    vrun(main)


def test_cancellation_racing_completion_the_completed_wait_stands() -> None:
    def main() -> None:
        event = Event()
        got: list[str] = []

        def waiter(scope: CancelScope) -> None:
            with scope:
                event.wait()
                got.append("woke")
            got.append("left in time" if not scope.cancelled_caught else "caught")

        scope = CancelScope()
        task = spawn(waiter, scope)
        sleep(1)
        event.set()
        scope.cancel()  # same tick: the wait completed first, the body ends without blocking
        task.join()
        assert got == ["woke", "left in time"]

        # Same race, but the body blocks again: the cancellation lands there.
        event2 = Event()

        def waiter2(scope: CancelScope) -> None:
            with scope:
                event2.wait()
                got.append("woke 2")
                sleep(10)
            got.append(f"caught: {scope.cancelled_caught}")

        scope2 = CancelScope()
        task2 = spawn(waiter2, scope2)
        sleep(1)
        event2.set()
        scope2.cancel()
        task2.join()
        assert got[2:] == ["woke 2", "caught: True"] and current_time() == 2

    vrun(main)


def test_a_child_whose_wait_completed_as_the_group_is_cancelled_finishes_normally() -> None:
    def quick() -> str:
        sleep(1)
        return "done"  # no blocking point after the wait: the cancellation is not seen

    def main() -> None:
        with pytest.raises(ExceptionGroup):
            with TaskGroup() as tg:
                tg.spawn(failing, 1)  # woken first at t=1: cancels the group...
                task = tg.spawn(quick)  # ...whose wait completed in the same tick
        assert task.result() == "done" and not task.cancelled()

    vrun(main)


# -- shields ------------------------------------------------------------------------------------


def test_a_shield_holds_an_outer_cancellation_until_its_block_ends() -> None:
    def main() -> None:
        log, note = recorder()
        with move_on_after(1) as outer:
            with CancelScope(shield=True):
                sleep(5)  # the outer deadline passes here: held
                note(f"shielded work done at {current_time():g}")
            note("between: not blocking, so not interrupted")
            sleep(1)
            note("not reached")
        assert log == ["shielded work done at 5", "between: not blocking, so not interrupted"]
        assert outer.cancelled_caught and current_time() == 5

    vrun(main)


def test_a_shield_holds_task_cancel_and_its_own_deadline_still_works() -> None:
    def victim(log: list[str]) -> None:
        try:
            sleep(100)
        finally:
            with move_on_after(2, shield=True) as cleanup:
                sleep(10)  # a cleanup that hangs: its own deadline ends it
            log.append(f"cleanup left at {current_time():g}: {cleanup.cancelled_caught}")

    def main() -> None:
        log: list[str] = []
        task = spawn(victim, log)
        sleep(1)
        task.cancel()
        with pytest.raises(Cancelled):
            task.join()
        assert log == ["cleanup left at 3: True"]

        # Task.cancel() arriving inside the shield waits for its end.
        def shielded(log: list[str]) -> None:
            with CancelScope(shield=True):
                sleep(5)
                log.append("shield done")
            sleep(1)

        task = spawn(shielded, log)
        sleep(1)
        task.cancel()
        with pytest.raises(Cancelled):
            task.join()
        assert log[-1] == "shield done" and current_time() == 8

    vrun(main)


def test_a_shield_entered_with_a_cancellation_pending_holds_it() -> None:
    def main() -> None:
        me = current_task()
        me.cancel()  # pending for the next blocking point
        with CancelScope(shield=True):
            sleep(1)
        with pytest.raises(Cancelled):
            sleep(1)
        assert current_time() == 1

    vrun(main)


def test_lifting_a_shield_inside_its_block_hands_on_what_it_held() -> None:
    def main() -> None:
        log, note = recorder()
        with move_on_after(1) as outer:
            with CancelScope() as inner:
                inner.shield = 1  # type: ignore[assignment]  (any truth value)
                assert inner.shield is True
                sleep(5)  # the outer deadline passes here: held
                note(f"shielded sleep done at {current_time():g}")
                inner.shield = False
                sleep(5)  # the held cancellation arrives here
                note("not reached")
        assert log == ["shielded sleep done at 5"]
        assert outer.cancelled_caught and current_time() == 5

    vrun(main)


def test_lifting_a_shield_from_another_task_interrupts_the_blocked_task_at_once() -> None:
    def shielded(scopes: list[CancelScope], log: list[str]) -> None:
        with CancelScope(shield=True) as scope:
            scopes.append(scope)
            try:
                sleep(100)
            except Cancelled:
                log.append(f"cancelled at {current_time():g}")
                raise

    def main() -> None:
        log: list[str] = []
        scopes: list[CancelScope] = []
        task = spawn(shielded, scopes, log)
        sleep(1)
        task.cancel()  # held by the shield
        sleep(1)
        assert log == [] and task.state == "blocked"
        scopes[0].shield = False
        with pytest.raises(Cancelled):
            task.join()
        assert log == ["cancelled at 2"]

    vrun(main)


def test_raising_a_shield_inside_its_block_holds_a_pending_cancellation() -> None:
    def main() -> None:
        with CancelScope() as scope:
            inner = CancelScope()
            with inner:
                current_task().cancel()  # pending for the next blocking point
                scope.shield = True  # from outside both scopes: held from now on
                sleep(1)
                inner.cancel()  # a scope inside the shield still arrives
                sleep(1)
                raise AssertionError("not reached")
            assert inner.cancelled_caught and current_time() == 1
            sleep(1)  # still held
            scope.shield = False
            with pytest.raises(Cancelled):
                sleep(1)
        assert current_time() == 2

    vrun(main)


def test_keyboard_interrupt_goes_through_a_shield() -> None:
    def main() -> None:
        task = current_task()
        lowlevel.call_later(1, lambda _: task._runtime.interrupt(task, KeyboardInterrupt()))
        with CancelScope(shield=True):
            sleep(100)

    with pytest.raises(KeyboardInterrupt):
        vrun(main)


def test_a_shielded_group_body_is_not_cancelled_from_outside() -> None:
    def main() -> None:
        with move_on_after(1) as outer:
            with CancelScope(shield=True):
                with TaskGroup() as tg:
                    child = tg.spawn(sleep, 3)
            assert child.done() and not child.cancelled() and current_time() == 3
        assert not outer.cancelled_caught  # delivered at no blocking point: withdrawn

    vrun(main)


# -- other threads --------------------------------------------------------------------------------


def test_cancel_from_another_thread_goes_through_a_token() -> None:
    def main() -> None:
        token = lowlevel.current_token()
        errors: list[BaseException] = []
        with CancelScope() as scope:

            def other_thread() -> None:
                try:
                    scope.cancel()
                except RuntimeError as exc:
                    errors.append(exc)
                token.call_soon(scope.cancel)

            threading.Thread(target=other_thread).start()
            with fail_after(10):  # bounded: the test fails rather than hang
                sleep(100)
        assert scope.cancelled_caught
        assert len(errors) == 1 and "token.call_soon(scope.cancel)" in str(errors[0])

    run(main)


def test_deadlock_report_names_the_group_wait() -> None:
    def main() -> None:
        with TaskGroup() as tg:
            tg.spawn(lowlevel.park, "forever")

    with pytest.raises(DeadlockError, match="TaskGroup: 1 child to finish"):
        vrun(main)


def test_repr_of_scopes() -> None:
    def main() -> None:
        scope = CancelScope(shield=True)
        assert "not entered" in repr(scope) and "shielded" in repr(scope)
        with scope:
            assert "active" in repr(scope)
        scope.cancel()
        assert "left" in repr(scope)

    vrun(main)


def test_the_wind_down_gives_up_on_a_shield_that_waits_forever() -> None:
    # The run's end cancels both; the shields hold that back, so the wind-down kills the
    # stuck one, whose unwinding sets the event and wakes the other: that one runs on (it is
    # not stuck any more) instead of being killed while queued.
    log, note = recorder()

    def stuck(event: Event) -> None:
        try:
            with CancelScope(shield=True):
                lowlevel.park("forever")
        finally:
            event.set()

    def waiter(event: Event) -> None:
        with CancelScope(shield=True):
            event.wait()
            note("waiter woke")

    def main() -> None:
        event = Event()
        spawn(stuck, event)
        spawn(waiter, event)
        sleep(1)

    vrun(main)
    assert log == ["waiter woke"]


def test_ctrl_c_during_a_failing_group_reports_the_failures() -> None:
    reported: list[TaskExceptHookArgs] = []

    def main() -> None:
        task = current_task()
        with TaskGroup() as tg:
            def child() -> None:
                try:
                    sleep(100)
                except Cancelled:
                    raise Boom("failed while cancelled") from None

            tg.spawn(child)
            lowlevel.call_later(1, lambda _: task._runtime.interrupt(task, KeyboardInterrupt()))
            sleep(100)

    with pytest.raises(KeyboardInterrupt):
        stackful.Runtime(clock=stackful.VirtualClock(), excepthook=reported.append).run(main)
    assert [r.exc_value.args for r in reported] == [("failed while cancelled",)]


def test_the_wind_down_killing_a_group_owner_does_not_wait_for_its_children() -> None:
    ended: list[str] = []

    def owner() -> None:
        with CancelScope(shield=True):
            with TaskGroup() as tg:
                def child() -> None:
                    with CancelScope(shield=True):
                        try:
                            lowlevel.park("forever")
                        finally:
                            ended.append("child")

                tg.spawn(child)
                lowlevel.park("forever")

    def main() -> None:
        spawn(owner)
        sleep(1)

    vrun(main)  # returns: both were given up on and killed
    assert ended == ["child"]


def test_started_racing_the_caller_s_cancellation_the_start_stands() -> None:
    def main() -> None:
        got: list[str] = []
        helper: list[stackful.Task] = []
        with TaskGroup() as tg:
            def server(*, task_status: TaskStatus) -> None:
                task_status.started("ready")
                helper[0].cancel()  # same tick: the caller's wait has already completed
                sleep(1)
                got.append("server ran on")

            def caller() -> None:
                got.append(tg.start(server))
                sleep(5)  # the cancellation lands here
                got.append("not reached")

            helper.append(spawn(caller))
            sleep(0.5)  # the block stays open until the caller has started the server
        with pytest.raises(Cancelled):
            helper[0].join()
        assert got == ["ready", "server ran on"] and current_time() == 1

    vrun(main)


def test_an_expired_scope_says_what_it_was_for() -> None:
    # The deadline's timer is ScopeCore._fire (C): the interruption it makes, by kind.
    def main() -> None:
        now = lowlevel.current_time
        with lowlevel.CancelScope(now(), what="the lookup") as scope:
            stackful.sleep(60)
        assert scope.cancelled_caught and scope.expired and scope.cancel_called
        assert type(scope.error) is lowlevel.Cancelled
        assert str(scope.error) == "deadline passed (the lookup)"
        with lowlevel.CancelScope(now()) as bare:
            stackful.sleep(60)
        assert str(bare.error) == "deadline passed"
        with pytest.raises(TimeoutError, match="^timed out in the lookup$"):
            with lowlevel.CancelScope(now(), what="the lookup", fail=True):
                stackful.sleep(60)
        with pytest.raises(TimeoutError, match="^timed out$"):
            with lowlevel.CancelScope(now(), fail=True):
                stackful.sleep(60)
        assert not lowlevel.current_runtime().timers.active

    stackful.run(main)


def test_spawn_passes_arguments_through_and_keeps_name_and_stack_size_for_itself() -> None:
    # TaskGroup.spawn is C for its common case (spawn.c) and Python for the rest: both
    # must split the call the same way.
    def child(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
        return args, kwargs

    def main() -> None:
        with TaskGroup() as tg:
            plain = tg.spawn(child, 1, 2, key="v")
            named = tg.spawn(child, name="worker", other=3)
            sized = tg.spawn(child, 4, stack_size=256 * 1024, name="sized")
            bare = tg.spawn(child)
        assert plain.result() == ((1, 2), {"key": "v"})
        assert named.result() == ((), {"other": 3}) and named.name == "worker"
        assert sized.result() == ((4,), {}) and sized.name == "sized"
        assert bare.result() == ((), {})
        with TaskGroup() as tg:
            with pytest.raises(TypeError, match="missing the function"):
                tg.spawn()  # type: ignore[call-arg]
            with pytest.raises(TypeError, match="callable"):
                tg.spawn(42)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="name must be a str"):
                tg.spawn(child, name=7)  # type: ignore[arg-type]
            assert not tg.tasks  # nothing half-made is left in the group

    run(main)


def test_a_child_spawned_into_a_cancelled_group_is_cancelled_at_once() -> None:
    def main() -> None:
        started: list[str] = []
        with TaskGroup() as tg:
            tg.cancel()
            late = tg.spawn(started.append, "ran")
            with pytest.raises(Cancelled):
                sleep(1)  # the body's own cancellation
        assert late.cancelled() and started == []

    run(main)


@pytest.mark.parametrize("field", ["_state", "_cancelled", "_runtime", "_children", "_starting",
                                   "_waiter"])
def test_spawn_into_a_group_with_a_field_deleted_is_a_clear_error_or_works(field: str) -> None:
    # GroupCore's fields are C slots that Python may delete (NULL in C): spawn's C path must
    # leave such a group to the Python path, which raises, never read the NULL.
    def main() -> str:
        with TaskGroup() as tg:
            saved = getattr(tg, field)
            delattr(tg, field)
            try:
                tg.spawn(yield_now)
                outcome = "spawned"
            except (AttributeError, TypeError) as exc:
                outcome = type(exc).__name__
            setattr(tg, field, saved)
        return outcome

    assert run(main) == ("spawned" if field in ("_starting", "_waiter") else
                         "TypeError" if field == "_children" else "AttributeError")
