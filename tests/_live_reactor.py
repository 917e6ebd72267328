"""
The dirty-reactor check for tests on the real reactor (pytest-twisted): after
a test no delayed call may be pending and no socket may be open beyond those
that existed before it, as trial demands.  Not imported by unit tests, which
never touch the global reactor.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from twisted.internet import reactor


def _selectables() -> set[object]:
    internal = set(getattr(reactor, "_internalReaders", ()))  # the reactor's own wakers
    return (set(reactor.getReaders()) | set(reactor.getWriters())) - internal  # type: ignore[attr-defined]


@contextmanager
def reactor_left_clean() -> Iterator[None]:
    """Fail if the block leaves delayed calls or sockets behind (they are
    cancelled and aborted first, so one failure does not cascade)."""
    before = _selectables()
    yield
    leftover_calls = [call for call in reactor.getDelayedCalls() if call.active()]  # type: ignore[attr-defined]
    leftover_sockets = _selectables() - before
    for call in leftover_calls:
        call.cancel()
    for selectable in leftover_sockets:
        abort = getattr(selectable, "abortConnection", None) or getattr(
            selectable, "stopListening", None
        )
        if abort is not None:
            abort()
    assert not leftover_calls, f"pending delayed calls: {leftover_calls}"
    assert not leftover_sockets, f"open sockets: {leftover_sockets}"
