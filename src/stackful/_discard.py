"""Undo library state entered by the frames of a fiber freed without unwinding.

A suspended fiber that cannot be unwound (its thread exited, or it caught ``FiberExit`` and
switched away) is freed without running its frames: their ``finally`` blocks never run. What
those frames had entered in the interpreter itself (generators, ``Context.run``, the repr guard,
a garbage collection) the native core undoes; this module undoes what lives in Python
libraries. The core calls :func:`on_discard` with the fiber's innermost frame just before the
frames are dropped.

Covered: an asyncio event loop whose ``run_forever`` was on the fiber (the loop no longer says
it is running; its running-loop entry and hooks were the fiber's own and go with it), and the
SIGINT handler
``asyncio.run`` installs for its duration (left in place, it would turn the next Ctrl-C into a
cancellation of a task that no longer runs).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any


def _frames(frame: FrameType | None) -> Iterator[FrameType]:
    while frame is not None:
        yield frame
        frame = frame.f_back


def _stop_asyncio_loops(frame: FrameType, own_thread: bool) -> None:
    base_events = sys.modules.get("asyncio.base_events")
    events = sys.modules.get("asyncio.events")
    if base_events is None or events is None:
        return
    run_forever = base_events.BaseEventLoop.run_forever.__code__
    for f in _frames(frame):
        if f.f_code is not run_forever:
            continue
        loop: Any = f.f_locals.get("self")
        if loop is None:
            continue
        loop._stopping = False
        loop._thread_id = None
        # The running loop, the async generator hooks and the coroutine origin tracking
        # depth run_forever set were the fiber's own (interp_state.c): the core drops them
        # with it, and whatever runs now keeps its own.
        if hasattr(loop, "_old_agen_hooks"):
            loop._old_agen_hooks = None
        if own_thread and events._get_running_loop() is loop:
            events._set_running_loop(None)  # true only where it could not be made per fiber


def _restore_asyncio_sigint(frame: FrameType) -> None:
    runners = sys.modules.get("asyncio.runners")
    runner = getattr(runners, "Runner", None)
    if runner is None:
        return
    import signal

    run = runner.run.__code__
    for f in _frames(frame):
        if f.f_code is not run:
            continue
        handler = f.f_locals.get("sigint_handler")
        if handler is not None and signal.getsignal(signal.SIGINT) is handler:
            try:
                signal.signal(signal.SIGINT, signal.default_int_handler)
            except ValueError:  # not the main thread: only it can set handlers
                pass


def on_discard(frame: FrameType, own_thread: bool) -> None:
    """Called by the core before it drops a discarded fiber's frames (innermost first)."""
    _stop_asyncio_loops(frame, own_thread)
    _restore_asyncio_sigint(frame)
