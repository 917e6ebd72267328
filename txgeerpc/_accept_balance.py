"""
Connections spread evenly over the workers of ``twistd geerpc --workers N``.

The workers share one listening socket.  The kernel wakes every worker for a
new connection and the first to call ``accept()`` takes it, and Twisted then
accepts every connection pending in the same loop: four connections opened at
once landed on one worker of two 17 times in 20 (``benchmarks/README.md``,
the loadgen section).  RPC clients hold few connections for long, so that is
one busy worker and one idle one, for as long as the connections last.

Each worker publishes how many connections it holds in its slot of a
:class:`LoadBoard` (a few bytes of memory the parent shares with every
worker), and its listening port takes new connections through an
:class:`AcceptGate`: a worker holding more connections than the least loaded
other worker stands aside (stops reading the socket) for :data:`STAND_ASIDE`
seconds, so that that worker takes the connection; one still waiting when the
pause ends (the other is busy) is taken then.  A worker that is not ahead
accepts at most as many connections at once as bring it level.  So no
connection is refused, none waits more than :data:`STAND_ASIDE` seconds
longer, and the parent marks the slot of a worker that died as empty
(ignored) until its replacement publishes.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall

__all__: list[str] = []  # private: used by txgeerpc._workers

STAND_ASIDE = 0.01
"""Seconds a worker ahead of another leaves a new connection to it."""
REFRESH = 0.5
"""Seconds between a worker's publications of its count when it accepts
nothing (its connections close: the others see it less loaded)."""
_SLOT = struct.Struct("=i")
_GONE = -1  # a slot with no live worker: ignored
_BATCH = 100  # accepts per wake when no other worker is known (Twisted's default)


def create_board(count: int) -> int:
    """A board of ``count`` empty slots, for the parent: an unlinked file's
    descriptor (inheritable, for the workers' ``childFDs``)."""
    with tempfile.TemporaryFile() as scratch:  # unlinked: nothing to remove
        fd = os.dup(scratch.fileno())
    os.pwrite(fd, _SLOT.pack(_GONE) * count, 0)
    return fd


def mark_gone(fd: int, worker: int) -> None:
    """For the parent: worker ``worker`` ended; its slot is ignored until
    its replacement publishes."""
    os.pwrite(fd, _SLOT.pack(_GONE), worker * _SLOT.size)


class LoadBoard:
    """The workers' connection counts, one slot each, in shared memory.

    :param fd: the board's descriptor (see :func:`create_board`); it is
        mapped, and may be closed afterwards.
    :param worker: this worker's slot.
    :param count: the number of slots (workers).
    """

    def __init__(self, fd: int, worker: int, count: int) -> None:
        self._map = mmap.mmap(fd, count * _SLOT.size)
        self._offset = worker * _SLOT.size
        self._others = [w * _SLOT.size for w in range(count) if w != worker]

    def publish(self, connections: int) -> None:
        """Say this worker holds ``connections`` connections now."""
        _SLOT.pack_into(self._map, self._offset, connections)

    def least_other(self) -> int | None:
        """The fewest connections another live worker holds, or ``None``
        when no other worker is alive."""
        counts = [_SLOT.unpack_from(self._map, offset)[0] for offset in self._others]
        live = [count for count in counts if count != _GONE]
        return min(live) if live else None

    def close(self) -> None:
        self._map.close()


class AcceptGate(Service):
    """Makes ``port`` (a listening Twisted ``tcp.Port`` shared with other
    workers) accept as :mod:`the module <txgeerpc._accept_balance>` says,
    while this service runs.

    :param load: how many connections this worker holds now.
    """

    def __init__(self, port: Any, board: LoadBoard, load: Callable[[], int], clock: Any) -> None:
        self._port = port
        self._board = board
        self._load = load
        self._clock = clock
        self._accept = port.doRead
        self._pause: IDelayedCall | None = None
        self._refresh: IDelayedCall | None = None
        self.stood_aside = 0
        """How many times this worker left a connection to another."""

    def startService(self) -> None:
        super().startService()
        self._port.doRead = self._do_read
        self._publish()

    def closed(self) -> None:
        """A connection of this worker closed: publish its count."""
        if self.running:
            self._publish()

    def stopService(self) -> None:
        super().stopService()
        self._port.doRead = self._accept
        for call in (self._pause, self._refresh):
            if call is not None and call.active():
                call.cancel()
        self._pause = self._refresh = None
        self._board.publish(_GONE)

    def _publish(self) -> None:
        """Publish this worker's count now, and again every REFRESH seconds."""
        self._board.publish(self._load())
        if self._refresh is not None and self._refresh.active():
            self._refresh.reset(REFRESH)
        else:
            self._refresh = self._clock.callLater(REFRESH, self._publish)

    def _do_read(self) -> None:
        """The port's ``doRead``: a connection (or more) is waiting."""
        mine = self._load()
        least = self._board.least_other()
        if least is not None and mine > least:
            # Ahead of another worker: leave this one to it for a moment.
            self.stood_aside += 1
            self._port.stopReading()
            self._pause = self._clock.callLater(STAND_ASIDE, self._resume)
            return
        self._take(_BATCH if least is None else least - mine + 1)

    def _take(self, most: int) -> None:
        self._port.numberAccepts = most
        self._accept()
        self._publish()

    def _resume(self) -> None:
        """The pause is over: take a connection still waiting, then go on
        reading (the rule applies again to the next)."""
        self._pause = None
        port = self._port
        if not port.connected:  # stopped listening meanwhile
            return
        self._take(1)  # with none waiting, its accept() finds none
        port.startReading()
