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
retried.

Hedging (:class:`Hedge`, idempotent methods only): when a call has not
answered after a delay (fixed, or a percentile of the method's recent
latencies), one more copy goes to another server, up to ``max_extra``; the
first answer wins and the other copies are cancelled (which reaches their
servers).  Retries and hedges draw from a :class:`RetryBudget`, a token
bucket in the manner of gRPC's retry throttling: a call failing in a way
that could be retried costs a token, a success refills a fraction of one,
and retries and hedges stop while half the bucket or less is left.

Connections are dialled without holding up calls to other servers and closed
when their server leaves the list.

Bad arguments follow :meth:`txgeerpc.Client.call`'s rule: what the caller
got wrong (a timeout that is not positive) raises at once; everything that
happens later — on the network, in the discovery or the selector — fails the
returned Deferred.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any, cast

from attrs import define, field, frozen
from prometheus_client import CollectorRegistry
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    ensureDeferred,
    fail,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
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
from .metrics import xclient_metrics
from .selection import RandomSelect

__all__ = ["Dial", "FailMode", "Hedge", "RetryBudget", "XClient"]


class FailMode(enum.Enum):
    FAIL_FAST = "fail-fast"
    FAIL_OVER = "fail-over"
    FAIL_TRY = "fail-try"


# Failures after which the call certainly did not run on the server.
_NOT_SENT = (ConnectFailed, ConnectTimeout, InvalidAddress, ServerGoingAway)
# Failures after which it may have run.
_MAYBE_RAN = (CallTimeout, ConnectionShutdown, ServerShuttingDown)


def _positive(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


@frozen
class Hedge:
    """When to send extra copies of an idempotent call.

    :ivar after: seconds without an answer before the next copy goes
        (with ``percentile``: the delay used until the method has
        ``min_samples`` latencies recorded; neither: no hedge until then).
    :ivar percentile: hedge after this percentile (0 < p < 100) of the
        method's latest ``window`` hedged-call latencies.
    :ivar max_extra: extra copies at most (each to a server the call has not
        tried yet, while there is one).
    """

    after: float | None = field(default=None, validator=_positive)
    percentile: float | None = None
    max_extra: int = 1
    window: int = 128
    min_samples: int = 16

    def __attrs_post_init__(self) -> None:
        if self.after is None and self.percentile is None:
            raise ValueError("Hedge needs after= or percentile=")
        if self.percentile is not None and not 0 < self.percentile < 100:
            raise ValueError(f"percentile must be in (0, 100), got {self.percentile!r}")
        if self.max_extra < 1 or self.window < 1 or self.min_samples < 1:
            raise ValueError("max_extra, window and min_samples must be at least 1")

    def delay(self, latencies: deque[float] | None) -> float | None:
        """Seconds before the next copy, given the method's recent latencies
        (``None``: do not hedge)."""
        if self.percentile is None or latencies is None or len(latencies) < self.min_samples:
            return self.after
        ordered = sorted(latencies)
        return ordered[min(int(len(ordered) * self.percentile / 100), len(ordered) - 1)]


@define
class RetryBudget:
    """A token bucket for retries and hedges (gRPC's retry throttling).

    A call sent that may have run and failed (timed out, lost its
    connection, its server shutting down) costs one token; a success adds
    ``token_ratio``; retries of such calls, and hedges, are allowed only
    while more than half of ``max_tokens`` is left.  It starts full.  Calls
    that never reached a server neither cost nor are throttled.
    """

    max_tokens: float = 10.0
    token_ratio: float = 0.1
    tokens: float = field(init=False)

    def __attrs_post_init__(self) -> None:
        if not self.max_tokens > 0 or not self.token_ratio > 0:
            raise ValueError("max_tokens and token_ratio must be positive")
        self.tokens = self.max_tokens

    @property
    def allows(self) -> bool:
        """Whether a retry or a hedge may go now."""
        return self.tokens > self.max_tokens / 2

    def failed(self) -> None:
        self.tokens = max(self.tokens - 1, 0.0)

    def succeeded(self) -> None:
        self.tokens = min(self.tokens + self.token_ratio, self.max_tokens)


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
    :param metrics: keep a Prometheus registry of this XClient's counters
        (:attr:`metrics`: calls, retries, hedges, and per listed server
        attempts, failures, dial failures, cooldowns; see
        :class:`txgeerpc.metrics.XClientCollector`); or a
        ``CollectorRegistry`` to add them to (one XClient per registry);
        ``False``: none.  Nothing more is counted per call either way: the
        collector reads the counters when scraped.
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
        hedge: Hedge | None = None,
        retry_budget: RetryBudget | None = None,
        metrics: bool | CollectorRegistry = True,
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
        self.hedge = hedge
        self.retry_budget = retry_budget if retry_budget is not None else RetryBudget()
        self._latencies: dict[str, deque[float]] = {}  # hedged calls' latencies, by method
        self._hedge_timers: set[IDelayedCall] = set()  # cancelled by close()
        self.hedges_sent = 0
        self.hedges_won = 0
        self.hedges_cancelled = 0
        self.calls = 0
        """Calls made (each once, whatever its attempts), for monitoring."""
        self.broadcasts = 0
        self.retries = 0
        """Attempts sent again after one failed."""
        self.failures: Counter[str] = Counter()
        """Attempts on each server that failed without its reply (timed
        out, connection lost, going away or shutting down)."""
        self._unsubscribe = discovery.on_change(self._pool.keep)
        if ILoadAwareSelector.providedBy(self._selector):
            load_aware = cast(Any, self._selector)
            if load_aware.in_flight is None:
                load_aware.in_flight = self.in_flight
        self.metrics: CollectorRegistry | None = None
        """This XClient's Prometheus registry (:func:`txgeerpc.metrics.xclient_metrics`;
        ``None`` with ``metrics=False``)."""
        if metrics is not False:
            self.metrics = xclient_metrics(self, None if metrics is True else metrics)

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
        for timer in list(self._hedge_timers):
            timer.cancel()
        self._hedge_timers.clear()
        return closing

    def in_flight(self, address: str) -> int:
        """Calls of this XClient running on ``address`` now (what
        :class:`~txgeerpc.selection.PowerOfTwoChoices` compares)."""
        return self._in_flight[address]

    @property
    def connections(self) -> list[str]:
        """Addresses with a connection (or a dial) under way."""
        return self._pool.connections

    @property
    def servers(self) -> list[str]:
        """The servers the discovery lists now."""
        return list(self._discovery.servers())

    @property
    def cooling(self) -> list[str]:
        """Those of :attr:`servers` cooling down now (passed over while
        others are up)."""
        servers = self.servers
        warm = set(self._pool.warm(servers))
        return [server for server in servers if server not in warm]

    @property
    def dial_failures(self) -> Counter[str]:
        """Dials to each address that failed."""
        return self._pool.dial_failures

    @property
    def cooldowns(self) -> Counter[str]:
        """Cooldowns each address began (after a failed dial or a go-away)."""
        return self._pool.cooldowns

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
        hedge: Hedge | None = None,
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
        :param hedge: this call's :class:`Hedge` (default: the XClient's);
            used only if the method is declared idempotent.
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
        self.calls += 1
        if (hedge is not None or self.hedge is not None) and service_method in self._idempotent:
            return self._hedged(
                _Call(service_method, argument, timeout, key, result_type, argument_type),
                hedge or cast(Hedge, self.hedge),
            )
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

    def _hedged(self, call: _Call, hedge: Hedge) -> Deferred[Any]:
        """``call`` with extra copies after ``hedge``'s delay: the first
        copy goes through the retry loop, each extra one to a server not
        tried yet; the first answer wins and the other copies are cancelled;
        the call fails once every copy sent has failed and no more will go."""
        method = call.service_method
        servers = self._discovery.servers()
        delay = hedge.delay(self._latencies.get(method))
        if not servers or self._pool.closed or delay is None:
            return self._timed(ensureDeferred(self._call(call)), method, hedge)
        try:
            first = self._pick([], call.key, servers)
        except Exception as error:
            return fail(error)
        tried = [first]
        copies: list[Deferred[Any]] = []
        sent: list[float] = []  # when each copy went
        timer: list[IDelayedCall] = []

        def stop_timer() -> None:
            for each in timer:
                if each.active():
                    each.cancel()
                self._hedge_timers.discard(each)
            timer.clear()

        def cancel_all(_: Deferred[Any]) -> None:
            stop_timer()
            for each in copies:
                each.cancel()

        outcome: Deferred[Any] = Deferred(cancel_all)

        won: list[Deferred[Any]] = []  # the copy that answered

        def answered(reply: Any, copy: Deferred[Any]) -> None:
            if outcome.called or won:
                return
            won.append(copy)
            stop_timer()
            # The winner's own latency: what the method takes, hedge delay aside.
            self._record(method, hedge, self._clock.seconds() - sent[copies.index(copy)])
            if copy is not copies[0]:
                self.hedges_won += 1
            for each in copies:  # before the caller resumes
                if each is not copy and not each.called:
                    self.hedges_cancelled += 1
                    each.cancel()  # reaches its server
            outcome.callback(reply)

        def failed(failure: Failure, copy: Deferred[Any]) -> None:
            if outcome.called or won:
                return
            if all(each.called for each in copies):  # the last copy running
                stop_timer()
                outcome.errback(failure)

        def launch(d: Deferred[Any]) -> None:
            copies.append(d)
            sent.append(self._clock.seconds())
            d.addCallbacks(answered, failed, callbackArgs=(d,), errbackArgs=(d,))

        def hedge_now() -> None:
            stop_timer()
            if outcome.called or self._pool.closed or not self.retry_budget.allows:
                return
            try:
                address = self._pick(tried, call.key)
            except Exception:
                return
            tried.append(address)
            self.hedges_sent += 1
            launch(ensureDeferred(self._attempt(address, call, call.timeout)))
            if len(copies) <= hedge.max_extra and not outcome.called:
                schedule()

        def schedule() -> None:
            later = self._clock.callLater(delay, hedge_now)
            timer.append(later)
            self._hedge_timers.add(later)

        schedule()
        launch(ensureDeferred(self._call(call, first=first)))
        return outcome

    def _timed(self, d: Deferred[Any], method: str, hedge: Hedge) -> Deferred[Any]:
        """``d``, its latency recorded for ``hedge``'s percentile on success."""
        if hedge.percentile is None:
            return d
        started = self._clock.seconds()

        def record(reply: Any) -> Any:
            self._record(method, hedge, self._clock.seconds() - started)
            return reply

        return d.addCallback(record)

    def _record(self, method: str, hedge: Hedge, latency: float) -> None:
        if hedge.percentile is None:
            return
        window = self._latencies.get(method)
        if window is None or window.maxlen != hedge.window:
            window = self._latencies[method] = deque(window or (), maxlen=hedge.window)
        window.append(latency)

    def _send(
        self, client: Client, address: str, call: _Call, timeout: float | None
    ) -> Deferred[Any]:
        d = call.send(client, timeout)
        self.calls_sent[address] += 1
        self._in_flight[address] += 1
        return d.addBoth(self._call_ended, address, client)

    def _call_ended(self, result: Any, address: str, client: Client) -> Any:
        if isinstance(result, Failure):
            if result.check(*_MAYBE_RAN):
                self.retry_budget.failed()
                self.failures[address] += 1
            elif result.check(*_NOT_SENT):
                self.failures[address] += 1
        else:
            budget = self.retry_budget
            if budget.tokens < budget.max_tokens:
                budget.succeeded()
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
                # A call that never reached a server costs its fleet nothing
                # (a dead or restarting server: cooldowns deal with it).
                or not (self.retry_budget.allows or isinstance(error, _NOT_SENT))
            ):
                raise error
            attempt += 1
            self.retries += 1
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
        self.broadcasts += 1
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
