"""Seeing inside a running program: dumps of every fiber, the task tree, runtime statistics.

``stackful.dump()`` lists every live fiber of every thread -- roots, hubs, tasks and plain
fibers -- with what each task is parked on, for how long, its stack use and its Python stack,
innermost first: as text modelled on ``faulthandler``, or as JSON (the schema is
``stackful/dump_schema.json``, :func:`dump_schema` loads it).  ``dump_on(signal.SIGUSR1)``, or
``STACKFUL_DUMP_ON=SIGUSR1`` in the environment, makes a process dump itself on a signal.

How it stays cheap for the program being inspected: the native core keeps every fiber in a
linked list (linked at creation, unlinked when freed; no switch touches it), and a parked task
keeps only what the scheduler already stores -- its wait reason, its abort callback and a
coarse timestamp.  What a task waits on is worked out at dump time from those and from the
task's suspended frames (the ``self`` of the primitive's method it is parked in).

A dump only reads.  It may be taken from a signal handler (which runs between two bytecodes
of whatever fiber is running on the main thread) or from another thread: it holds the GIL,
so no fiber switches meanwhile; each suspended fiber's frames stay where they are.
"""

from __future__ import annotations

import gc
import math
import os
import re
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from types import CodeType, FrameType
from typing import IO, Any

from ._core._task import BLOCKED, READY, RUNNING, Task
from ._core._tree import tree_lines
from ._native import (
    _fiber_count,
    _fiber_debug,
    _fiber_frames,
    _live_fibers,
    discarded_fibers,
    stack_pool,
)
from ._native import (
    _monotonic_coarse_ns as _now_coarse_ns,
)
from ._profile import Profile
from ._tracing import set_trace, trace_suspended_fibers

__all__ = [
    "Profile", "RuntimeStats", "dump", "dump_on", "dump_schema", "set_trace", "snapshot", "stats",
    "trace_suspended_fibers",
]

# The gdb command (``source`` it in gdb, then ``stackful-fibers``) for a process that cannot
# be asked, or a core file: see that file's docstring.
GDB_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gdb_fibers.py")

# Frames listed per fiber, innermost first (faulthandler's limit too).
MAX_FRAMES = 100
# Longest repr() of an object a task waits on.
_MAX_REPR = 160
DUMP_FORMAT_VERSION = 1

_KIND_BY_PREFIX = (
    ("Lock.", "lock"), ("RLock.", "lock"), ("Event.", "event"), ("Semaphore.", "semaphore"),
    ("Condition.", "condition"), ("Queue.", "queue"), ("SimpleQueue.", "queue"),
    ("Channel.", "channel"), ("select", "channel"), ("join(", "join"),
    ("to_thread(", "to_thread"), ("sleep", "sleep"), ("wait_readable", "fd"),
    ("wait_writable", "fd"),
)


_THIS_FILE = __file__
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_MAIN_FILE = _PACKAGE_DIR + "__main__.py"
_internal_files: dict[str, bool] = {}


def _is_internal_file(filename: str) -> bool:
    """A file of stackful itself (its frames are hidden from text dumps by default)."""
    known = _internal_files.get(filename)
    if known is None:
        known = _internal_files[filename] = (
            filename.startswith(_PACKAGE_DIR) and filename != _MAIN_FILE)
    return known


def _safe_repr(obj: object) -> str:
    try:
        text = repr(obj)
    except Exception as exc:  # a dump never fails on a user's __repr__
        text = f"<{type(obj).__name__} (repr failed: {type(exc).__name__})>"
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


# A frame as the core hands it out (no frame object): (code, line, self), self being the
# first local of a method (its receiver), else None.
Frame = tuple[CodeType, int, Any]


def _waited_object(frames: list[Frame]) -> object | None:
    """The receiver of the outermost stackful method the task is parked in (the Lock of
    ``Lock.acquire``, the Task of ``Task.join``), or None."""
    found: object | None = None
    for code, _line, receiver in frames:  # innermost first, up to the user's code
        if not _is_internal_file(code.co_filename):
            break
        if receiver is None:
            continue
        if hasattr(receiver, "_live") and hasattr(receiver, "park"):
            continue  # the runtime's own methods (join, the task's entry) wait on nothing
        found = receiver
    return found


_FD_IN_REASON = re.compile(r"\(fd=(\d+)\)")


_kinds: dict[str, str] = {}


def _kind_of(reason: str) -> str:
    kind = _kinds.get(reason)
    if kind is None:
        kind = next((k for prefix, k in _KIND_BY_PREFIX if reason.startswith(prefix)), "other")
        if len(_kinds) < 10_000:  # reasons are a few fixed strings, but bound the cache
            _kinds[reason] = kind
    return kind


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _describe_wait(task: Task, frames: list[Frame], now: float | None) -> dict[str, Any]:
    """What a blocked task waits on, worked out from what park() stored and its frames."""
    reason = task._wait_reason
    text = str(reason)
    kind = _kind_of(text)
    wait: dict[str, Any] = {"reason": text, "kind": kind, "object": None}
    abort = task._abort
    if kind == "fd":
        fd = getattr(reason, "fd", None)
        if fd is None:  # the Python path (Runtime.wait_fd) names it in the reason
            match = _FD_IN_REASON.search(text)
            fd = int(match.group(1)) if match else None
        wait["fd"] = fd if isinstance(fd, int) else None
        wait["direction"] = "write" if text.startswith("wait_writable") else "read"
    elif kind == "sleep":
        timer = getattr(abort, "__self__", None)
        deadline = getattr(timer, "deadline", None)
        wait["deadline"] = _finite(deadline)
    elif kind == "join":
        target = _waited_object(frames)  # Task.join's receiver
        if isinstance(target, Task):
            wait["object"] = f"task {target.id} {target.name!r}"
            wait["task_id"] = target.id
    elif kind == "to_thread":
        job = getattr(abort, "__self__", None)
        fn = getattr(job, "fn", None)
        if fn is not None:
            wait["object"] = _safe_repr(fn)
    if wait["object"] is None and kind not in ("fd", "sleep"):
        obj = _waited_object(frames)
        if obj is not None:
            wait["object"] = _safe_repr(obj)
    scopes = task._scopes
    deadline = None
    if scopes:
        live = [d for d in (getattr(s, "deadline", None) for s in scopes) if d is not None]
        deadline = min(live) if live else None
    wait["timeout_deadline"] = _finite(deadline)
    if now is not None:
        for key in ("deadline", "timeout_deadline"):
            d = wait.get(key)
            wait[key.replace("deadline", "in")] = None if d is None else d - now
    return wait


def _frame_records(frames: list[Frame], cache: dict[tuple[CodeType, int], dict[str, Any]]
                   ) -> list[dict[str, Any]]:
    # Thousands of tasks parked at the same lines share one record per place.
    out = []
    for code, line, _receiver in frames:
        key = (code, line)
        record = cache.get(key)
        if record is None:
            filename = code.co_filename
            record = cache[key] = {"file": filename, "line": line if line >= 0 else None,
                                   "function": code.co_name,
                                   "internal": _is_internal_file(filename)}
        out.append(record)
    return out


def snapshot() -> dict[str, Any]:
    """Everything a dump shows, as plain data (the JSON format; see ``dump_schema()``)."""
    # No collection while the dump allocates: with thousands of suspended fibers each pass
    # walks all their frames (it tripled a dump's time), and a finalizer run from a dump
    # taken in a signal handler would be user code at an arbitrary point.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _snapshot()
    finally:
        if enabled:
            gc.enable()


def _snapshot() -> dict[str, Any]:
    me = threading.get_ident()
    names = {t.ident: t.name for t in threading.enumerate()}
    now_ns = _now_coarse_ns()
    fibers = _live_fibers()
    threads: dict[int, dict[str, Any]] = {}
    runtimes: dict[int, tuple[Any, dict[int, Task]]] = {}
    task_count = 0
    records: dict[tuple[CodeType, int], dict[str, Any]] = {}
    clock_now: dict[int, float | None] = {}
    for fiber in fibers:
        state, thread_id, alive, is_root, is_current, runtime, size, depth = _fiber_debug(fiber)
        entry = threads.get(thread_id)
        if entry is None:
            entry = threads[thread_id] = {
                "thread_id": thread_id, "name": names.get(thread_id), "alive": bool(alive),
                "runtime": None, "fibers": [],
            }
        task: Task | None = None
        kind = "root" if is_root else "fiber"
        if runtime is not None and hasattr(runtime, "_live"):
            known = runtimes.get(id(runtime))
            if known is None:
                by_fiber: dict[int, Task] = {}
                for t in list(runtime._live):
                    if t._fiber is not None:
                        by_fiber[id(t._fiber)] = t
                        by_fiber[id(t._run_fiber)] = t
                known = runtimes[id(runtime)] = (runtime, by_fiber)
                entry["runtime"] = _runtime_record(runtime)
            task = known[1].get(id(fiber))
            if fiber is runtime._hub:
                kind = "hub"
            elif task is not None:
                kind = "task" if fiber is task._fiber else "fiber"
        frames: list[Frame] = _fiber_frames(fiber, MAX_FRAMES + 8)
        if is_current and thread_id == me:
            # The dump's own frames sit on top of the caller's: leave them out.
            while frames and frames[0][0].co_filename == _THIS_FILE:
                del frames[0]
        del frames[MAX_FRAMES:]
        record: dict[str, Any] = {
            "name": fiber.name, "kind": kind, "state": state, "current": bool(is_current),
            "task": None, "waiting": None, "parked_for": None,
            "stack": {"size": size, "depth": depth if depth >= 0 else None},
            "frames": _frame_records(frames, records),
        }
        if task is not None:
            task_count += kind == "task"
            group = getattr(task, "_group", None)  # a task group, once the runtime has them
            record["task"] = {"id": task.id, "name": task.name, "state": task.state,
                              "parent_id": task._parent_id,
                              "group": None if group is None else _safe_repr(group)}
            if task.state is BLOCKED:
                rt_key = id(task._runtime)
                if rt_key in clock_now:
                    now = clock_now[rt_key]
                else:
                    try:
                        now = task._runtime.clock.now()
                    except Exception:  # pragma: no cover - a user clock that fails
                        now = None
                    clock_now[rt_key] = now
                record["waiting"] = _describe_wait(task, frames, now)
                record["parked_for"] = max(0.0, (now_ns - task._parked_ns) / 1e9)
        entry["fibers"].append(record)
    for runtime, _ in runtimes.values():
        entry = threads[runtime._thread_id] if runtime._thread_id in threads else None
        if entry is not None:
            entry["runtime"]["task_tree"] = tree_lines(
                list(runtime._live), lambda task: _tree_label(task, now_ns), indent="")
    return {
        "format": "stackful-dump", "version": DUMP_FORMAT_VERSION, "pid": os.getpid(),
        "time": time.time(), "python": sys.version.split()[0],
        "fibers": sum(len(t["fibers"]) for t in threads.values()), "tasks": task_count,
        "threads": list(threads.values()),
    }


def _runtime_record(runtime: Any) -> dict[str, Any]:
    live = list(runtime._live)
    counts = {READY: 0, RUNNING: 0, BLOCKED: 0}
    for t in live:
        counts[t.state] = counts.get(t.state, 0) + 1
    current = runtime.current
    return {"tasks": len(live), "ready": counts[READY], "running": counts[RUNNING],
            "blocked": counts[BLOCKED], "current_task": None if current is None else current.id,
            "idle": bool(runtime._idle), "task_tree": []}


def _tree_label(task: Task, now_ns: int) -> str:
    if task.state is BLOCKED:
        seconds = (now_ns - task._parked_ns) / 1e9
        return f"task {task.id} {task.name!r} blocked on {task._wait_reason} for " \
            f"{_seconds(seconds)}"
    return f"task {task.id} {task.name!r} {task.state}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _seconds(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} B"


def _fiber_heading(f: dict[str, Any]) -> str:
    task = f["task"]
    if task is not None and f["kind"] == "task":
        head = f"Task {task['id']} {task['name']!r} ({task['state']}"
    elif task is not None:
        head = f"Fiber {f['name']!r} (of task {task['id']} {task['name']!r}, {f['state']}"
    else:
        head = f"Fiber {f['name']!r} ({f['kind']}, {f['state']}"
    wait = f["waiting"]
    if wait is not None:
        head += f" for {_seconds(f['parked_for'])} on {wait['reason']}"
        if wait.get("object"):
            head += f" {wait['object']}"
        if wait.get("in") is not None:
            head += f", wakes in {_seconds(max(0.0, wait['in']))}"
        if wait.get("timeout_in") is not None:
            head += f", times out in {_seconds(max(0.0, wait['timeout_in']))}"
    if f["current"]:
        head += ", current"
    stack = f["stack"]
    if stack["size"]:
        used = "" if stack["depth"] is None else f"{_size(stack['depth'])} used of "
        head += f"; stack {used}{_size(stack['size'])}"
    if task is not None and task["parent_id"] is not None:
        head += f"; spawned by task {task['parent_id']}"
    return head + ")"


def format_text(snap: dict[str, Any], *, internals: bool = False) -> str:
    """Render a :func:`snapshot` as text (``internals``: also stackful's own frames)."""
    out = [f"Stackful dump of pid {snap['pid']}: {_count(len(snap['threads']), 'thread')}, "
           f"{_count(snap['fibers'], 'fiber')}, {_count(snap['tasks'], 'task')} "
           "(most recent call first)"]
    for th in snap["threads"]:
        name = f" {th['name']!r}" if th["name"] else ""
        gone = "" if th["alive"] else " (exited)"
        out.append("")
        rt = th["runtime"]
        if rt is None:
            out.append(f"Thread 0x{th['thread_id']:016x}{name}{gone}:")
        else:
            out.append(f"Thread 0x{th['thread_id']:016x}{name}{gone}, runtime with "
                       f"{_count(rt['tasks'], 'task')} ({rt['running']} running, "
                       f"{rt['ready']} ready, {rt['blocked']} blocked)"
                       f"{', idle' if rt['idle'] else ''}:")
            out.append("  Task tree:")
            out.extend(f"    {line}" for line in rt["task_tree"])
        for f in th["fibers"]:
            out.append(f"  {_fiber_heading(f)}:")
            shown = [fr for fr in f["frames"] if internals or not fr["internal"]]
            hidden = len(f["frames"]) - len(shown)
            for fr in shown:
                out.append(f'    File "{fr["file"]}", line {fr["line"]} in {fr["function"]}')
            if hidden:
                noun = "frame" if hidden == 1 else "frames"
                out.append(f"    ({hidden} {noun} of stackful itself not shown)")
            if not f["frames"]:
                out.append("    (no Python frames)")
    return "\n".join(out) + "\n"


def dump(file: IO[str] | None = None, format: str = "text", *, internals: bool = False) -> None:
    """Write every live fiber of every thread to ``file`` (default: ``sys.stderr``).

    ``format="text"`` reads like ``faulthandler``'s output, with a task tree per runtime;
    ``"json"`` is one JSON document following :func:`dump_schema`.  ``internals`` also lists
    stackful's own frames in the text (JSON always has them, flagged ``internal``).  Safe from
    a signal handler and from any thread; it only reads.
    """
    text = render(format, internals=internals)
    out = sys.stderr if file is None else file
    out.write(text)
    out.flush()


def render(format: str = "text", *, internals: bool = False) -> str:
    """The dump :func:`dump` writes, as a string."""
    if format not in ("text", "json"):
        raise ValueError(f"format must be 'text' or 'json', not {format!r}")
    snap = snapshot()
    if format == "json":
        import json

        return json.dumps(snap, separators=(",", ":")) + "\n"
    return format_text(snap, internals=internals)


def dump_schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12 subset) that ``dump(format="json")`` follows."""
    import json
    from importlib import resources

    text = resources.files("stackful").joinpath("dump_schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


# -- dumping on a signal --------------------------------------------------------------------------

_installed: dict[int, Any] = {}


def dump_on(
    signum: int,
    *,
    file: IO[str] | None = None,
    format: str = "text",
    internals: bool = False,
) -> None:
    """Dump (as :func:`dump` does) every time the process receives ``signum``.

    Like ``faulthandler.register``: ``kill -USR1 <pid>`` then shows what every task is doing
    without changing the program.  Must be called on the main thread; the dump is written
    with one ``os.write`` loop on the file's descriptor (never through a buffer the
    interrupted code may be in the middle of using).  ``dump_on(signum, ...)`` again
    replaces the settings; :func:`cancel_dump_on` restores the previous handler.
    """
    if format not in ("text", "json"):
        raise ValueError(f"format must be 'text' or 'json', not {format!r}")
    if threading.current_thread() is not threading.main_thread():
        raise ValueError("dump_on() must be called from the main thread (signal handlers "
                         "live there)")
    if signum in (signal.SIGKILL, signal.SIGSTOP):
        raise ValueError(f"{signal.Signals(signum).name} cannot be caught")

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        target = sys.stderr if file is None else file
        try:
            text = render(format, internals=internals)
            _write_fd(target, text)
        except Exception as exc:  # a dump must never break the program it inspects
            try:
                _write_fd(target, f"stackful: the dump failed: {exc!r}\n")
            except Exception:  # pragma: no cover - nowhere left to say it
                pass

    previous = signal.signal(signum, on_signal)
    _installed.setdefault(signum, previous)


def cancel_dump_on(signum: int) -> None:
    """Undo :func:`dump_on` for ``signum`` (its previous handler comes back)."""
    if signum in _installed:
        signal.signal(signum, _installed.pop(signum))


def _write_fd(file: IO[str] | None, text: str) -> None:
    if file is None:
        return
    try:
        fd = file.fileno()
    except (AttributeError, OSError, ValueError):
        file.write(text)  # no descriptor (a StringIO): the buffer is ours alone
        return
    data = text.encode("utf-8", "backslashreplace")
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _install_from_environment(value: str | None = None) -> None:
    """``STACKFUL_DUMP_ON=SIGUSR1`` (or ``USR1``, or a number; ``,json`` for JSON)."""
    if value is None:
        value = os.environ.get("STACKFUL_DUMP_ON", "")
    if not value:
        return
    name, _, fmt = value.partition(",")
    name = name.strip().upper()
    try:
        signum = int(name) if name.isdigit() else int(
            signal.Signals[name if name.startswith("SIG") else "SIG" + name])
    except (KeyError, ValueError):
        print(f"stackful: STACKFUL_DUMP_ON={value!r} names no signal; ignored",
              file=sys.stderr)
        return
    if threading.current_thread() is threading.main_thread():
        dump_on(signum, format=fmt.strip() or "text")


# -- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeStats:
    """Counters of one runtime (:func:`stats`); reading them costs no switch anything."""

    switches: int
    """Times a task yielded or parked (each one switch away from it)."""
    hub_resumptions: int
    """Times control went back to the hub (nothing was ready, or main ended)."""
    tasks_spawned: int
    tasks_finished: int
    tasks_ready: int
    tasks_running: int
    tasks_blocked: int
    timers_active: int
    io_waiting: int
    stack_trims: int
    """Stacks of idle I/O-parked tasks trimmed (pages given back)."""
    seconds_running: float
    """Wall time since ``run()`` started."""
    seconds_polling: float
    """Of which the hub spent blocked in the poller, waiting for timers and I/O."""
    fibers: int
    """Fiber objects in the process (all threads, finished ones not yet freed included)."""
    stack_pool: dict[str, Any]
    discarded_fibers: dict[str, int]
    """Fibers freed without unwinding, by cause (``stackful.discarded_fibers()``)."""

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict."""
        return asdict(self)


def stats(runtime: Any = None) -> RuntimeStats:
    """Counters of ``runtime`` (default: the one running on this thread) and of the process."""
    if runtime is None:
        from ._core._run import get_runtime

        runtime = get_runtime("stackful.debug.stats()")
    live = list(runtime._live)
    counts = {READY: 0, RUNNING: 0, BLOCKED: 0}
    for t in live:
        counts[t.state] = counts.get(t.state, 0) + 1
    spawned = runtime._next_id - 1
    started = runtime._started_at
    return RuntimeStats(
        switches=runtime._yields, hub_resumptions=runtime.hub_resumptions,
        tasks_spawned=spawned, tasks_finished=spawned - len(live),
        tasks_ready=counts[READY], tasks_running=counts[RUNNING],
        tasks_blocked=counts[BLOCKED], timers_active=runtime.timers.active,
        io_waiting=runtime.io.waiting, stack_trims=runtime.stack_trims,
        seconds_running=(time.perf_counter() - started) if started else 0.0,
        seconds_polling=runtime._idle_seconds, fibers=_fiber_count(),
        stack_pool=stack_pool(), discarded_fibers=discarded_fibers(),
    )



# -- python -m stackful show|tree -----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m stackful show|tree DUMP.json``: read a JSON dump taken elsewhere."""
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog="python -m stackful",
        description="Read a JSON dump (stackful.dump(format='json'), STACKFUL_DUMP_ON=USR1,json).")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="render the dump as text, like stackful.dump()")
    show.add_argument("dump", help="the JSON file ('-': standard input)")
    show.add_argument("--internals", action="store_true", help="also stackful's own frames")
    tree = sub.add_parser("tree", help="only each runtime's task tree")
    tree.add_argument("dump", help="the JSON file ('-': standard input)")
    args = parser.parse_args(argv)
    if args.dump == "-":
        snap = json.load(sys.stdin)
    else:
        with open(args.dump, encoding="utf-8") as f:
            snap = json.load(f)
    if snap.get("format") != "stackful-dump":
        parser.error(f"{args.dump} is not a stackful dump (no format 'stackful-dump')")
    if args.command == "show":
        sys.stdout.write(format_text(snap, internals=args.internals))
    else:
        for th in snap["threads"]:
            if th["runtime"] is not None:
                print(f"Thread 0x{th['thread_id']:016x} {th['name'] or ''}".rstrip() + ":")
                for line in th["runtime"]["task_tree"]:
                    print(f"  {line}")
    return 0
