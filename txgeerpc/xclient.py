"""
The load-balancing client: calls spread over the servers a discovery knows,
one cached connection per server (kept by a :mod:`txgeerpc._pool`).

Fail modes (what a failed call does next):

- ``FAIL_FAST``: fail;
- ``FAIL_OVER``: try another server — only when the call cannot have run
  (the connection could not be made, or the server had said it is going
  away) unless the method is declared
  idempotent, in which case any connection failure or timeout is retried;
- ``FAIL_TRY``: retry the same server, with the same rule.

Retries are bounded (``retries``) and spaced by a doubling backoff.  Errors
the server itself answered (:class:`~txgeerpc.errors.RemoteError`) are never
retried.  Connections are dialled without holding up calls to other servers
and closed when their server leaves the list.

Bad arguments follow :meth:`txgeerpc.Client.call`'s rule: what the caller
got wrong (a timeout that is not positive) raises at once; everything that
happens later — on the network, in the discovery or the selector — fails the
returned Deferred.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable
from typing import Any, cast

from attrs import frozen
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    ensureDeferred,
    fail,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._pool import ClientPool, Dial
from .client import Client
from .errors import (
    CallTimeout,
    ConnectFailed,
    ConnectionShutdown,
    ConnectTimeout,
    GeeRPCError,
    InvalidAddress,
    NoServers,
    ServerGoingAway,
    ServerShuttingDown,
)
from .interfaces import IDiscovery, ILoadAwareSelector, ISelector
from .selection import RandomSelect

__all__ = ["Dial", "FailMode", "XClient"]


class FailMode(enum.Enum):
    FAIL_FAST = "fail-fast"
    FAIL_OVER = "fail-over"
    FAIL_TRY = "fail-try"


# Failures after which the call certainly did not run on the server.
_NOT_SENT = (ConnectFailed, ConnectTimeout, InvalidAddress, ServerGoingAway)
# Failures after which it may have run.
_MAYBE_RAN = (CallTimeout, ConnectionShutdown, ServerShuttingDown)


@frozen
class _Call:
    """One call as its caller asked for it: what each attempt sends.

    :ivar timeout: seconds each attempt may take (``None``: no limit).
    :ivar key: what hashing selectors hash.
    """

    service_method: str
    argument: Any
    timeout: float | None
    key: str | None
    result_type: Any
    argument_type: Any

    def send(self, client: Client, timeout: float | None) -> Deferred[Any]:
        """Send it over ``client`` with ``timeout`` (what is left of the
        call's own)."""
        return client.call(
            self.service_method,
            self.argument,
            timeout=timeout,
            result_type=self.result_type,
            argument_type=self.argument_type,
        )


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
        discovery: IDiscovery,
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
        self._clock = clock
        self._selector: ISelector = selector or RandomSelect()
        self.mode = mode
        self._retries = retries
        self._backoff = backoff
        self._idempotent = set(idempotent)
        self._pool = ClientPool(
            dial, discovery.servers, clock, cooldown=cooldown, max_cooldown=max_cooldown
        )
        self._in_flight: Counter[str] = Counter()
        self._sleeping: set[Deferred[None]] = set()  # backoffs, cancelled by close()
        self._waiting_for_list: set[Deferred[None]] = set()  # likewise
        self.calls_sent: Counter[str] = Counter()
        """Calls sent to each server address (retries included), for monitoring."""
        self._unsubscribe = discovery.on_change(self._pool.keep)
        if ILoadAwareSelector.providedBy(self._selector):
            load_aware = cast(Any, self._selector)
            if load_aware.in_flight is None:
                load_aware.in_flight = self.in_flight

    def close(self) -> Deferred[None]:
        """Close every connection; calls still running or waiting fail with
        :class:`~txgeerpc.errors.ConnectionShutdown`.

        :returns: a Deferred firing with ``None`` once every connection is
            closed; it never fails.
        """
        self._unsubscribe()
        closing = self._pool.close()
        for waiting in [*self._sleeping, *self._waiting_for_list]:
            waiting.cancel()
        return closing

    def in_flight(self, address: str) -> int:
        """Calls of this XClient running on ``address`` now (what
        :class:`~txgeerpc.selection.PowerOfTwoChoices` compares)."""
        return self._in_flight[address]

    @property
    def connections(self) -> list[str]:
        """Addresses with a connection (or a dial) under way."""
        return self._pool.connections

    # -- calls -------------------------------------------------------------------

    def call(
        self,
        service_method: str,
        argument: Any = None,
        *,
        timeout: float | None = None,
        key: str | None = None,
        result_type: Any = None,
        argument_type: Any = None,
    ) -> Deferred[Any]:
        """Call one server chosen by the selector.

        Invalid arguments are programming errors and raise at once, as
        :meth:`txgeerpc.Client.call`'s do; everything that happens once the
        call is under way (on the network, in the discovery or the selector)
        fails the returned Deferred instead.

        :param timeout: seconds each attempt may take, waiting for its
            connection included (``None``: no limit).
        :param key: what hashing selectors
            (:class:`~txgeerpc.selection.ConsistentHash`) hash.
        :param result_type: as for :meth:`txgeerpc.Client.call`.
        :param argument_type: as for :meth:`txgeerpc.Client.call`.
        :raises ValueError: ``timeout`` is neither ``None`` nor positive.
        :returns: a Deferred that fires with the reply and can fail with:

            - :class:`~txgeerpc.errors.NoServers`: no server is known (within
              ``timeout``, if the discovery's first list is awaited);
            - :class:`~txgeerpc.errors.ConnectFailed`,
              :class:`~txgeerpc.errors.ConnectTimeout`: the last attempt could
              not connect;
            - :class:`~txgeerpc.errors.ConnectionShutdown`: the XClient was
              closed, before or during the call;
            - what the selector raised (``ConsistentHash`` without ``key``:
              :class:`ValueError`), or what the dial raised;
            - what the last attempt failed with otherwise (see
              :meth:`txgeerpc.Client.call`).
        """
        if timeout is not None and not timeout > 0:  # (NaN is not)
            raise ValueError(f"timeout must be positive or None, got {timeout!r}")
        # The fast path: a list, the chosen server's connection up.  No
        # coroutine, and the _Call is made only if the call leaves this path.
        pool = self._pool
        servers = self._discovery.servers()
        if not servers or pool.closed:
            return ensureDeferred(
                self._call(
                    _Call(service_method, argument, timeout, key, result_type, argument_type)
                )
            )
        try:
            address = (
                self._pick([], key, servers)
                if pool.cooling
                else self._selector.select(servers, key=key)
            )
        except Exception as error:
            return fail(error)
        client = pool.cached(address)
        if client is None:
            call = _Call(service_method, argument, timeout, key, result_type, argument_type)
            return ensureDeferred(self._call(call, first=address))
        d = client.call(
            service_method,
            argument,
            timeout=timeout,
            result_type=result_type,
            argument_type=argument_type,
        )
        self.calls_sent[address] += 1  # counted once Client.call has taken it
        self._in_flight[address] += 1
        d.addBoth(self._call_ended, address, client)
        if self.mode is not FailMode.FAIL_FAST:
            d.addErrback(
                self._retry,
                address,
                service_method,
                argument,
                timeout,
                key,
                result_type,
                argument_type,
            )
        return d

    def _retry(self, failure: Failure, address: str, *call: Any) -> Any:
        """The fast path's errback: on to the retry loop, as the ``_Call``
        made of ``call``, after its first attempt (to ``address``) failed."""
        if not isinstance(failure.value, GeeRPCError):
            return failure
        return ensureDeferred(self._call(_Call(*call), first=address, error=failure.value))

    def _send(
        self, client: Client, address: str, call: _Call, timeout: float | None
    ) -> Deferred[Any]:
        d = call.send(client, timeout)
        self.calls_sent[address] += 1
        self._in_flight[address] += 1
        return d.addBoth(self._call_ended, address, client)

    def _call_ended(self, result: Any, address: str, client: Client) -> Any:
        in_flight = self._in_flight
        in_flight[address] -= 1
        if not in_flight[address]:
            del in_flight[address]
        if client in self._pool.draining:
            self._pool.call_ended(client)
        return result

    async def _call(
        self, call: _Call, *, first: str | None = None, error: GeeRPCError | None = None
    ) -> Any:
        """The call's attempts from the first (to ``first``, already chosen;
        ``error``: how that attempt failed, if it was made)."""
        pool = self._pool
        timeout = attempt_timeout = call.timeout
        if first is None:
            if pool.closed:
                raise ConnectionShutdown()
            started = self._clock.seconds()
            await self._first_list(timeout)
            if timeout is not None:  # the wait for the list counts against the first attempt
                attempt_timeout = timeout - (self._clock.seconds() - started)
                if attempt_timeout <= 0:
                    raise NoServers()
            first = self._pick([], call.key)
        address = first
        tried: list[str] = []
        delay = self._backoff
        attempt = 0
        while True:
            if error is None:
                if pool.closed:
                    raise ConnectionShutdown()
                try:
                    return await self._attempt(address, call, attempt_timeout)
                except GeeRPCError as failed:
                    error = failed
                attempt_timeout = timeout
            if (
                self.mode is FailMode.FAIL_FAST
                or not self._retryable(call, error)
                or attempt >= self._retries
                or pool.closed
            ):
                raise error
            attempt += 1
            tried.append(address)
            self._log.info(
                "xclient: {method} on {address} failed ({error}); retry {attempt}",
                method=call.service_method,
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
                address = self._pick(tried, call.key)  # (fail-try too, once its server left)
            error = None

    def _retryable(self, call: _Call, error: GeeRPCError) -> bool:
        """Whether ``call`` may be sent again after ``error``: if it cannot
        have run, or may have run and its method is idempotent."""
        return isinstance(error, _NOT_SENT) or (
            isinstance(error, _MAYBE_RAN) and call.service_method in self._idempotent
        )

    async def _first_list(self, timeout: float | None) -> None:
        """Before the discovery's first list is known, wait for it (at most
        ``timeout``): a call made right after start-up finds its servers."""
        if self._discovery.servers():
            return
        shared: Deferred[None] = self._discovery.ready()
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
            if self._pool.closed:
                raise ConnectionShutdown() from None
            raise
        finally:
            self._waiting_for_list.discard(waiting)

    async def _sleep(self, delay: float) -> None:
        if self._pool.closed:
            raise ConnectionShutdown()
        sleeping = deferLater(self._clock, delay, lambda: None)
        self._sleeping.add(sleeping)
        try:
            await sleeping
        except CancelledError:
            if self._pool.closed:
                raise ConnectionShutdown() from None
            raise  # the caller cancelled the call
        finally:
            self._sleeping.discard(sleeping)

    def _pick(self, tried: list[str], key: str | None, servers: list[str] | None = None) -> str:
        """The selector's choice among the servers not tried yet and not
        cooling down (or, if none is left, among those not tried, or all)."""
        servers = self._discovery.servers() if servers is None else servers
        fresh = [server for server in servers if server not in tried]
        return self._selector.select(self._pool.warm(fresh) or fresh or servers, key=key)

    def broadcast(
        self,
        service_method: str,
        argument: Any = None,
        *,
        timeout: float | None = None,
        result_type: Any = None,
        argument_type: Any = None,
    ) -> Deferred[Any]:
        """Call every server.  Fires with one server's reply when all succeed;
        the first failure fails it and cancels the calls still running.

        Invalid arguments raise at once, as for :meth:`call`.

        :param timeout: bounds each server's call, connecting included.
        :param result_type: as for :meth:`txgeerpc.Client.call`.
        :param argument_type: as for :meth:`txgeerpc.Client.call`.
        :raises ValueError: ``timeout`` is neither ``None`` nor positive.
        :returns: a Deferred that fires with one server's reply and can fail
            with :class:`~txgeerpc.errors.NoServers` (no server is known),
            :class:`~txgeerpc.errors.ConnectionShutdown` (the XClient was
            closed) or the first failure of one server's call (see
            :meth:`txgeerpc.Client.call`).
        """
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive or None, got {timeout!r}")
        if self._pool.closed:
            return fail(ConnectionShutdown())
        call = _Call(service_method, argument, timeout, None, result_type, argument_type)
        if not self._discovery.servers():
            return ensureDeferred(self._first_list(timeout)).addCallback(
                lambda _: self._broadcast(call)
            )
        return self._broadcast(call)

    def _broadcast(self, call: _Call) -> Deferred[Any]:
        if self._pool.closed:
            return fail(ConnectionShutdown())
        servers = self._discovery.servers()
        if not servers:
            return fail(NoServers())
        calls = [ensureDeferred(self._attempt(address, call, call.timeout)) for address in servers]

        def cancel_all(_: Deferred[Any]) -> None:
            for each in calls:
                each.cancel()

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
                for each in calls:
                    each.cancel()  # really reaches the calls: their entries go

        for each in calls:
            each.addCallbacks(succeeded, failed)
        DeferredList(calls, consumeErrors=True)
        return outcome

    async def _attempt(self, address: str, call: _Call, timeout: float | None) -> Any:
        """One call to ``address``; ``timeout`` covers waiting for its connection."""
        waiting = self._pool.client(address)
        if timeout is None or waiting.called:
            client = await waiting
            left = timeout
        else:
            deadline = self._clock.seconds() + timeout
            client = await _within(waiting, deadline, self._clock, timeout)
            left = deadline - self._clock.seconds()
            if left <= 0:
                raise CallTimeout(call.service_method, timeout)
        return await self._send(client, address, call, left)


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
