"""A coverage.py plugin that credits each line to the fiber that ran it.

Enable it in the coverage configuration::

    [run]            # .coveragerc (or [tool.coverage.run] in pyproject.toml)
    plugins = stackful.coverage_plugin

Why it is needed: coverage.py's trace-function cores (``ctrace``, its default before Python
3.14, and ``pytrace``) keep a stack of "which file is this frame in" entries that follows the
interpreter's call and return events.  A fiber switch changes the running frame with neither
event, so after a switch lines are recorded against the file of the frame that switched: a
line that ran shows as missed, and line numbers of one file land in another's data.  For
greenlets coverage.py keeps one such stack per greenlet (``concurrency = greenlet``, keyed by
``greenlet.getcurrent()``); this plugin gives its collector ``stackful.current`` as that key,
before the first tracer starts, so every fiber -- task, plain fiber or stackful greenlet --
has a stack of its own.

The ``sysmon`` core (Python 3.12+, ``COVERAGE_CORE=sysmon``; the default from 3.14) keeps no
such stack and is exact without this plugin; with it, nothing changes.  The plugin reaches
into coverage.py's collector (7.x), which is not a public API: with a coverage.py that has
none it warns and does nothing.
"""

from __future__ import annotations

import warnings
from typing import Any

from ._native import current, get_switch_hook, set_switch_hook

_patched = False


def coverage_init(reg: Any, options: dict[str, str]) -> None:
    """coverage.py's plugin entry point (runs before the measurement starts)."""
    global _patched
    try:
        from coverage.collector import Collector  # type: ignore[import-not-found, unused-ignore]
    except ImportError:  # pragma: no cover - coverage.py moved its collector
        warnings.warn("stackful.coverage_plugin: coverage.collector.Collector not found; "
                      "lines run on fibers may be credited wrongly", stacklevel=2)
        reg.add_configurer(_Configurer())
        return
    if not _patched:
        original = Collector._start_tracer

        def _start_tracer(self: Any) -> Any:
            # Only cores whose tracer keeps per-"greenlet" stacks take the key; and never
            # over a concurrency library the user asked for explicitly.
            tracer_class = getattr(getattr(self, "core", None), "tracer_class", None)
            if self.concur_id_func is None and hasattr(tracer_class, "concur_id_func"):
                self.concur_id_func = current
            if self.concur_id_func is current:
                _refresh_on_switch()  # on this thread (coverage starts a tracer per thread)
            return original(self)

        Collector._start_tracer = _start_tracer  # type: ignore[method-assign, unused-ignore]
        _patched = True
    reg.add_configurer(_Configurer())


def _refresh_on_switch() -> None:
    """Have every landing of a switch on this thread run a Python call.

    The tracer picks the data stack of the running fiber only on call and return events; a
    line event uses the entry it picked last.  After a switch the resumed frame's lines would
    go to the fiber that switched, until its next call or return.  The hook's own call and
    return events, on the resumed fiber, make the tracer pick that fiber's stack again (and
    leave it as it was: one push, one pop).
    """
    previous = get_switch_hook()
    if getattr(previous, "_stackful_coverage", False):
        return
    if previous is None:
        def hook(event: str, fibers: tuple[Any, Any]) -> None:
            return None
    else:
        def hook(event: str, fibers: tuple[Any, Any]) -> None:
            previous(event, fibers)
    hook._stackful_coverage = True  # type: ignore[attr-defined]
    set_switch_hook(hook)


class _Configurer:
    """coverage.py wants every plugin to register something; this changes no setting."""

    def configure(self, config: Any) -> None:
        """Nothing to configure: the collector's key is set when its tracer starts."""
