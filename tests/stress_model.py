"""The model the stress run (tests/stress.py) is checked against.

`Model` replays each operation abstractly and predicts what the root gets
back, which fiber receives which command (in order), which finally blocks and
subclass __del__ methods run (in order), every fiber's state, parent, context
variable and handled exception, what each fiber sees from where it sits (hooks,
reprs, contexts: `look`), and how many fibers the core discards, for what
cause, with how many warnings and quarantined stacks.

A dropped fiber still referenced from elsewhere (a zombie) dies when the last
reference goes, which may be in the middle of an operation: what it holds
(a context, a generator, the collection, a trace function) is then released at
a moment the model cannot know.  The stress run does not make fibers depend on
what a zombie holds, and where a look would see it, the model says ANY;
between operations (`settled`) everything is exact again.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from .stress_places import COLLECTING, HAS_MONITORING, HOOKS

ROOT = 0


class AnyValue:
    def __repr__(self) -> str:
        return "ANY"


ANY: Any = AnyValue()       # a field the model cannot predict


def same(a: Any, b: Any) -> bool:
    """Equal, where ANY on either side matches anything (inside tuples too)."""
    if a is ANY or b is ANY:
        return True
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@dataclass(frozen=True, eq=False)
class Msg:
    key: int
    action: tuple[Any, ...]
    mode: str


@dataclass(frozen=True)
class Result:
    fid: int
    key: int


@dataclass(frozen=True)
class Report:
    fid: int
    key: int | None
    what: str
    name: str
    var: str
    exc: int | None           # key of the Handled exception sys.exc_info() shows
    extra: Any = None

    def matches(self, other: Report) -> bool:
        return all(same(a, b) for a, b in
                   zip(self.__dict__.values(), other.__dict__.values(), strict=True))


@dataclass
class MFiber:
    fid: int
    parent: int
    big: bool                                   # default-size stack: deep frames allowed
    state: str = "new"
    frames: list[tuple[str, int, Any]] = field(default_factory=list)  # (kind, key, arg)
    var: str = "unset"                          # in its own context (outside Context.run)
    base: int | None = None                     # its context is this shared one
    in_gen: int | None = None                   # suspended inside this shared generator
    pooled: bool = True                         # still referenced by the pool
    has_del: bool = False                       # a Fiber subclass with __del__
    foreign: bool = False                       # made on a worker thread

    def exc(self) -> int | None:
        for kind, key, _ in reversed(self.frames):
            if kind == "except":
                return int(key)
        return None

    def holds(self, kind: str, arg: Any = None) -> bool:
        return any(k == kind and (arg is None or a == arg) for k, _, a in self.frames)

    def guarded(self) -> bool:
        """Inside a hook: hooks do not fire for it (the per-fiber re-entrance guard)."""
        return any(k in HOOKS for k, _, _ in self.frames)

    @property
    def shaky(self) -> bool:
        """A zombie: may die, releasing what it holds, at any point of an operation."""
        return not self.pooled and not self.foreign


@dataclass
class MGen:
    done: bool = False
    busy: int | None = None


class Model:
    CAUSES = ("thread_exited", "ignored_exit", "at_shutdown", "finalizer_skipped")

    def __init__(self, root_var: str, contexts: list[int], containers: list[int]) -> None:
        self.f: dict[int, MFiber] = {}
        self.root_var = root_var
        self.received: list[tuple[int, int]] = []
        self.finally_log: dict[int, list[Any]] = {}
        self.gens: dict[int, MGen] = {}
        self.ctxs: dict[int, str] = {cid: "unset" for cid in contexts}
        self.rids = sorted(containers)
        self.discards: collections.Counter[str] = collections.Counter()
        self.loud = 0                               # discards that warn
        self.quarantined = 0

    def name(self, fid: int) -> str:
        return "root" if fid == ROOT else f"s{fid}"

    def state(self, fid: int) -> str:
        return "running" if fid == ROOT else self.f[fid].state

    # -- who holds what

    def holders(self, kind: str, arg: Any = None) -> list[MFiber]:
        return [f for f in self.f.values() if f.frames and f.holds(kind, arg)]

    def collection_holder(self) -> MFiber | None:
        hs = [f for kind in COLLECTING for f in self.holders(kind)]
        assert len(hs) <= 1, hs
        return hs[0] if hs else None

    def shaky_holds(self, kind: str, arg: Any = None) -> bool:
        return any(f.shaky for f in self.holders(kind, arg))

    def collection_shaky(self) -> bool:
        h = self.collection_holder()
        return h is not None and h.shaky

    def hooks_installed(self) -> bool:
        """A trace or profile function is on for this thread (bursts then stay off:
        a RecursionError raised by calling the hook would remove it)."""
        return any(not f.foreign and any(k in ("trace", "profile") for k, _, _ in f.frames)
                   for f in self.f.values() if f.frames)

    def var_of(self, fid: int) -> str:
        if fid == ROOT:
            return self.root_var
        f = self.f[fid]
        for kind, _, arg in reversed(f.frames):
            if kind == "ctx":
                return self.ctxs[arg]
        return f.var if f.base is None else self.ctxs[f.base]

    def set_var(self, fid: int, value: str) -> None:
        f = self.f[fid]
        for kind, _, arg in reversed(f.frames):
            if kind == "ctx":
                self.ctxs[arg] = value
                return
        if f.base is None:
            f.var = value
        else:
            self.ctxs[f.base] = value

    def context_entered(self, fid: int) -> bool:
        """The fiber's current context is entered: it is inside Context.run, or its context
        is a shared one another fiber is inside run() of (then it cannot be replaced)."""
        f = self.f[fid]
        return f.holds("ctx") or f.base is not None and bool(self.holders("ctx", f.base))

    def blocked(self, fid: int, kind: str, arg: Any) -> str | None:
        """Why fiber `fid` cannot enter this place now, or None."""
        f = self.f[fid]
        if kind == "sgen":
            gen = self.gens[arg]
            return "done" if gen.done else "busy" if gen.busy is not None else None
        if kind == "ctx":
            return "busy" if self.holders("ctx", arg) else None
        if kind == "repr":
            return "busy" if f.holds("repr", arg) else None
        if kind in HOOKS:
            return "off" if f.guarded() else None
        if kind in COLLECTING:
            return "busy" if self.collection_holder() else None
        return None

    def look(self, fid: int, settled: bool) -> tuple[Any, ...]:
        """What fiber `fid` sees from where it sits (Places.look)."""
        f = self.f.get(fid)
        guarded = f is not None and f.guarded()
        held: dict[Any, list[MFiber]] = collections.defaultdict(list)
        for h in self.f.values():
            for kind, _, arg in h.frames:
                if kind in ("trace", "profile") and not h.foreign:
                    held[kind].append(h)
                elif kind == "ctx":
                    held[arg].append(h)

        def installed(kind: str) -> Any:
            hs = held[kind]
            if guarded or not hs:
                return False
            return True if settled or any(not h.shaky for h in hs) else ANY

        def context(cid: int) -> Any:
            hs = held[cid]
            if not hs:
                return self.ctxs[cid]
            return ANY if hs[0].shaky and not settled else "busy"

        reprs = tuple("[...]" if f is not None and f.holds("repr", rid) else "[M]"
                      for rid in self.rids)
        return (installed("trace"), installed("profile"),
                (not guarded) if HAS_MONITORING else None, reprs,
                tuple(context(cid) for cid in sorted(self.ctxs)))

    # -- the parent chain

    def ancestors(self, fid: int) -> list[int]:
        """The parent chain up to the root, or up to where it loops back (kill() of an
        ancestor makes the killer its victim's parent: g -> f -> g)."""
        out: list[int] = []
        seen = {fid}
        while fid != ROOT:
            fid = self.f[fid].parent
            if fid in seen:
                break
            seen.add(fid)
            out.append(fid)
        return out

    def live_parent(self, fid: int) -> int:
        """Where a fiber's end goes: the first ancestor not dead; the root when the chain
        loops back without one (as the core's live_parent does)."""
        for a in self.ancestors(fid):
            if a == ROOT or self.f[a].state != "dead":
                return a
        return ROOT

    # -- one fiber's frames

    def report(self, fid: int, key: int | None, what: str, extra: Any = None
               ) -> tuple[int, tuple[str, Any]]:
        f = self.f[fid]
        f.state = "suspended"
        rep = Report(fid, key, what, self.name(fid), self.var_of(fid), f.exc(), extra)
        return ROOT, ("val", ("report", rep))

    def leave(self, fid: int, kind: str, key: int, arg: Any, exc: Any) -> None:
        """A frame ends: by a pop (exc None) or as `exc` propagates through it."""
        if kind == "guard":
            self.finally_log.setdefault(fid, []).append(key)
        elif kind == "sgen":
            self.gens[arg].busy = None
            if exc is not None:
                self.gens[arg].done = True

    def unwind(self, fid: int, exc: Any) -> tuple[str, int] | None:
        """Pop frames as `exc` propagates: ('catch', key) or ('refuse', key) for the frame
        that stops it (a refuse frame stays), None if it escapes."""
        f = self.f[fid]
        while f.frames:
            kind, key, arg = f.frames[-1]
            if kind == "refuse" and exc == "exit":
                return ("refuse", key)
            f.frames.pop()
            self.leave(fid, kind, key, arg, exc)
            if kind == "catch" and exc != "exit":
                return ("catch", key)
        return None

    def leave_generator(self, f: MFiber, exc: bool) -> None:
        """Resumed (or freed) while suspended inside a shared generator's send."""
        if f.in_gen is not None:
            self.gens[f.in_gen].busy = None
            if exc:
                self.gens[f.in_gen].done = True
            f.in_gen = None

    def finish(self, fid: int, outcome: tuple[str, Any]) -> tuple[int, tuple[str, Any]]:
        f = self.f[fid]
        f.state = "dead"
        f.frames.clear()
        if outcome == ("exc", "exit"):
            outcome = ("val", ("exit",))
        return self.live_parent(fid), outcome

    def refuse(self, fid: int) -> tuple[int, tuple[str, Any]]:
        """A refuse frame caught FiberExit: Refused goes to the first live ancestor."""
        self.f[fid].state = "suspended"
        return self.live_parent(fid), ("val", ("refused", fid))

    def deliver(self, to: int, tr: tuple[str, Any]) -> tuple[str, Any]:
        """The running code hands `tr` to fiber `to`; what the root ends up with."""
        while to != ROOT:
            f = self.f[to]
            assert f.state != "dead", (to, tr)
            first = f.state == "new"
            f.state = "running"
            self.leave_generator(f, tr[0] == "exc")
            if tr[0] == "exc":
                caught = None if first else self.unwind(to, tr[1])
                if caught is None:
                    to, tr = self.finish(to, tr)
                elif caught[0] == "catch":
                    to, tr = self.report(to, caught[1], "caught", tr[1][1])
                else:
                    to, tr = self.refuse(to)
                continue
            to, tr = self.handle(to, tr[1])
        return tr

    def handle(self, fid: int, item: tuple[Any, ...]) -> tuple[int, tuple[str, Any]]:
        f = self.f[fid]
        if item[0] != "msg":
            return self.report(fid, None, "got", "exit" if item[0] == "exit" else item)
        msg: Msg = item[1]
        self.received.append((fid, msg.key))
        op = msg.action[0]
        if op == "pop":
            if not f.frames:
                return self.finish(fid, ("val", ("result", fid, msg.key)))
            self.leave(fid, *f.frames.pop(), exc=None)
            return self.report(fid, msg.key, "popped")
        if op == "push":
            kind = msg.action[1]
            arg: Any = msg.action[2] if len(msg.action) > 2 else None
            why = self.blocked(fid, kind, arg)
            if why is not None:
                return self.report(fid, msg.key, f"{kind}-{why}")
            if kind == "sgen":
                self.gens[arg].busy = fid
            f.frames.append((kind, msg.key, arg))
            return self.report(fid, msg.key, "pushed")
        if op == "report":
            return self.report(fid, msg.key, "report")
        if op == "look":
            return self.report(fid, msg.key, "look", self.look(fid, settled=False))
        if op == "setvar":
            self.set_var(fid, msg.action[1])
            return self.report(fid, msg.key, "set")
        if op == "burst":
            return self.report(fid, msg.key, "burst", ANY)
        if op == "gen":
            gen = self.gens[msg.action[1]]
            if gen.done:
                return self.report(fid, msg.key, "gen-done")
            if gen.busy is not None:
                return self.report(fid, msg.key, "gen-busy")
            if not msg.action[2]:
                return self.report(fid, msg.key, "gen", self.name(fid))
            gen.busy = fid
            f.in_gen = msg.action[1]
            return self.report(fid, msg.key, "gen-switch")
        to = msg.action[1]
        dead = to != ROOT and self.f[to].state == "dead"
        if op == "hop":
            if dead:
                return self.report(fid, msg.key, "hop-failed")
            f.state = "suspended"
            return to, ("val", ("msg", msg.action[2]))
        if op == "throwto":
            if dead:
                return self.report(fid, msg.key, "throw-failed")
            f.state = "suspended"
            return to, ("exc", ("stress", msg.action[2]))
        if op == "killto":
            if to == ROOT:
                return self.report(fid, msg.key, "kill-failed")
            if to == fid:
                return fid, ("exc", "exit")
            victim = self.f[to]
            got = None
            if victim.state == "suspended":
                victim.parent = fid
                self.leave_generator(victim, True)
                if self.unwind(to, "exit") is not None:  # refused: it tells us, its parent
                    assert self.live_parent(to) == fid
                    return self.report(fid, msg.key, "killed", ("refused", to))
            victim.state = "dead"
            victim.frames.clear()
            return self.report(fid, msg.key, "killed", got)
        raise AssertionError(op)

    # -- fibers nobody references any more

    def collected(self, fid: int) -> None:
        """The last reference to fiber `fid` went: a subclass's __del__ runs, then a suspended
        fiber is killed (unwinds), or discarded if it refuses or its thread has exited."""
        f = self.f[fid]
        if f.has_del:
            self.finally_log.setdefault(fid, []).append("del")
        if f.state == "suspended":
            if f.foreign:
                self.discard(f, "thread_exited")
            else:
                self.leave_generator(f, True)
                if self.unwind(fid, "exit") is not None:
                    self.discard(f, "ignored_exit")
        del self.f[fid]

    def discard(self, f: MFiber, cause: str, loud: bool = True) -> None:
        """Freed without unwinding: no finally runs; generators it ran are closed, the
        collection it was inside is forgotten (its stack quarantined)."""
        self.discards[cause] += 1
        self.loud += loud
        self.leave_generator(f, True)
        for kind, _, arg in f.frames:
            if kind == "sgen":
                self.gens[arg].busy = None
                self.gens[arg].done = True
            elif kind in COLLECTING:
                self.quarantined += 1
        f.frames.clear()
        f.state = "dead"

    def foreign_enter(self, fid: int, plan: list[tuple[str, Any]]) -> tuple[tuple[str, str], ...]:
        """A worker thread's fiber enters the places of `plan` in turn (skipping those it
        cannot enter) and parks; what it reports."""
        f = self.f[fid]
        f.state = "running"
        log: list[tuple[str, str]] = []
        for i, (kind, arg) in enumerate(plan):
            why = None if kind == "guard" else self.blocked(fid, kind, arg)
            if why is not None:
                log.append((kind, why))
                continue
            if kind == "sgen":
                self.gens[arg].busy = fid
            f.frames.append((kind, i, arg))
            log.append((kind, "in"))
        f.state = "suspended"
        return tuple(log)
