"""
Real-socket tests run under pytest-twisted.  After each one the reactor must be
as clean as trial's dirty-reactor check demands: no delayed calls and no
sockets beyond those that existed before the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from twisted.internet import reactor


def _selectables() -> set[object]:
    internal = set(getattr(reactor, "_internalReaders", ()))  # the reactor's own wakers
    return (set(reactor.getReaders()) | set(reactor.getWriters())) - internal  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def clean_reactor() -> Iterator[None]:
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
