"""Tracing the frames of suspended fibers: pdb that sees every fiber of the thread.

A trace function gets line and return events for a frame only if the frame's ``f_trace`` is
set.  ``sys.settrace`` sets it for frames called afterwards, and a debugger entering at a
frame (``bdb.set_trace``) sets it on that frame and its callers -- the running fiber's stack.
Frames of fibers suspended at that moment keep ``f_trace`` unset: when such a fiber resumes,
its breakpoints are not hit and ``next`` off the end of it does not stop in its caller.  (Their
code is brought up to date with the tracing by the core, when each fiber next runs.)
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from ._native import _fiber_debug, _live_fibers, call_untraced, current

__all__ = ["set_trace", "trace_suspended_fibers"]

def trace_suspended_fibers(trace: Callable[[FrameType, str, Any], object]) -> int:
    """Give every frame of this thread's suspended fibers ``f_trace = trace``.

    Call it after starting `trace` with ``sys.settrace``; frames the running fiber calls later
    are traced as usual.  Returns the number of frames.
    """
    me = threading.get_ident()
    running = current()
    frames: list[FrameType] = []
    for fiber in _live_fibers():
        if fiber is running:
            continue
        state, thread_id = _fiber_debug(fiber)[:2]
        if thread_id != me or state != "suspended":
            continue
        frame = fiber.frame
        while frame is not None:
            frames.append(frame)
            frame = frame.f_back
    for frame in frames:
        frame.f_trace = trace
        frame.f_trace_lines = True
    return len(frames)


def set_trace(*, header: str | None = None, frame: FrameType | None = None) -> None:
    """Enter pdb at the caller, like ``pdb.set_trace()``, tracing every fiber of the thread.

    With ``pdb.set_trace()`` a fiber that was suspended when pdb started runs untraced until
    it calls something: its breakpoints are not hit, and ``next`` off the end of a fiber stops
    only at the next call.  This also traces the suspended fibers' frames.
    ``PYTHONBREAKPOINT=stackful.debug.set_trace`` makes ``breakpoint()`` use it.  `frame`
    (default: the caller's) is where pdb stops first.
    """
    import pdb

    debugger = pdb.Pdb()
    if header is not None:
        debugger.message(header)
    debugger.set_trace(frame if frame is not None else sys._getframe(1))
    # Only now: the code must be instrumented for the trace function set_trace installed.
    # Untraced, or the debugger (stepping from here) would stop in the call.
    call_untraced(trace_suspended_fibers, None, debugger.trace_dispatch)
