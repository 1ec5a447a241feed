"""A model-checked fuzz of the runtime's primitives, on a virtual clock.

    python -m tests.runtime_model --ops 1000000 [--seed N]

One session is one ``run()``: its main task drives, drawing operations from a seeded
``random.Random``.  It spawns workers, each doing one wait -- ``Condition.wait``, ``Lock`` /
``Semaphore.acquire`` (then holding), ``Event.wait``, ``Queue.get``/``put``,
``Channel.send``/``recv``, ``select``, ``sleep``, ``join`` -- with a timeout drawn from
{None, 0, 0.5 .. 2, inf}, inside zero to two nested scopes (``timeout``, ``move_on``, or a
shield with or without a deadline), and sometimes spawning a task from its ``finally``.  A
``group`` worker opens a ``TaskGroup`` whose children are workers too, some failing.  The
driver cancels workers (now, or from a timer at a grid time, so the cancel lands in the same
tick as timeouts), notifies the condition (and cancels the waiter it just notified, or keeps
the lock so the waiters time out or are cancelled while they re-take it), sets the event,
puts and gets, lets time pass, makes the clock jump past many deadlines at once, and passes
NaN where a timeout goes.  Every duration is on a 0.5 s grid, so timers keep landing in the
same tick.

After every operation the promises that always hold are checked; after a ``settle`` (nothing
ready, no timer pending) the quiescent ones; after ``run()`` returns, the wind-down ones:

* cancellation surfaces as ``Cancelled``: a worker whose cancel was requested ends cancelled;
* no lost timeout: a scope that fired while its task was waiting (not inside a shield) is left
  by its own exception or a stronger one (``Cancelled``, an enclosing scope's);
* groups: the block ends only once every child has finished, and raises exactly the
  children's failures;
* no lost notification: at quiescence, every notification went to a waiter that returned
  True, or was dropped by a waiter that failed when nobody else waited; no spurious wake-ups;
* counts and items: locks and semaphore units all come back, a queue's items and unfinished
  count and a channel's values match what the puts/sends that returned delivered, nothing is
  received twice, a failed put or send delivers nothing, ``Queue.join`` returns when done;
* ``run()`` returns, at once once main is done: tasks born during the wind-down are
  cancelled before they run.

The same sessions run under hypothesis in tests/test_runtime_model.py (the short profile).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stackful import FiberExit, lowlevel
from stackful.channel import Channel, Recv, Send, select
from stackful.lowlevel import CancelScope, TimeoutScope
from stackful.queue import Empty, Full, Queue
from stackful.runtime_api import (
    Cancelled,
    Task,
    TaskGroup,
    VirtualClock,
    run,
    sleep,
    spawn,
    yield_now,
)
from stackful.sync import Condition, Event, Lock, Semaphore

GRID = (0.5, 1.0, 1.5, 2.0)
TIMEOUTS: tuple[float | None, ...] = (None, 0, 0.5, 1.0, 1.5, 2.0, math.inf)
KINDS = ("cond", "cond", "lock", "sem", "event", "qget", "qput", "send", "recv", "select",
         "sleep", "join", "group")
# A group's children: no nested groups, no joins; some fail.
CHILD_KINDS = ("cond", "lock", "sem", "event", "qget", "qput", "send", "recv", "sleep",
               "fail", "fail")
SCOPE_FLAVOURS = ("fail", "fail", "move_on", "shield")
SETTLE = 10.0  # longer than any timed thing a worker or the driver does
LATE_ROUNDS = 20  # a late-born task's sleeps: bounded, so a missed wind-down shows, not hangs


class ModelError(AssertionError):
    """A promise of the runtime was broken."""


class ChildFailed(Exception):
    """A group's child failing on purpose."""


class _Checked:
    """What the checked scopes record: whether the scope fired while its task was waiting
    (and not inside a shield of its own, which holds it back), and what left the block."""

    __slots__ = ()
    waiting_at_fire: bool
    left_with: BaseException | None
    _task: Task | None

    def _fire(self, arg: object = None) -> None:  # the timer calls _fire(scope)
        task = self._task
        assert task is not None
        scopes = task._scopes or []
        inner = scopes[scopes.index(self) + 1:] if self in scopes else []  # type: ignore[arg-type]
        # Blocked, or woken by an interruption it has not seen: still at its wait.
        self.waiting_at_fire = (task.state == "blocked" or (
            task.state == "ready" and task._resume_exc is not None)) and not any(
            s.shield for s in inner)
        super()._fire(arg)  # type: ignore[misc]

    def __exit__(self, et: Any, exc: BaseException | None, tb: Any) -> Any:
        self.left_with = exc
        return super().__exit__(et, exc, tb)  # type: ignore[misc]


class CheckedScope(_Checked, TimeoutScope):
    """A timeout scope that remembers whether it fired while its task was waiting."""

    __slots__ = ("waiting_at_fire", "left_with")

    def __init__(self, deadline: float | None) -> None:
        super().__init__(deadline, "model")
        self.waiting_at_fire = False
        self.left_with = None


class CheckedCancelScope(_Checked, CancelScope):
    """A move_on or shield scope that records the same."""

    __slots__ = ("waiting_at_fire", "left_with")

    def __init__(self, deadline: float | None, shield: bool) -> None:
        super().__init__(deadline, "model", shield=shield)
        self.waiting_at_fire = False
        self.left_with = None


@dataclass
class Worker:
    wid: int
    kind: str
    timeout: float | None
    scopes_spec: list[tuple[str, float, str]]
    hold: float | None            # lock/sem: sleep while holding (None: just yield)
    inner_checkpoint: bool        # a yield_now inside the innermost scope
    spawn_late: bool              # spawn a task from its finally
    target: int | None = None     # join: the worker to join
    item: int | None = None       # qput, send, select: the item it offers
    task: Task | None = None
    scopes: list[CheckedScope | CheckedCancelScope] = field(default_factory=list)
    children: list[Worker] = field(default_factory=list)  # a group worker's
    outcome: tuple[Any, ...] | None = None


@dataclass
class Late:
    born_in_wind_down: bool
    task: Task | None = None
    ran: bool = False


class World:
    """The primitives, the workers, and what the model expects of them."""

    def __init__(self, rnd: random.Random, clock: VirtualClock) -> None:
        self.rnd = rnd
        self.clock = clock
        self.lock = Lock()
        self.sem_units = rnd.randint(1, 2)
        self.sem = Semaphore(self.sem_units)
        self.cond = Condition()
        self.event = Event()
        self.queue: Queue[int] = Queue(rnd.choice((0, 1, 2)))
        self.chan: Channel[int] = Channel(rnd.choice((0, 0, 1, 2)))
        self.workers: list[Worker] = []
        self.late: list[Late] = []
        self.ops = 0
        self.main_done_at: float | None = None
        self.shields = 0  # shielded scopes entered
        # Promises found broken inside a worker (raising there would only end that task):
        # the driver's next check reports them.
        self.broken: list[str] = []
        # Condition: notifications handed to waiters, waits that returned True, waits that
        # failed with nobody left waiting (the only ones allowed to drop a notification).
        self.notified = 0
        self.cond_true = 0
        self.cond_failed_alone = 0
        # Queue and channel: every item offered, those whose put/send returned, those taken.
        self.next_item = 0
        self.q_offered: set[int] = set()
        self.q_put_ok: set[int] = set()
        self.q_got: list[int] = []
        self.q_done = 0
        self.ch_offered: set[int] = set()
        self.ch_sent_ok: set[int] = set()
        self.ch_got: list[int] = []

    # -- the session -------------------------------------------------------------------------

    def session(self, nops: int) -> None:
        """Run ``nops`` driver operations in one run(), checking as it goes."""
        rt_holder: list[Any] = []

        def main() -> None:
            rt_holder.append(lowlevel.current_runtime())
            ops = self.operations()
            names = list(ops)
            weights = [ops[n][0] for n in names]
            for _ in range(nops):
                name = self.rnd.choices(names, weights)[0]
                ops[name][1]()
                self.ops += 1
                self.check_always()
            if self.rnd.random() < 0.7:
                self.settle()
            self.main_done_at = self.clock.now()

        run(main, clock=self.clock)
        self.check_after_run(rt_holder[0])

    def operations(self) -> dict[str, tuple[int, Callable[[], None]]]:
        return {
            "spawn": (30, self.op_spawn),
            "cancel": (6, self.op_cancel),
            "cancel_later": (6, self.op_cancel_later),
            "notify": (10, self.op_notify),
            "event": (4, self.op_event),
            "queue": (4, self.op_queue),
            "sleep": (6, self.op_sleep),
            "jump": (5, self.op_jump),
            "yield": (5, yield_now),
            "nan": (2, self.op_nan),
            "settle": (3, self.op_settle),
        }

    # -- driver operations -------------------------------------------------------------------

    def live(self, kind: str | None = None) -> list[Worker]:
        return [w for w in self.workers
                if w.task is not None and not w.task.done() and (kind is None or w.kind == kind)]

    def op_spawn(self) -> None:
        rnd = self.rnd
        w = self.new_worker(rnd.choice(KINDS))
        w.task = spawn(self.worker_body, w, name=f"w{w.wid}-{w.kind}")

    def new_worker(self, kind: str) -> Worker:
        rnd = self.rnd
        scopes = [(rnd.choice(("after", "after", "at")), rnd.choice(GRID),
                   rnd.choice(SCOPE_FLAVOURS))
                  for _ in range(rnd.choice((0, 0, 1, 1, 2)))]
        w = Worker(
            wid=len(self.workers), kind=kind, timeout=rnd.choice(TIMEOUTS), scopes_spec=scopes,
            hold=rnd.choice((None, *GRID)), inner_checkpoint=rnd.random() < 0.3,
            spawn_late=rnd.random() < 0.15,
        )
        if kind == "join":
            others = self.live()
            if not others:
                w.kind = "sleep"
            else:
                w.target = rnd.choice(others).wid
        self.workers.append(w)
        return w

    def op_cancel(self) -> None:
        live = self.live()
        if live:
            task = self.rnd.choice(live).task
            assert task is not None
            task.cancel()

    def op_cancel_later(self) -> None:
        live = self.live()
        if live:
            task = self.rnd.choice(live).task
            lowlevel.call_later(self.rnd.choice(GRID), lambda t: t.cancel(), task)

    def op_notify(self) -> None:
        rnd = self.rnd
        cond = self.cond
        with cond:
            waiting = list(cond._waiters.tasks())
            if rnd.random() < 0.2:
                cond.notify_all()
                self.notified += len(waiting)
            else:
                n = rnd.choice((1, 1, 2))
                cond.notify(n)
                self.notified += min(n, len(waiting))
            if waiting and rnd.random() < 0.4:
                waiting[0].cancel()  # the waiter just notified: before it re-takes the lock
            if rnd.random() < 0.4:
                sleep(rnd.choice(GRID))  # keep the lock: waiters time out while re-taking it

    def op_event(self) -> None:
        if self.rnd.random() < 0.6:
            self.event.set()
        else:
            self.event.clear()

    def op_queue(self) -> None:
        q = self.queue
        if self.rnd.random() < 0.5:
            try:
                item = q.get_nowait()
            except Empty:
                return
            self.q_got.append(item)
            q.task_done()
            self.q_done += 1
        else:
            item = self.new_item(self.q_offered)
            try:
                q.put_nowait(item)
            except Full:
                return
            self.q_put_ok.add(item)

    def op_sleep(self) -> None:
        sleep(self.rnd.choice(GRID))

    def op_jump(self) -> None:
        # Another task moves the clock past several deadlines: they all fire in one tick.
        spawn(self.clock.advance, self.rnd.choice(GRID) * self.rnd.randint(1, 3))
        yield_now()

    def op_nan(self) -> None:
        rt = lowlevel.current_runtime()
        before = (rt.timers.active, len(self.cond._waiters), repr(self.chan), repr(self.queue))
        calls: list[Callable[[], object]] = [
            lambda: sleep(math.nan),
            lambda: self.sem.acquire(timeout=math.nan),
            lambda: self.event.wait(math.nan),
            lambda: self.queue.get(timeout=math.nan),
            lambda: self.queue.put(-1, timeout=math.nan),
            lambda: self.chan.send(-1, timeout=math.nan),
            lambda: self.chan.recv(timeout=math.nan),
            lambda: select(Recv(self.chan), timeout=math.nan),
            lambda: lowlevel.call_later(math.nan, print),
            lambda: TimeoutScope(math.nan),
        ]
        try:
            self.rnd.choice(calls)()
        except ValueError:
            pass
        else:
            raise ModelError("a NaN timeout was accepted")
        after = (rt.timers.active, len(self.cond._waiters), repr(self.chan), repr(self.queue))
        if before != after:
            raise ModelError(f"a rejected NaN timeout changed the runtime: {before} -> {after}")

    def op_settle(self) -> None:
        self.settle()

    def settle(self) -> None:
        """Let time pass until nothing is ready and no timer is pending; check the quiet state."""
        rt = lowlevel.current_runtime()
        for _ in range(LATE_ROUNDS * 2 + 10):
            sleep(SETTLE)
            if not len(rt.ready) and rt.timers.active == 0:
                self.check_quiescent()
                return
        raise ModelError("the runtime never settled")

    def new_item(self, offered: set[int]) -> int:
        self.next_item += 1
        offered.add(self.next_item)
        return self.next_item

    # -- workers -----------------------------------------------------------------------------

    def worker_body(self, w: Worker) -> None:
        try:
            try:
                result = self.scoped(w, 0)
            except (TimeoutError, Empty, Full) as exc:
                w.outcome = ("caught", type(exc).__name__)
            else:
                w.outcome = ("ok", result)
            yield_now()  # a cancellation still pending surfaces here
        except BaseException as exc:
            w.outcome = ("raised", type(exc).__name__)
            raise
        finally:
            if w.spawn_late:
                rt = lowlevel.current_runtime()
                late = Late(born_in_wind_down=rt._shutting_down)
                self.late.append(late)
                late.task = spawn(self.late_body, late)

    def late_body(self, late: Late) -> None:
        late.ran = True
        for _ in range(LATE_ROUNDS):
            sleep(1)

    def scoped(self, w: Worker, depth: int) -> Any:
        if depth == len(w.scopes_spec):
            return self.do_op(w)
        how, seconds, flavour = w.scopes_spec[depth]
        now = self.clock.now()
        deadline: float | None = now + seconds if how == "after" else now - 1 + seconds
        scope: CheckedScope | CheckedCancelScope
        if flavour == "fail":
            scope = CheckedScope(deadline)
        else:
            if flavour == "shield":
                self.shields += 1
                if self.rnd.random() < 0.5:
                    deadline = None
            scope = CheckedCancelScope(deadline, shield=flavour == "shield")
        w.scopes.append(scope)
        with scope:
            result = self.scoped(w, depth + 1)
            if w.inner_checkpoint and depth == len(w.scopes_spec) - 1:
                yield_now()
            return result

    def do_op(self, w: Worker) -> Any:
        t = w.timeout
        kind = w.kind
        if kind == "cond":
            with self.cond:
                try:
                    ok = self.cond.wait(t)
                except BaseException:
                    if not self.cond._waiters:
                        self.cond_failed_alone += 1
                    raise
                if ok:
                    self.cond_true += 1
                return ok
        if kind in ("lock", "sem"):
            prim: Lock | Semaphore = self.lock if kind == "lock" else self.sem
            ok = prim.acquire(timeout=t)
            if ok:
                try:
                    if w.hold is None:
                        yield_now()
                    else:
                        sleep(w.hold)
                finally:
                    prim.release()
            return ok
        if kind == "event":
            return self.event.wait(t)
        if kind == "qget":
            item = self.queue.get(timeout=t)
            self.q_got.append(item)
            self.queue.task_done()
            self.q_done += 1
            return item
        if kind == "qput":
            item = w.item = self.new_item(self.q_offered)
            self.queue.put(item, timeout=t)
            self.q_put_ok.add(item)
            return item
        if kind == "send":
            item = w.item = self.new_item(self.ch_offered)
            self.chan.send(item, timeout=t)
            self.ch_sent_ok.add(item)
            return item
        if kind == "recv":
            got = self.chan.recv(timeout=t)
            self.ch_got.append(got)
            return got
        if kind == "select":
            item = w.item = self.new_item(self.ch_offered)
            index, got = select(Recv(self.chan), Send(self.chan, item), timeout=t)
            if index == 0:
                self.ch_got.append(got)
            else:
                self.ch_sent_ok.add(item)
            return index
        if kind == "sleep":
            sleep(w.hold if w.hold is not None else 0)
            return None
        if kind == "fail":
            sleep(w.hold if w.hold is not None else 0)
            raise ChildFailed(w.wid)
        if kind == "group":
            return self.group_op(w)
        assert kind == "join" and w.target is not None
        target = self.workers[w.target].task
        assert target is not None
        try:
            return target.join(timeout=t)
        except BaseException as exc:
            if target.done() and exc is target._exception:
                return ("target failed", type(exc).__name__)  # its failure, not ours
            raise

    def group_op(self, w: Worker) -> Any:
        rnd = self.rnd
        killed = False
        try:
            try:
                with TaskGroup(name=f"g{w.wid}") as tg:
                    for _ in range(rnd.randint(1, 3)):
                        child = self.new_worker(rnd.choice(CHILD_KINDS))
                        w.children.append(child)
                        child.task = tg.spawn(self.worker_body, child,
                                              name=f"w{child.wid}-{child.kind}-of-{w.wid}")
                    if w.hold is not None:
                        sleep(w.hold)
            except FiberExit:
                killed = True  # the wind-down gave up on this task (a shield held it)
                raise
            finally:
                running = [c.task for c in w.children if c.task is not None and not c.task.done()]
                if running and not killed:
                    self.broken.append(f"group of {w.wid} ended with children still running: "
                                       f"{running}")
        except ExceptionGroup as eg:
            failed = [c.task._exception for c in w.children
                      if c.task is not None and isinstance(c.task._exception, ChildFailed)]
            if sorted(map(id, eg.exceptions)) != sorted(map(id, failed)):
                self.broken.append(f"group of {w.wid} raised {eg.exceptions!r}, its children "
                                   f"failed with {failed!r}")
            # An interruption of this worker that came with the failures was kept for its
            # next blocking point: here (the no-lost-timeout check sees it).
            yield_now()
            return ("group failed", len(failed))
        if any(c.task is not None and isinstance(c.task._exception, ChildFailed)
               for c in w.children):
            self.broken.append(f"group of {w.wid} ended without raising its children's "
                               "failures")
        return ("group ok", len(w.children))

    # -- the promises ------------------------------------------------------------------------

    def fail(self, what: str) -> None:
        raise ModelError(f"{what} (after {self.ops} operations, t={self.clock.now()})")

    def check_always(self) -> None:
        if self.broken:
            self.fail(self.broken[0])
        for w in self.workers:
            task = w.task
            if task is None or not task.done():
                continue
            # (A child failing on purpose may fail before a cancellation that came after its
            # last wait completed: the failure stands, and its group collects it.)
            if (task._cancel_requested and not task.cancelled()
                    and not isinstance(task._exception, ChildFailed)):
                self.fail(f"worker {task.name} was cancelled but ended with {w.outcome}")
            for i, scope in enumerate(w.scopes):
                if not (scope.expired and scope.waiting_at_fire):
                    continue
                left = scope.left_with
                if isinstance(left, FiberExit):
                    continue  # killed by the wind-down (it held cancellations back)
                stronger = isinstance(left, Cancelled) or any(
                    left is outer.error for outer in w.scopes[:i])
                if left is not scope.error and not stronger:
                    self.fail(f"worker {task.name}: scope {i} expired while it waited but was "
                              f"left with {left!r} (outcome {w.outcome})")
        if self.cond_true > self.notified:
            self.fail(f"{self.cond_true} waits returned True for {self.notified} notifications")
        self.check_items("queue", self.q_offered, self.q_put_ok, self.q_got, set(self.queue._items))
        self.check_items("channel", self.ch_offered, self.ch_sent_ok, self.ch_got,
                         set(self.chan._buffer))
        lock = self.lock
        if lock.owner is None and lock._waiters:
            self.fail("the lock is free but tasks wait for it")
        if lock.owner is not None and lock.owner.done():
            self.fail(f"the lock is held by finished task {lock.owner.name}")
        if self.sem.value and self.sem._waiters:
            self.fail("the semaphore has units but tasks wait for one")
        if self.event.is_set() and self.event._waiters:
            self.fail("the event is set but tasks wait for it")
        q = self.queue
        if q._getters and q._items:
            self.fail("the queue has items but getters wait")
        if q._putters and not q.full():
            self.fail("the queue has room but putters wait")

    def check_items(self, what: str, offered: set[int], delivered: set[int], taken: list[int],
                    inside: set[int]) -> None:
        if len(set(taken)) != len(taken):
            self.fail(f"{what}: an item was taken twice: {sorted(taken)}")
        if not set(taken) <= offered or not inside <= offered:
            self.fail(f"{what}: an item appeared that was never offered")
        # An item not delivered whose offering worker has finished: its put or send failed
        # (items offered by workers still in their put/send/select are undecided).
        undecided = {w.item for w in self.live()}
        failed = offered - delivered - undecided
        if failed & (set(taken) | inside):
            self.fail(f"{what}: items whose put/send failed were delivered: "
                      f"{sorted(failed & (set(taken) | inside))}")

    def check_quiescent(self) -> None:
        if self.lock.locked() or self.lock._waiters:
            self.fail(f"quiet, yet the lock is held by {self.lock.owner}")
        if self.sem.value != self.sem_units or self.sem._waiters:
            self.fail(f"quiet, yet the semaphore has {self.sem.value} of {self.sem_units} units")
        cond = self.cond
        if cond.lock.locked():
            self.fail("quiet, yet the condition's lock is held")
        if cond._waiters and self.notified - self.cond_true - self.cond_failed_alone > 0:
            self.fail(f"lost notification: {self.notified} given, {self.cond_true} waits "
                      f"returned True, {self.cond_failed_alone} failed alone, and "
                      f"{len(cond._waiters)} waiters still sleep")
        # Every notification is settled now: start counting afresh.
        self.notified = self.cond_true = self.cond_failed_alone = 0
        q = self.queue
        inside = set(q._items)
        if inside & set(self.q_got) or inside | set(self.q_got) != self.q_put_ok:
            self.fail(f"queue items: put {sorted(self.q_put_ok)}, got {sorted(self.q_got)}, "
                      f"inside {sorted(inside)}")
        if q._unfinished != len(self.q_put_ok) - self.q_done:
            self.fail(f"queue unfinished count {q._unfinished}, expected "
                      f"{len(self.q_put_ok) - self.q_done}")
        if q._unfinished == 0:
            with lowlevel.timeout_scope(1):
                q.join()  # nothing unfinished: returns at once
        buffered = set(self.chan._buffer)
        if buffered & set(self.ch_got) or buffered | set(self.ch_got) != self.ch_sent_ok:
            self.fail(f"channel values: sent {sorted(self.ch_sent_ok)}, got "
                      f"{sorted(self.ch_got)}, buffered {sorted(buffered)}")
        for w in self.live():
            assert w.task is not None
            # (A shield holds a cancellation back while its block waits.)
            # (A group waits for its children, which may be held that way.)
            shielded = any(s.shield for s in (w.task._scopes or ())) or any(
                c.task is not None and not c.task.done() for c in w.children)
            if w.task.state != "blocked" or (w.task._cancel_requested and not shielded):
                self.fail(f"quiet, yet worker {w.task.name} is {w.task.state} "
                          f"(cancel requested: {w.task._cancel_requested})")

    def check_after_run(self, rt: Any) -> None:
        if rt.tasks():
            self.fail(f"run() returned with live tasks: {rt.tasks()}")
        # Instantly -- unless a shield held the wind-down's cancellation back until its
        # block ended: then within its bounded waits.
        took = 0.0 if self.main_done_at is None else self.clock.now() - self.main_done_at
        if took > (SETTLE if self.shields else 0.0):
            self.fail(f"the wind-down took {took} s")
        self.check_always()
        for late in self.late:
            assert late.task is not None
            if late.born_in_wind_down and (late.ran or not late.task.cancelled()):
                self.fail("a task born during the wind-down was not wound down")


def run_session(rnd: random.Random, nops: int) -> int:
    """One session of ``nops`` driver operations; returns how many ran."""
    world = World(rnd, VirtualClock())
    world.session(nops)
    return world.ops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.runtime_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=100_000, help="driver operations in total")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--session", type=int, default=60, help="operations per run()")
    args = parser.parse_args(argv)
    seed = random.randrange(2**32) if args.seed is None else args.seed
    print(f"runtime model: {args.ops} operations, seed {seed}, "
          f"{sys.implementation.name} {sys.version.split()[0]}", flush=True)
    start = time.monotonic()
    done = sessions = 0
    report = start + 30
    while done < args.ops:
        session_seed = seed * 1_000_003 + sessions
        try:
            done += run_session(random.Random(session_seed), min(args.session, args.ops - done))
        except BaseException as exc:
            print(f"runtime model: FAILED in session seed {session_seed}: {exc!r}", flush=True)
            raise
        sessions += 1
        if time.monotonic() > report:
            print(f"  {done} operations, {sessions} runs", flush=True)
            report = time.monotonic() + 30
    elapsed = time.monotonic() - start
    print(f"runtime model: {done} operations in {sessions} runs in {elapsed:.1f} s: ok",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
