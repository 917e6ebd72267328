"""
The client's table of calls awaiting replies, keyed by ``Seq``.

A call is registered before it is written; cancelling its Deferred (which is
what a timeout does) removes it at once, so a late reply finds nothing and is
dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from ._convert import Converter


class PendingCall:
    __slots__ = ("calls", "convert", "deferred", "on_cancel", "seq", "service_method")

    def __init__(
        self,
        calls: dict[int, PendingCall],
        seq: int,
        service_method: str,
        convert: Converter | None,
        on_cancel: Callable[[int], None] | None,
    ) -> None:
        self.calls = calls
        self.on_cancel = on_cancel
        self.seq = seq
        self.service_method = service_method
        self.convert = convert
        self.deferred: Deferred[Any] = Deferred(self._cancel)

    def _cancel(self, d: Deferred[Any]) -> None:
        # The canceller only forgets the call; Deferred.cancel then fails it
        # with CancelledError (turned into CallTimeout by addTimeout's handler).
        if self.calls.pop(self.seq, None) is not None and self.on_cancel is not None:
            self.on_cancel(self.seq)  # tell the server (remote cancellation)


class PendingCalls:
    """Sequence numbers from 1 and the calls awaiting them."""

    def __init__(self, on_cancel: Callable[[int], None] | None = None) -> None:
        """:param on_cancel: called with the Seq of each call cancelled while
        pending (its Deferred cancelled, or timed out)."""
        self._calls: dict[int, PendingCall] = {}
        self._next_seq = 1
        self._on_cancel = on_cancel

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, seq: int) -> bool:
        return seq in self._calls

    def register(self, service_method: str, convert: Converter | None) -> tuple[int, PendingCall]:
        """Allocate a Seq and remember the call under it."""
        seq = self._next_seq
        self._next_seq = seq + 1
        call = self._calls[seq] = PendingCall(
            self._calls, seq, service_method, convert, self._on_cancel
        )
        return seq, call

    def skip(self) -> int:
        """Allocate a Seq for a message no reply is awaited for."""
        seq = self._next_seq
        self._next_seq = seq + 1
        return seq

    def pop(self, seq: int) -> PendingCall | None:
        """Take the call waiting for ``seq`` (``None`` if none: late or unknown)."""
        return self._calls.pop(seq, None)

    def fail_all(self, make_error: Callable[[], Exception]) -> None:
        """Fail every pending call, each with its own exception instance."""
        calls = list(self._calls.values())
        self._calls.clear()
        for call in calls:
            call.deferred.errback(make_error())
