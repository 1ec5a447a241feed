"""Tracing or monitoring switched on while fibers are suspended mid-call, then exceptions
raised, unwound and handled in the frames they resume in.  Their code was never run while
the hook was on, so CPython never instrumented it (it does that only for the frames on a
thread's frame chain and at a function's start); 3.15 reads the exception events' tools
from the raising code's own monitoring data and crashed on its absence.

    monitoring_turned_on_while_suspended.py settrace|setprofile|monitoring

Prints one line per fiber, what it ended with, then the events the hook saw from the
fibers' own functions."""

import sys
from collections.abc import Generator
from typing import Any

import stackful
from stackful import Fiber

root = stackful.current()
mode = sys.argv[1]
seen: list[str] = []


def raises_after_resume() -> str:
    root.switch("parked")
    try:
        raise KeyError("handled")       # RAISE, then EXCEPTION_HANDLED
    except KeyError:
        pass
    return "handled"


def unwinds_after_resume() -> None:
    root.switch("parked")
    raise ValueError("unwound")         # RAISE, then PY_UNWIND through its caller


def caller_of_unwinder() -> str:
    try:
        unwinds_after_resume()
    except ValueError as e:
        return f"caught {e}"
    return "not raised"


def generator_parked_inside() -> Generator[int, None, None]:
    root.switch("parked")               # a generator frame on the suspended fiber's chain
    try:
        raise LookupError("in generator")
    except LookupError:
        yield 1


def runs_generator() -> str:
    return f"yielded {list(generator_parked_inside())}"


def reraises_after_resume() -> str:
    try:
        try:
            root.switch("parked")
            raise OSError("first")
        finally:
            pass                        # RERAISE on the way out
    except OSError as e:
        return f"reraised {e}"


OURS = {f.__code__.co_name for f in (raises_after_resume, unwinds_after_resume,
                                     caller_of_unwinder, generator_parked_inside,
                                     runs_generator, reraises_after_resume)}


def record(name: str, what: str) -> None:
    if name in OURS:
        seen.append(f"{what}:{name}")


def tracer(frame: Any, event: str, arg: Any) -> Any:
    record(frame.f_code.co_name, event)
    return tracer


fibers = [Fiber(fn) for fn in (raises_after_resume, caller_of_unwinder, runs_generator,
                               reraises_after_resume)]
for f in fibers:
    assert f.switch() == "parked"

if mode == "settrace":
    sys.settrace(tracer)
elif mode == "setprofile":
    sys.setprofile(tracer)
else:
    mon = sys.monitoring  # type: ignore[attr-defined]
    tool = mon.DEBUGGER_ID
    ev = mon.events
    mon.use_tool_id(tool, "crash-script")
    for event, name in ((ev.RAISE, "raise"), (ev.EXCEPTION_HANDLED, "handled"),
                        (ev.PY_UNWIND, "unwind"), (ev.RERAISE, "reraise")):
        mon.register_callback(tool, event,
                              lambda code, offset, exc, name=name: record(code.co_name, name))
    mon.set_events(tool, ev.RAISE | ev.EXCEPTION_HANDLED | ev.PY_UNWIND | ev.RERAISE)

results = [f.switch() for f in fibers]
sys.settrace(None)
sys.setprofile(None)
for r in results:
    print(r)
print(" ".join(sorted(set(seen))))
