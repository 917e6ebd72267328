"""
The XClient's connections: one :class:`~txgeerpc.client.Client` per server
address.

- An address is dialled once however many calls wait for it, without holding
  up calls to other addresses; a waiter cancelled (its call timed out) is
  forgotten while the dial goes on for the others and the cache.
- A client found closed or lost is dropped, and the next call dials again.
- A server that leaves the list loses its connection: closed at once if idle,
  else once the calls running on it end (no new ones reach it); calls waiting
  for its dial fail with :class:`~txgeerpc.errors.ConnectFailed` (they never
  reached it, so fail-over may retry them) and the dial is cancelled.
- An address whose dial failed cools down (``cooldown`` seconds, doubling on
  each further failure up to ``max_cooldown``, over at its first good dial):
  :meth:`ClientPool.warm` leaves it out while others are up.
- A server that says it is going away (a graceful stop) loses its place at
  once: its connection is retired (its calls in flight still get their
  replies) and its address cools down as after a failed dial, so new calls
  go to the other servers; the next dial after the cooldown finds it again
  if it came back.
- :meth:`ClientPool.close` closes everything; calls waiting for a dial fail
  with :class:`~txgeerpc.errors.ConnectionShutdown`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    fail,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from .client import Client
from .errors import ConnectFailed, ConnectionShutdown

Dial = Callable[[str], "Deferred[Client]"]

__all__ = ["ClientPool", "Dial"]


class ClientPool:
    """The clients of one XClient, by address.

    :param dial: opens a :class:`Client` to an address.
    :param servers: the addresses listed now (a dial ending after its server
        left serves the calls waiting for it, and is not kept).
    :param clock: what cooldowns are measured by.
    :param cooldown: seconds an address whose dial failed stays cool
        (``0``: never).
    :param max_cooldown: the longest cooldown.
    :ivar closed: set by :meth:`close`, for good (read it, do not set it).
    :ivar draining: clients that left the list and are closed once idle
        (:meth:`call_ended` checks).
    """

    def __init__(
        self,
        dial: Dial,
        servers: Callable[[], Sequence[str]],
        clock: IReactorTime,
        *,
        cooldown: float = 1.0,
        max_cooldown: float = 30.0,
    ) -> None:
        self._dial = dial
        self._servers = servers
        self._clock = clock
        self._cooldown = cooldown
        self._max_cooldown = max_cooldown
        self.closed = False
        self._ready: dict[str, Client] = {}
        self._waiting: dict[str, list[Deferred[Client]]] = {}
        self._dials: dict[str, Deferred[Client]] = {}
        self._cooling: dict[str, tuple[float, float]] = {}  # address: (until, last period)
        self.draining: set[Client] = set()
        self.dial_failures: Counter[str] = Counter()
        """Dials to each address that failed (cancelled ones aside)."""
        self.cooldowns: Counter[str] = Counter()
        """Cooldowns each address began."""

    @property
    def connections(self) -> list[str]:
        """Addresses with a connection (or a dial) under way."""
        return sorted(set(self._ready) | set(self._waiting))

    @property
    def cooling(self) -> bool:
        """Whether any address is (or was until lately) cooling down."""
        return bool(self._cooling)

    def cached(self, address: str) -> Client | None:
        """The connection to ``address`` if it is up (the fast path's
        question), else ``None``."""
        client = self._ready.get(address)
        if client is not None and client.available:
            return client
        return None

    def client(self, address: str) -> Deferred[Client]:
        """The connection to ``address``: cached, or dialled once for every
        call that waits for it.

        :returns: a Deferred firing with the client, failing with what the
            dial failed with, with :class:`ConnectFailed` if the address
            leaves the list meanwhile or :class:`ConnectionShutdown` once the
            pool is closed.  Cancelling it forgets this waiter only.
        """
        if self.closed:
            return fail(ConnectionShutdown())
        client = self._ready.get(address)
        if client is not None:
            if client.available:
                return succeed(client)
            del self._ready[address]
        waiter: Deferred[Client] = Deferred(lambda d: self._forget(address, d))
        waiters = self._waiting.get(address)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        self._waiting[address] = [waiter]
        dialling = maybeDeferred(self._dial, address)  # a dial that raises fails its callers
        self._dials[address] = dialling
        dialling.addCallbacks(
            lambda client: self._dialled(address, client),
            lambda failure: self._dial_failed(address, failure),
        )
        return waiter

    def warm(self, servers: Sequence[str]) -> list[str]:
        """Those of ``servers`` not cooling down now."""
        now = self._clock.seconds()
        cooling = self._cooling
        return [server for server in servers if cooling.get(server, (0.0, 0.0))[0] <= now]

    def call_ended(self, client: Client) -> None:
        """A call on ``client`` ended: close it if it was draining and is idle."""
        if client in self.draining and client.pending == 0:
            self._retire(client)

    def keep(self, servers: Sequence[str]) -> None:
        """The list changed to ``servers``: drop every other address."""
        for address in set(self.connections) - set(servers):
            self._drop(address)
        for address in set(self._cooling) - set(servers):
            del self._cooling[address]

    def close(self) -> Deferred[None]:
        """Close every connection (draining ones too) and fail the calls
        waiting for a dial with :class:`ConnectionShutdown`.

        :returns: a Deferred firing with ``None`` once closed; it never fails.
        """
        self.closed = True
        closing = [self._retire(client) for client in list(self.draining)]
        closing += [self._drop(address) for address in self.connections]
        return DeferredList([d for d in closing if d is not None]).addCallback(lambda _: None)

    def _forget(self, address: str, waiter: Deferred[Client]) -> None:
        waiters = self._waiting.get(address)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)

    def _dialled(self, address: str, client: Client) -> None:
        self._dials.pop(address, None)
        self._cooling.pop(address, None)
        waiters = self._waiting.pop(address, None)
        if waiters is None or self.closed:  # dropped while dialling: _drop failed them
            client.close()
            for waiter in waiters or ():
                if not waiter.called:
                    waiter.errback(ConnectionShutdown())
            return
        listed = address in self._servers()
        if listed:
            self._ready[address] = client
            client.when_going_away().addCallback(lambda _: self._going_away(address, client))
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(client)
        if not listed:  # it left the list meanwhile: serve these calls, keep nothing
            self._retire(client)

    def _dial_failed(self, address: str, failure: Failure) -> None:
        self._dials.pop(address, None)
        if not failure.check(CancelledError):
            self.dial_failures[address] += 1
        if self._cooldown > 0 and not failure.check(CancelledError):
            _, last = self._cooling.get(address, (0.0, 0.0))
            period = min(last * 2, self._max_cooldown) if last else self._cooldown
            self._cooling[address] = (self._clock.seconds() + period, period)
            self.cooldowns[address] += 1
        for waiter in self._waiting.pop(address, []):
            if not waiter.called:
                waiter.errback(failure)

    def _going_away(self, address: str, client: Client) -> None:
        """``client``'s server is stopping: retire it, cool its address down."""
        if self._ready.get(address) is not client:
            return
        del self._ready[address]
        if self._cooldown > 0:
            _, last = self._cooling.get(address, (0.0, 0.0))
            self._cooling[address] = (self._clock.seconds() + self._cooldown, last)
            self.cooldowns[address] += 1
        self._retire(client)

    def _retire(self, client: Client) -> Deferred[None] | None:
        """Close ``client`` now if it is idle (or the pool closes), else once
        its running calls end.  The close's Deferred, if closed now."""
        if self.closed or client.pending == 0:
            self.draining.discard(client)
            return client.close()
        self.draining.add(client)
        return None

    def _drop(self, address: str) -> Deferred[None] | None:
        """Forget ``address``: retire its connection, fail the calls waiting
        for its dial and cancel the dial.  The connection's close, if any."""
        client = self._ready.pop(address, None)
        closing = self._retire(client) if client is not None else None
        # Calls waiting for a dial never reached the server: closing says so,
        # and a server leaving the list is a failed connect (fail-over retries).
        for waiter in self._waiting.pop(address, []):
            if not waiter.called:
                waiter.errback(
                    ConnectionShutdown()
                    if self.closed
                    else ConnectFailed(f"{address} left the server list")
                )
        dialling = self._dials.pop(address, None)
        if dialling is not None:
            dialling.addErrback(lambda failure: None)
            dialling.cancel()
        return closing
