"""TimeoutScope: raise ``TimeoutError`` in the running task once a deadline passes.

It is a :class:`CancelScope` that fails at its deadline (``fail_after`` / ``timeout``): when
the timer fires, the task's current wait (or its next blocking point) raises this scope's own
``TimeoutError`` instance.  Owning the instance lets nested scopes tell their timeout from an
outer one, and lets a scope whose body finished in time withdraw a timeout that fired but was
never delivered.  The rules (blocking points only, nesting, shields) are in ``_cancel.py``.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from ._cancel import CancelScope


class TimeoutScope(CancelScope):
    """Context manager: the body gets ``TimeoutError`` if it is still blocked at ``deadline``.

    ``deadline`` is on the runtime's clock; None or +inf mean no deadline, NaN is a
    ``ValueError``, a deadline already past expires at the body's first blocking point.
    ``expired`` tells afterwards whether this scope's deadline passed inside the body;
    ``cancel()`` raises the scope's ``TimeoutError`` too (a fail scope never leaves quietly).
    """

    __slots__ = ()

    # ScopeCore.__init__ (C) gives a class with this set fail=True unless told otherwise:
    # internal timeouts (a lock's, a queue's) make one per wait, without a Python frame.
    _fails_by_default = True

    if TYPE_CHECKING:
        # Narrower than the base: it never swallows (its TimeoutError goes through), so code
        # after a ``with`` that returns inside it needs no unreachable return.
        def __exit__(  # type: ignore[override]
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None: ...

        def __init__(  # noqa: D107
            self, deadline: float | None, what: str = "", *, shield: bool = False
        ) -> None: ...
