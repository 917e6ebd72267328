"""
The load-balancing client: calls spread over the servers a discovery knows,
one cached connection per server.

Fail modes (what a failed call does next):

- ``FAIL_FAST``: fail;
- ``FAIL_OVER``: try another server — only when the call cannot have run
  (the connection could not be made) unless the method is declared
  idempotent, in which case any connection failure or timeout is retried;
- ``FAIL_TRY``: retry the same server, with the same rule.

Retries are bounded (``retries``) and spaced by a doubling backoff.  Errors
the server itself answered (:class:`~txgeerpc.errors.RemoteError`) are never
retried.  Connections are dialled without holding up calls to other servers
and closed when their server leaves the list.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol, cast

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    ensureDeferred,
    fail,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from .client import Client
from .errors import (
    CallTimeout,
    ConnectFailed,
    ConnectionShutdown,
    ConnectTimeout,
    GeeRPCError,
    InvalidAddress,
    NoServers,
)
from .interfaces import ILoadAwareSelector, ISelector
from .selection import RandomSelect


class FailMode(enum.Enum):
    FAIL_FAST = "fail-fast"
    FAIL_OVER = "fail-over"
    FAIL_TRY = "fail-try"


class Discovery(Protocol):
    def servers(self) -> list[str]: ...

    def on_change(self, listener: Callable[[list[str]], None]) -> Callable[[], None]:
        """Call ``listener`` after every change until the returned function is called."""
        ...

    def ready(self) -> Deferred[None]:
        """Fires once the first list is known (well or not)."""
        ...


Dial = Callable[[str], "Deferred[Client]"]

# Failures after which the call certainly did not run on the server.
_NOT_SENT = (ConnectFailed, ConnectTimeout, InvalidAddress)
# Failures after which it may have run.
_MAYBE_RAN = (CallTimeout, ConnectionShutdown)


class XClient:
    """Calls through a discovery and a selector.

    :param dial: opens a :class:`Client` to an address (``lambda address:
        connect(reactor, address)`` in production).
    :param selector: chooses each call's server; an
        :class:`~txgeerpc.interfaces.ILoadAwareSelector` without its own
        ``in_flight`` gets :meth:`in_flight`.  Random by default.
    :param idempotent: ``Service.Method`` names safe to run twice.
    :param cooldown: seconds a server whose dial failed is passed over while
        others are up (doubling on each further failure, up to
        ``max_cooldown``; over at its first good dial), so a dead server that
        discovery still lists costs calls nothing.
    """

    _log = Logger()

    def __init__(
        self,
        discovery: Discovery,
        dial: Dial,
        clock: IReactorTime,
        *,
        selector: ISelector | None = None,
        mode: FailMode = FailMode.FAIL_FAST,
        retries: int = 3,
        backoff: float = 0.05,
        idempotent: Iterable[str] = (),
        cooldown: float = 1.0,
        max_cooldown: float = 30.0,
    ) -> None:
        self._discovery = discovery
        self._dial = dial
        self._clock = clock
        self._selector: ISelector = selector or RandomSelect()
        self.mode = mode
        self._retries = retries
        self._backoff = backoff
        self._idempotent = set(idempotent)
        self._ready: dict[str, Client] = {}
        self._waiting: dict[str, list[Deferred[Client]]] = {}
        self._dials: dict[str, Deferred[Client]] = {}
        self._closed = False
        self._cooldown = cooldown
        self._max_cooldown = max_cooldown
        self._cooling: dict[str, tuple[float, float]] = {}  # address: (until, last period)
        self._draining: set[Client] = set()  # left the list; closed when their calls end
        self._in_flight: Counter[str] = Counter()
        self._sleeping: set[Deferred[None]] = set()  # backoffs, cancelled by close()
        self._waiting_for_list: set[Deferred[None]] = set()  # likewise
        self.calls_sent: Counter[str] = Counter()
        """Calls sent to each server address (retries included), for monitoring."""
        self._unsubscribe = discovery.on_change(self._servers_changed)
        if ILoadAwareSelector.providedBy(self._selector):
            load_aware = cast(Any, self._selector)
            if load_aware.in_flight is None:
                load_aware.in_flight = self.in_flight

    # -- connections -------------------------------------------------------------

    def _client(self, address: str) -> Deferred[Client]:
        """The connection to ``address``: cached, or dialled once for every
        call that waits for it (without holding up calls to other servers)."""
        if self._closed:
            return fail(ConnectionShutdown())
        client = self._ready.get(address)
        if client is not None:
            if client.available:
                return succeed(client)
            del self._ready[address]
        # Cancelling a waiter (its call timed out) forgets it; the dial goes on
        # for the others and the cache.
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

    def _forget(self, address: str, waiter: Deferred[Client]) -> None:
        waiters = self._waiting.get(address)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)

    def _dialled(self, address: str, client: Client) -> None:
        self._dials.pop(address, None)
        self._cooling.pop(address, None)
        waiters = self._waiting.pop(address, None)
        if waiters is None or self._closed:  # dropped while dialling: _drop failed them
            client.close()
            for waiter in waiters or ():
                if not waiter.called:
                    waiter.errback(ConnectionShutdown())
            return
        listed = address in self._discovery.servers()
        if listed:
            self._ready[address] = client
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(client)
        if not listed:  # it left the list meanwhile: serve these calls, keep nothing
            self._retire(client)

    def _dial_failed(self, address: str, failure: Failure) -> None:
        self._dials.pop(address, None)
        if self._cooldown > 0 and not failure.check(CancelledError):
            _, last = self._cooling.get(address, (0.0, 0.0))
            period = min(last * 2, self._max_cooldown) if last else self._cooldown
            self._cooling[address] = (self._clock.seconds() + period, period)
        for waiter in self._waiting.pop(address, []):
            if not waiter.called:
                waiter.errback(failure)

    def _servers_changed(self, servers: list[str]) -> None:
        for address in set(self.connections) - set(servers):
            self._drop(address)
        for address in set(self._cooling) - set(servers):
            del self._cooling[address]

    def _retire(self, client: Client) -> Deferred[None] | None:
        """Close ``client`` now if it is idle (or the XClient closes), else
        once its running calls end (no new ones reach it).  The close's
        Deferred, if closed now."""
        if self._closed or client.pending == 0:
            self._draining.discard(client)
            return client.close()
        self._draining.add(client)
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
                    if self._closed
                    else ConnectFailed(f"{address} left the server list")
                )
        dialling = self._dials.pop(address, None)
        if dialling is not None:
            dialling.addErrback(lambda failure: None)
            dialling.cancel()
        return closing

    def close(self) -> Deferred[None]:
        """Close every connection; calls still running or waiting fail with
        :class:`~txgeerpc.errors.ConnectionShutdown`.  Fires once closed."""
        self._closed = True
        self._unsubscribe()
        for waiting in [*self._sleeping, *self._waiting_for_list]:
            waiting.cancel()
        closing = [self._retire(client) for client in list(self._draining)]
        closing += [self._drop(address) for address in self.connections]
        return DeferredList([d for d in closing if d is not None]).addCallback(lambda _: None)

    def in_flight(self, address: str) -> int:
        """Calls of this XClient running on ``address`` now (what
        :class:`~txgeerpc.selection.PowerOfTwoChoices` compares)."""
        return self._in_flight[address]

    @property
    def connections(self) -> list[str]:
        """Addresses with a connection (or a dial) under way."""
        return sorted(set(self._ready) | set(self._waiting))

    # -- calls -------------------------------------------------------------------

    def call(
        self,
        service_method: str,
        argument: Any = None,
        *,
        timeout: float | None = None,
        key: str | None = None,
        **options: Any,
    ) -> Deferred[Any]:
        """Call one server chosen by the selector (``key`` for hashing selectors).

        :param timeout: seconds each attempt may take, waiting for its
            connection included (``None``: no limit).
        :returns: a Deferred failing with :class:`NoServers`,
            :class:`CallTimeout`, or what the last attempt failed with (see
            :meth:`txgeerpc.Client.call`).
        """
        if not _valid_timeout(timeout):
            return fail(ValueError(f"timeout must be positive or None, got {timeout!r}"))
        try:
            fast = self._fast_call(service_method, argument, timeout, key, options)
        except Exception as error:  # a selector that raises, say: through the Deferred
            return fail(error)
        if fast is not None:
            return fast
        return ensureDeferred(self._call(service_method, argument, timeout, key, options))

    def _fast_call(
        self,
        service_method: str,
        argument: Any,
        timeout: float | None,
        key: str | None,
        options: Any,
    ) -> Deferred[Any] | None:
        """The common case without coroutines: a list, the chosen server not
        cooling down, and its connection up.  Failures go on to the retry
        loop.  ``None`` when the case is not that simple."""
        if self._closed:
            return None
        servers = self._discovery.servers()
        if not servers:
            return None
        address = (
            self._pick([], key, servers)
            if self._cooling
            else self._selector.select(servers, key=key)
        )
        client = self._ready.get(address)
        if client is None or not client.available:
            return ensureDeferred(
                self._call(service_method, argument, timeout, key, options, first=address)
            )
        d = self._send(client, address, service_method, argument, timeout, options)
        if self.mode is not FailMode.FAIL_FAST:
            d.addErrback(self._retry, address, service_method, argument, timeout, key, options)
        return d

    def _send(
        self,
        client: Client,
        address: str,
        service_method: str,
        argument: Any,
        timeout: float | None,
        options: Any,
    ) -> Deferred[Any]:
        d = client.call(service_method, argument, timeout=timeout, **options)
        self.calls_sent[address] += 1
        self._in_flight[address] += 1
        return d.addBoth(self._call_ended, address, client)

    def _call_ended(self, result: Any, address: str, client: Client) -> Any:
        self._in_flight[address] -= 1
        if not self._in_flight[address]:
            del self._in_flight[address]
        if client in self._draining and client.pending == 0:
            self._retire(client)
        return result

    def _retry(
        self,
        failure: Failure,
        address: str,
        service_method: str,
        argument: Any,
        timeout: float | None,
        key: str | None,
        options: Any,
    ) -> Any:
        if not isinstance(failure.value, GeeRPCError):
            return failure
        return ensureDeferred(
            self._call(
                service_method, argument, timeout, key, options, first=address, error=failure.value
            )
        )

    async def _call(
        self,
        service_method: str,
        argument: Any,
        timeout: float | None,
        key: str | None,
        options: Any,
        *,
        first: str | None = None,
        error: GeeRPCError | None = None,
    ) -> Any:
        """The call's attempts from the first (to ``first``, already chosen;
        ``error``: how that attempt failed, if it was made)."""
        attempt_timeout = timeout
        if first is None:
            if self._closed:
                raise ConnectionShutdown()
            started = self._clock.seconds()
            await self._first_list(timeout)
            if timeout is not None:  # the wait for the list counts against the first attempt
                attempt_timeout = timeout - (self._clock.seconds() - started)
                if attempt_timeout <= 0:
                    raise NoServers()
            first = self._pick([], key)
        address = first
        tried: list[str] = []
        delay = self._backoff
        attempt = 0
        while True:
            if error is None:
                if self._closed:
                    raise ConnectionShutdown()
                try:
                    return await self._attempt(
                        address, service_method, argument, attempt_timeout, options
                    )
                except GeeRPCError as failed:
                    error = failed
                attempt_timeout = timeout
            retryable = isinstance(error, _NOT_SENT) or (
                isinstance(error, _MAYBE_RAN) and service_method in self._idempotent
            )
            if (
                self.mode is FailMode.FAIL_FAST
                or not retryable
                or attempt >= self._retries
                or self._closed
            ):
                raise error
            attempt += 1
            tried.append(address)
            self._log.info(
                "xclient: {method} on {address} failed ({error}); retry {attempt}",
                method=service_method,
                address=address,
                error=error,
                attempt=attempt,
            )
            # Going over to a server not tried yet need not wait.
            over_at_once = (
                self.mode is FailMode.FAIL_OVER
                and isinstance(error, _NOT_SENT)
                and any(server not in tried for server in self._discovery.servers())
            )
            if not over_at_once:
                await self._sleep(delay)
                delay *= 2
            if self.mode is FailMode.FAIL_OVER or address not in self._discovery.servers():
                address = self._pick(tried, key)  # (fail-try too, once its server left)
            error = None

    async def _first_list(self, timeout: float | None) -> None:
        """Before the discovery's first list is known, wait for it (at most
        ``timeout``): a call made right after start-up finds its servers."""
        if self._discovery.servers():
            return
        ready = getattr(self._discovery, "ready", None)
        if ready is None:
            return
        shared: Deferred[None] = ready()
        if shared.called:
            return
        waiting: Deferred[None] = Deferred()  # ours to time out, not the discovery's
        shared.addBoth(lambda _: None if waiting.called else waiting.callback(None))
        if timeout is not None:
            waiting.addTimeout(timeout, self._clock, lambda *_: Failure(NoServers()))
        self._waiting_for_list.add(waiting)
        try:
            await waiting
        except CancelledError:
            if self._closed:
                raise ConnectionShutdown() from None
            raise
        finally:
            self._waiting_for_list.discard(waiting)

    async def _sleep(self, delay: float) -> None:
        if self._closed:
            raise ConnectionShutdown()
        sleeping = deferLater(self._clock, delay, lambda: None)
        self._sleeping.add(sleeping)
        try:
            await sleeping
        except CancelledError:
            if self._closed:
                raise ConnectionShutdown() from None
            raise  # the caller cancelled the call
        finally:
            self._sleeping.discard(sleeping)

    def _pick(self, tried: list[str], key: str | None, servers: list[str] | None = None) -> str:
        """The selector's choice among the servers not tried yet and not
        cooling down (or, if none is left, among those not tried, or all)."""
        servers = self._discovery.servers() if servers is None else servers
        fresh = [server for server in servers if server not in tried]
        now = self._clock.seconds()
        warm = [server for server in fresh if self._cooling.get(server, (0.0, 0.0))[0] <= now]
        return self._selector.select(warm or fresh or servers, key=key)

    def broadcast(
        self, service_method: str, argument: Any = None, *, timeout: float | None = None
    ) -> Deferred[Any]:
        """Call every server.  Fires with one server's reply when all succeed;
        the first failure fails it and cancels the calls still running.
        ``timeout`` bounds each server's call, connecting included.

        :raises NoServers: (through the Deferred) when no server is known.
        """
        if self._closed:
            return fail(ConnectionShutdown())
        if not _valid_timeout(timeout):
            return fail(ValueError(f"timeout must be positive or None, got {timeout!r}"))
        if not self._discovery.servers():
            return ensureDeferred(self._first_list(timeout)).addCallback(
                lambda _: self._broadcast(service_method, argument, timeout)
            )
        return self._broadcast(service_method, argument, timeout)

    def _broadcast(
        self, service_method: str, argument: Any, timeout: float | None
    ) -> Deferred[Any]:
        if self._closed:
            return fail(ConnectionShutdown())
        servers = self._discovery.servers()
        if not servers:
            return fail(NoServers())
        calls = [
            ensureDeferred(self._call_one(address, service_method, argument, timeout))
            for address in servers
        ]

        def cancel_all(_: Deferred[Any]) -> None:
            for call in calls:
                call.cancel()

        outcome: Deferred[Any] = Deferred(cancel_all)
        replies: list[Any] = []

        def succeeded(reply: Any) -> Any:
            replies.append(reply)
            if len(replies) == len(calls) and not outcome.called:
                outcome.callback(replies[0])
            return None

        def failed(failure: Failure) -> None:
            if not outcome.called:
                outcome.errback(failure)
                for call in calls:
                    call.cancel()  # really reaches the calls: their entries go

        for call in calls:
            call.addCallbacks(succeeded, failed)
        DeferredList(calls, consumeErrors=True)
        return outcome

    async def _call_one(
        self, address: str, service_method: str, argument: Any, timeout: float | None
    ) -> Any:
        return await self._attempt(address, service_method, argument, timeout, {})

    async def _attempt(
        self,
        address: str,
        service_method: str,
        argument: Any,
        timeout: float | None,
        options: Any,
    ) -> Any:
        """One call to ``address``; ``timeout`` covers waiting for its connection."""
        waiting = self._client(address)
        if timeout is None or waiting.called:
            client = await waiting
            left = timeout
        else:
            deadline = self._clock.seconds() + timeout
            client = await _within(waiting, deadline, self._clock, timeout)
            left = deadline - self._clock.seconds()
            if left <= 0:
                raise CallTimeout(service_method, timeout)
        return await self._send(client, address, service_method, argument, left, options)


def _within(
    waiting: Deferred[Client], deadline: float, clock: IReactorTime, timeout: float
) -> Deferred[Client]:
    """``waiting``, failing with :class:`ConnectTimeout` at ``deadline`` (the
    call was never sent: fail-over may try another server)."""
    return waiting.addTimeout(
        max(deadline - clock.seconds(), 0),
        clock,
        lambda *_: Failure(ConnectTimeout(timeout)),
    )


def _valid_timeout(timeout: float | None) -> bool:
    return timeout is None or timeout > 0  # (NaN is not)


__all__ = ["CancelledError", "FailMode", "XClient"]
