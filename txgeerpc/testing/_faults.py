"""
Faults on a connection, described once and applied by two carriers: the
in-memory network (:mod:`._memory`) and the loopback TCP proxy
(:mod:`._proxy`).

:class:`Faults` is the description the test changes, at any time, also while
connections are live.  :class:`Flow` is one direction of one connection
applying it: bytes are pulled from a :class:`Source` (the sender's buffer)
into a bounded window (the network's buffers, which is how a slow or paused
receiver pushes back on the sender), and delivered to a :class:`Sink` (the
receiver) when latency, pause, the slow reader and the receiver allow.  Every
wait is a ``callLater`` on the injected clock.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime

WINDOW = 64 * 1024
"""Bytes one direction of a connection holds between sender and receiver
(what socket buffers hold): beyond it the sender's own buffer grows."""

READ_SIZE = 64 * 1024
"""The most one ``dataReceived`` delivers (Twisted reads 64 KiB at a time)."""


class _Resettable(Protocol):
    def reset(self) -> None: ...


def _changed(instance: DirectionFaults, attribute: Any, value: Any) -> Any:
    if attribute.name == "cut_after":
        instance._cut_epoch += 1
    for flow in list(instance._flows):
        flow.wake()
    return value


def _not_negative(instance: Any, attribute: Any, value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value!r}")


def _positive_or_none(instance: Any, attribute: Any, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{attribute.name} must be positive or None, got {value!r}")


def _count_or_none(instance: Any, attribute: Any, value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value!r}")


_HOOKS = attrs.setters.pipe(attrs.setters.validate, _changed)


@attrs.define(eq=False)
class DirectionFaults:
    """Faults on the bytes flowing one way.  Every attribute can be changed
    while connections are live; the change applies from then on.

    :ivar latency: seconds each byte takes to arrive (bytes keep their order).
    :ivar blackhole: drop every byte silently (the sender sees them written;
        a connection attempt towards a blackholed server never completes).
    :ivar paused: hold the bytes (the window fills, then the sender's own
        buffer); they flow again when this is false.
    :ivar read_limit: the slow reader: deliver at most this many bytes per
        ``read_interval`` (``None``: no limit).
    :ivar read_interval: seconds between two deliveries of the slow reader;
        0 delivers ``read_limit`` bytes per turn of the clock.
    :ivar cut_after: forward this many more bytes, then reset the connection
        (both sides see it lost); ``None``: no cut.  Counted from when it is
        set, or from the start of a connection made later.
    """

    latency: float = attrs.field(default=0.0, validator=_not_negative, on_setattr=_HOOKS)
    blackhole: bool = attrs.field(default=False, on_setattr=_HOOKS)
    paused: bool = attrs.field(default=False, on_setattr=_HOOKS)
    read_limit: int | None = attrs.field(
        default=None, validator=_positive_or_none, on_setattr=_HOOKS
    )
    read_interval: float = attrs.field(default=0.0, validator=_not_negative, on_setattr=_HOOKS)
    cut_after: int | None = attrs.field(default=None, validator=_count_or_none, on_setattr=_HOOKS)
    _flows: set[Flow] = attrs.field(factory=set, init=False, repr=False)
    _cut_epoch: int = attrs.field(default=0, init=False, repr=False)

    def slow_reader(self, limit: int, interval: float = 0.0) -> None:
        """Deliver at most ``limit`` bytes every ``interval`` seconds."""
        self.read_interval = interval
        self.read_limit = limit

    def clear(self) -> None:
        """No faults this way any more (held bytes flow again)."""
        self.latency = 0.0
        self.blackhole = False
        self.paused = False
        self.read_limit = None
        self.read_interval = 0.0
        self.cut_after = None


@attrs.define(eq=False)
class Faults:
    """What goes wrong between clients and a server; change it at any time.

    :ivar to_server: faults on the bytes clients send.
    :ivar to_client: faults on the bytes the server sends.
    """

    to_server: DirectionFaults = attrs.field(factory=DirectionFaults)
    to_client: DirectionFaults = attrs.field(factory=DirectionFaults)
    _connections: set[_Resettable] = attrs.field(factory=set, init=False, repr=False)

    def pause(self) -> None:
        """Hold the bytes both ways."""
        self.to_server.paused = True
        self.to_client.paused = True

    def resume(self) -> None:
        """Let held bytes flow again, both ways."""
        self.to_server.paused = False
        self.to_client.paused = False

    def reset(self) -> None:
        """Reset every live connection these faults apply to: both sides see
        the connection lost (``ConnectionLost``), bytes in flight are gone."""
        for connection in list(self._connections):
            connection.reset()

    def clear(self) -> None:
        """No faults any more, either way."""
        self.to_server.clear()
        self.to_client.clear()

    @property
    def connections(self) -> int:
        """Live connections these faults apply to."""
        return len(self._connections)


class Source(Protocol):
    """Where a flow's bytes come from: the sender's buffer."""

    def pull(self, room: int) -> tuple[bytes, bool]:
        """At most ``room`` bytes, and whether the sender's stream ends after them."""


class Sink(Protocol):
    """Where a flow's bytes go: the receiver."""

    def ready(self) -> bool:
        """True while the receiver reads."""

    def push(self, data: bytes) -> None:
        """Deliver bytes."""

    def end(self) -> None:
        """Deliver the end of the stream."""


class Flow:
    """One direction of one connection under :class:`DirectionFaults`.

    :ivar queued: bytes in the window (taken from the sender, not delivered).
    :ivar forwarded: bytes delivered so far.
    :ivar dropped: bytes the blackhole swallowed.
    """

    def __init__(
        self,
        faults: DirectionFaults,
        clock: IReactorTime,
        source: Source,
        sink: Sink,
        reset: Any,
        window: int = WINDOW,
    ) -> None:
        self.faults = faults
        self._clock = clock
        self._source = source
        self._sink = sink
        self._reset = reset
        self._window = window
        self._queue: deque[tuple[float, bytes | None]] = deque()  # None: the end
        self._last_due = 0.0
        self._ended = False  # the sender's end is in the queue (or was dropped)
        self._next_read = 0.0
        self._read_this_turn = False
        self._cut_epoch = -1
        self._cut_at: int | None = None
        self._wake: IDelayedCall | None = None
        self.queued = 0
        self.forwarded = 0
        self.dropped = 0
        self.closed = False
        faults._flows.add(self)

    def wake(self, delay: float = 0.0) -> None:
        """Run (again) after ``delay`` seconds, unless a run comes sooner."""
        if self.closed:
            return
        at = self._clock.seconds() + delay
        if self._wake is not None:
            if self._wake.getTime() <= at:
                return
            self._wake.cancel()
        self._wake = self._clock.callLater(delay, self._run)

    def close(self) -> None:
        """Stop: nothing more is delivered, no call is left scheduled."""
        self.closed = True
        self.faults._flows.discard(self)
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        self._queue.clear()
        self.queued = 0

    def _run(self) -> None:
        self._wake = None
        self._read_this_turn = False
        progress = True
        while progress and not self.closed:
            progress = self._take_in()
            if self.closed:
                return
            delivered = self._deliver()
            progress = progress or delivered

    def _take_in(self) -> bool:
        room = self._window - self.queued
        if self._ended or room <= 0:
            return False
        data, ended = self._source.pull(room)
        if not data and not ended:
            return False
        faults = self.faults
        if faults.blackhole:
            self.dropped += len(data)
        else:
            due = max(self._clock.seconds() + faults.latency, self._last_due)
            self._last_due = due
            if data:
                self._queue.append((due, data))
                self.queued += len(data)
            if ended:
                self._queue.append((due, None))
        if ended:
            self._ended = True
        return True

    def _deliver(self) -> bool:
        faults = self.faults
        queue = self._queue
        if faults.paused or not queue or not self._sink.ready():
            return False
        now = self._clock.seconds()
        due, head = queue[0]
        if due > now:
            self.wake(due - now)
            return False
        if head is None:
            queue.popleft()
            self._sink.end()
            return True
        limit = READ_SIZE
        slow = faults.read_limit is not None
        if faults.read_limit is not None:
            if self._read_this_turn or now < self._next_read:
                self.wake(max(self._next_read - now, 0.0))
                return False
            limit = min(limit, faults.read_limit)
        if faults._cut_epoch != self._cut_epoch:
            self._cut_epoch = faults._cut_epoch
            cut = faults.cut_after
            self._cut_at = None if cut is None else self.forwarded + cut
        if self._cut_at is not None:
            if self._cut_at <= self.forwarded:
                self._reset()
                return False
            limit = min(limit, self._cut_at - self.forwarded)
        chunks = []
        size = 0
        while queue and size < limit:
            due, data = queue[0]
            if due > now or data is None:
                break
            take = min(len(data), limit - size)
            chunks.append(data[:take])
            size += take
            if take == len(data):
                queue.popleft()
            else:
                queue[0] = (due, data[take:])
        self.queued -= size
        self.forwarded += size
        if slow:
            self._read_this_turn = True
            self._next_read = now + faults.read_interval
            self.wake(faults.read_interval)  # the slow reader's next read
        self._sink.push(b"".join(chunks))
        return True
