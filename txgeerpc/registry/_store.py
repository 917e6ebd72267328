"""
Where registry entries live: :class:`MemoryStore` (an
:class:`~txgeerpc.interfaces.IRegistryStore` in a dict), and
:class:`RegistryPurge`, which drops the expired entries of any store on a
timer.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.application.internet import TimerService
from twisted.internet import error as internet_errors
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import GeeRPCError, RegistryFull
from ..interfaces import IRegistryStore

_OUTAGES = (
    GeeRPCError,  # the stores' typed errors: unavailable, timed out, too large
    ConnectionError,
    TimeoutError,
    internet_errors.ConnectError,
    internet_errors.ConnectionLost,
    internet_errors.TimeoutError,
)


def outage(failure: Failure) -> str | None:
    """A store's failure that is an outage, not a bug (its store unreachable,
    slow, or answering with a typed error): its one-line text, for a log line
    without a traceback (an outage fails every request: a traceback each
    would flood the log).  ``None`` for anything else."""
    if failure.check(*_OUTAGES):
        return str(failure.value) or type(failure.value).__name__
    return None

DEFAULT_TIMEOUT = 300.0
"""Seconds an entry lives after its last heartbeat (the reference's 5 min)."""
DEFAULT_MAX_ENTRIES = 10_000
"""Entries a :class:`MemoryStore` holds at most (the reference has no limit:
anyone who can reach it could fill its memory with made-up servers)."""


@attrs.frozen
class Entry:
    address: str
    last_heartbeat: float


@implementer(IRegistryStore)
class MemoryStore:
    """Entries in a dict.

    :param timeout: seconds an entry lives after its last heartbeat (0: entries
        never expire).
    :param max_entries: entries held at most.  A heartbeat for a new address
        when that many are held first drops the expired ones (logged as
        expired); if none has expired it fails with
        :class:`~txgeerpc.errors.RegistryFull`.  Refreshing an entry the store
        holds is always allowed.
    :raises ValueError: ``max_entries`` is less than 1.
    """

    _log = Logger()

    def __init__(
        self, timeout: float = DEFAULT_TIMEOUT, *, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be 1 or more, got {max_entries}")
        self.timeout = timeout
        self.max_entries = max_entries
        self._entries: dict[str, float] = {}
        self._events = {"joins": 0, "leaves": 0, "expiries": 0, "refused": 0}

    @property
    def counts(self) -> dict[str, int]:
        """``entries`` held now, and since the store was made: ``joins``
        (heartbeats that listed a server anew), ``leaves`` (deregistered),
        ``expiries`` (dropped as expired) and ``refused`` (the store was
        full): what :mod:`txgeerpc.metrics` exports."""
        return {"entries": len(self._entries), **self._events}

    def heartbeat(self, address: str, now: float) -> Deferred[bool]:
        last = self._entries.get(address)
        if last is None and len(self._entries) >= self.max_entries:
            for dead in self._drop_dead(now):
                self._log.info("registry: {address} expired", address=dead)
            if len(self._entries) >= self.max_entries:
                self._events["refused"] += 1
                return fail(RegistryFull(self.max_entries))
        self._entries[address] = now
        joined = last is None or not self._alive(last, now)
        if joined:
            self._events["joins"] += 1
        return succeed(joined)

    def deregister(self, address: str) -> Deferred[bool]:
        left = self._entries.pop(address, None) is not None
        if left:
            self._events["leaves"] += 1
        return succeed(left)

    def _alive(self, last: float, now: float) -> bool:
        return self.timeout <= 0 or last + self.timeout > now

    def entries(self, now: float) -> list[Entry]:
        """:meth:`live`, at once."""
        return [
            Entry(address, last)
            for address, last in sorted(self._entries.items())
            if self._alive(last, now)
        ]

    def live(self, now: float) -> Deferred[list[Entry]]:
        return succeed(self.entries(now))

    def purge(self, now: float) -> Deferred[list[str]]:
        return succeed(self._drop_dead(now))

    def _drop_dead(self, now: float) -> list[str]:
        dead = [address for address, last in self._entries.items() if not self._alive(last, now)]
        for address in dead:
            del self._entries[address]
        self._events["expiries"] += len(dead)
        return dead


class RegistryPurge(TimerService):
    """Drops expired entries every ``interval`` seconds (the reference only
    does so while answering a GET), logging each one: the first time when
    the service starts.  A purge that fails is logged and the next one
    comes at the next interval; stopping cancels a purge under way.  A store
    whose entries never expire (``timeout`` 0) is not asked."""

    _log = Logger()

    def __init__(self, store: IRegistryStore, clock: IReactorTime, interval: float) -> None:
        super().__init__(interval, self._purge)
        self.clock = clock  # TimerService's (its LoopingCall runs on it)
        self._now = clock.seconds
        self._store = store
        self._purging: Deferred[list[str]] | None = None

    def _purge(self) -> Deferred[None] | None:
        """One purge; the Deferred never fails (a failure would stop the timer)."""
        if self._store.timeout <= 0:
            return None
        self._purging = purging = self._store.purge(self._now())
        return purging.addCallbacks(self._purged, self._failed)

    def _purged(self, dropped: list[str]) -> None:
        self._purging = None
        for address in dropped:
            self._log.info("registry: {address} expired", address=address)

    def _failed(self, failure: Failure) -> None:
        self._purging = None
        if failure.check(CancelledError):
            return
        text = outage(failure)
        if text is not None:
            self._log.warn(
                "registry: purging failed (retrying in {interval}s): {error}",
                error=text,
                interval=self.step,
            )
            return
        self._log.failure(
            "registry: purging failed (retrying in {interval}s)",
            failure=failure,
            interval=self.step,
        )

    def stopService(self) -> Deferred[Any]:
        """Stop purging; a purge under way is cancelled.

        :returns: a Deferred that fires once no purge is under way.
        """
        if not self.running:  # never started (a MultiService stops every child)
            return succeed(None)
        stopped: Deferred[Any] = super().stopService()
        if self._purging is not None:
            self._purging.cancel()
        return stopped


def purge_interval(timeout: float) -> float:
    """How often to purge: often enough that an entry is gone within
    ``timeout`` plus one interval (a quarter of the timeout, 1 s at least)."""
    return max(timeout / 4, 1.0) if timeout > 0 else 60.0
