"""
The client's table of calls awaiting replies, keyed by ``Seq``, and their
timeouts.

A call is registered before it is written; cancelling its Deferred removes it
at once, so a late reply finds nothing and is dropped.  A timeout does the
same (the server is told, as for a cancel), and fails the call with
:class:`~txgeerpc.errors.CallTimeout`.

Timeouts share one timer per table (per connection), set for the earliest
deadline, instead of a ``DelayedCall`` and ``Deferred.addTimeout``'s three
closures and two callbacks per call: that cost 6 to 10 us per timed call, more
than the rest of the client's per-call work (issue 18; ``bench_server.py
--side client --timeout``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from heapq import heapify, heappop, heappush
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ._convert import Converter
from .errors import CallTimeout


class PendingCall:
    __slots__ = ("convert", "deferred", "seq", "service_method", "table", "timeout")

    def __init__(
        self, table: PendingCalls, seq: int, service_method: str, convert: Converter | None
    ) -> None:
        self.table = table
        self.seq = seq
        self.service_method = service_method
        self.convert = convert
        self.timeout: float | None = None
        """Seconds this call may wait (``None``: for ever), as
        :meth:`PendingCalls.time_out` set it."""
        self.deferred: Deferred[Any] = Deferred(self._cancel)

    def _cancel(self, d: Deferred[Any]) -> None:
        # The canceller only forgets the call; Deferred.cancel then fails it
        # with CancelledError.
        self.table.forget(self)


class PendingCalls:
    """Sequence numbers from 1 and the calls awaiting them."""

    def __init__(
        self,
        on_cancel: Callable[[int], None] | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        """:param on_cancel: called with the Seq of each call cancelled while
        pending (its Deferred cancelled, or timed out).
        :param clock: what :meth:`time_out` schedules with."""
        self.calls: dict[int, PendingCall] = {}
        """Seq -> call."""
        self._next_seq = 1
        self._on_cancel = on_cancel
        self._clock = clock
        # Timeouts: a heap of (deadline, seq).  The entry of a call answered
        # or cancelled stays until it comes up, or until the heap is twice
        # the size of what it holds live (then it is rebuilt).
        self._deadlines: list[tuple[float, int]] = []
        self._timed = 0  # pending calls with a deadline
        self._timer: IDelayedCall | None = None
        self._timer_at = math.inf

    def __len__(self) -> int:
        return len(self.calls)

    def __contains__(self, seq: int) -> bool:
        return seq in self.calls

    def register(self, service_method: str, convert: Converter | None) -> tuple[int, PendingCall]:
        """Allocate a Seq and remember the call under it."""
        seq = self._next_seq
        self._next_seq = seq + 1
        call = self.calls[seq] = PendingCall(self, seq, service_method, convert)
        return seq, call

    def skip(self) -> int:
        """Allocate a Seq for a message no reply is awaited for."""
        seq = self._next_seq
        self._next_seq = seq + 1
        return seq

    def pop(self, seq: int) -> PendingCall | None:
        """Take the call waiting for ``seq`` (``None`` if none: late or unknown)."""
        call = self.calls.pop(seq, None)
        if call is not None and call.timeout is not None:
            self.answered()
        return call

    def forget(self, call: PendingCall) -> None:
        """``call`` was cancelled: forget it, and tell ``on_cancel`` if it was pending."""
        if self.calls.pop(call.seq, None) is not None:
            if call.timeout is not None:
                self.answered()
            if self._on_cancel is not None:
                self._on_cancel(call.seq)  # tell the server (remote cancellation)

    def time_out(self, call: PendingCall, timeout: float) -> None:
        """Fail ``call`` with :class:`~txgeerpc.errors.CallTimeout` unless it
        is answered (or cancelled) within ``timeout`` seconds."""
        assert self._clock is not None, "PendingCalls(clock=) schedules timeouts"
        deadline = self._clock.seconds() + timeout
        call.timeout = timeout
        self._timed += 1
        heap = self._deadlines
        heappush(heap, (deadline, call.seq))
        if deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            # callLater(timeout), not deadline - now: the same sum as the
            # deadline, so the timer is due exactly when the call is.
            self._timer = self._clock.callLater(timeout, self._expire)
            self._timer_at = deadline
        elif len(heap) > 2 * self._timed + 64:
            live = self.calls
            heap[:] = [entry for entry in heap if entry[1] in live]
            heapify(heap)

    def answered(self) -> None:
        """A call with a timeout left the table: when none is left, the
        timer goes (nothing stays scheduled for a connection at rest)."""
        self._timed -= 1
        if not self._timed:
            self._stop_timer()

    def _stop_timer(self) -> None:
        self._deadlines.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf

    def _expire(self) -> None:
        """The timer: fail every call past its deadline, then set the timer
        for the next live one (before the failures' callbacks can make
        calls of their own)."""
        assert self._clock is not None
        self._timer = None
        self._timer_at = math.inf
        now = self._clock.seconds()
        heap, calls = self._deadlines, self.calls
        due = []
        while heap and heap[0][0] <= now:
            due.append(heappop(heap)[1])
        while heap and heap[0][1] not in calls:
            heappop(heap)  # answered already: no need to wake up for it
        if heap:
            deadline = heap[0][0]
            delay = deadline - now
            while delay > 0 and now + delay > deadline:  # never later than due
                delay = math.nextafter(delay, 0.0)
            self._timer = self._clock.callLater(delay, self._expire)
            self._timer_at = deadline
        for seq in due:
            # One at a time, as separate timers would: an earlier one's
            # callbacks may have cancelled this one.
            call = calls.pop(seq, None)
            if call is None:
                continue
            self.answered()
            if self._on_cancel is not None:
                self._on_cancel(seq)  # tell the server, as a cancel does
            assert call.timeout is not None
            call.deferred.errback(CallTimeout(call.service_method, call.timeout))

    def fail_all(self, make_error: Callable[[], Exception]) -> None:
        """Fail every pending call, each with its own exception instance."""
        calls = list(self.calls.values())
        self.calls.clear()
        self._timed = 0
        self._stop_timer()
        for call in calls:
            call.deferred.errback(make_error())
