"""
:class:`EtcdClient`: the :class:`~txgeerpc.interfaces.IEtcd` operations
against a real etcd (v3) cluster, through its JSON gateway (``POST
/v3/...``), with ``treq`` over a connection pool of its own (and the quiet
``Agent`` and body reader of :mod:`txgeerpc._http_client`).

Every request goes to one member; a member that cannot be reached, times
out or answers "unavailable" (no leader, shutting down) is left for the next
one, and the member that answered is asked first next time.  A watch is one
long ``POST /v3/watch`` answer; when it ends for any reason but
:meth:`~txgeerpc.interfaces.IEtcdWatch.stop`, the watch resumes from its
last revision + 1 on the next member, so no change is missed or seen twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, fail
from twisted.internet.error import ConnectError, ConnectingCancelledError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from .._http_client import BodyReader, quiet_agent, read_body
from .._service import ERROR, MethodStats
from ..errors import EtcdAnswerTooLarge, EtcdCompacted, EtcdError, EtcdUnavailable
from ..interfaces import IEtcd, IEtcdWatch
from . import _gateway as gateway
from ._api import EventsListener, KeyValue, Range, WatchEvent

DEFAULT_REQUEST_TIMEOUT = 5.0
"""Seconds one request to one member may take (a watch: until it is set up)."""
DEFAULT_MAX_ANSWER = 16 * 1024 * 1024
"""Bytes one answer (or one watch message) may take at most."""
RECONNECT_DELAY = 0.5
MAX_RECONNECT_DELAY = 5.0
WATCH_PROBE = 10.0
"""Seconds a watch may be quiet before its member is asked whether it still
answers (a frozen or cut-off member keeps the connection open but sends
nothing); a member that does not answer is left for the next."""
_HEALTHY = 1.0  # seconds a watch must have lived to count as a good connection


@attrs.define
class EtcdStats:
    """What an :class:`EtcdClient` counts, for
    :class:`txgeerpc.metrics.EtcdCollector`.

    :ivar operations: per operation (the gateway path's last part:
        ``range``, ``put``, ``keepalive``...), its requests' latencies (fail-overs
        included) and failures (outcome ``error``).
    :ivar failovers: requests sent on to another member after one did not answer.
    :ivar watch_reconnections: watches resumed after theirs was lost.
    """

    operations: dict[str, MethodStats] = attrs.field(factory=dict)
    failovers: int = 0
    watch_reconnections: int = 0

    def record(self, path: str, seconds: float, failed: bool) -> None:
        """Note one request to ``path`` that took ``seconds``."""
        operation = path.rpartition("/")[2]
        stats = self.operations.get(operation)
        if stats is None:
            stats = self.operations[operation] = MethodStats()
        stats.calls += 1
        stats.record(seconds)
        if failed:
            stats.count(ERROR)


@attrs.frozen
class EtcdTLS:
    """How to reach ``https://`` endpoints: the CA that signed the members'
    certificates (None: the system's trust store), and a client certificate
    and its key (PEM files) for clusters that ask for one
    (``--client-cert-auth``)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def policy(self) -> IPolicyForHTTPS:
        return _TLSPolicy(self)


@implementer(IPolicyForHTTPS)
class _TLSPolicy:
    def __init__(self, tls: EtcdTLS) -> None:
        from twisted.internet import ssl

        self._trust: Any = None
        if tls.ca is not None:
            with open(tls.ca, "rb") as ca:
                self._trust = ssl.Certificate.loadPEM(ca.read())
        self._client: Any = None
        if tls.cert is not None:
            with open(tls.cert, "rb") as cert, open(tls.key or tls.cert, "rb") as key:
                self._client = ssl.PrivateCertificate.loadPEM(key.read() + b"\n" + cert.read())

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        from twisted.internet import ssl

        return ssl.optionsForClientTLS(
            hostname.decode("ascii"),
            trustRoot=self._trust if self._trust is not None else ssl.platformTrust(),
            clientCertificate=self._client,
        )


def normalize_endpoints(endpoints: str | Sequence[str], *, tls: bool = False) -> list[str]:
    """``"URL[,URL...]"`` or a list, as base URLs: ``host:port`` gets
    ``http://`` (``https://`` with TLS), trailing slashes go.

    :raises ValueError: no endpoint, or one that is not http(s).
    """
    if isinstance(endpoints, str):
        endpoints = endpoints.split(",")
    found = []
    for endpoint in endpoints:
        endpoint = endpoint.strip().rstrip("/")
        if not endpoint:
            continue
        if "://" not in endpoint:
            endpoint = ("https://" if tls else "http://") + endpoint
        scheme = endpoint.partition("://")[0]
        if scheme not in ("http", "https"):
            raise ValueError(f"etcd endpoint {endpoint!r}: expected http:// or https://")
        found.append(endpoint)
    if not found:
        raise ValueError("no etcd endpoint given")
    return found


class _Unreachable(Exception):
    """This member did not answer (or answered "unavailable"): try another.

    :ivar sent: whether the request may have been applied (it reached the
        member, and no answer says otherwise).
    """

    def __init__(self, reason: str, *, sent: bool) -> None:
        super().__init__(reason)
        self.sent = sent


@implementer(IEtcd)
class EtcdClient:
    """An etcd v3 cluster, through the JSON gateway of its members.

    :param reactor: for connections and time (requests time out on it).
    :param endpoints: the members' client URLs (``http://127.0.0.1:2379``),
        a list or comma-separated.
    :param request_timeout: seconds one member gets to answer one request.
    :param username: with ``password``: etcd auth credentials; the token
        they get is renewed when etcd no longer takes it.
    :param tls: certificates for ``https://`` endpoints.
    :param max_answer: bytes an answer may take at most.
    :param reconnect_delay: seconds a watch waits before resuming once every
        member failed in a row (doubling, up to ``max_reconnect_delay``).
    :param watch_probe: seconds a watch may be quiet before its member is
        checked (0: never).

    Every Deferred fails with :class:`~txgeerpc.errors.EtcdUnavailable` when
    no member answered, or :class:`~txgeerpc.errors.EtcdError` when one
    refused.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        endpoints: str | Sequence[str],
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        username: str | None = None,
        password: str | None = None,
        tls: EtcdTLS | None = None,
        max_answer: int = DEFAULT_MAX_ANSWER,
        reconnect_delay: float = RECONNECT_DELAY,
        max_reconnect_delay: float = MAX_RECONNECT_DELAY,
        watch_probe: float = WATCH_PROBE,
    ) -> None:
        self.endpoints = normalize_endpoints(endpoints, tls=tls is not None)
        if (username is None) != (password is None):
            raise ValueError("etcd auth needs both a username and a password")
        self._clock: IReactorTime = reactor
        self.request_timeout = request_timeout
        self._credentials = (username, password) if username is not None else None
        self._token: str | None = None
        self._logging_in: Deferred[str] | None = None
        self._login_waiters: list[Deferred[str]] = []
        self._max_answer = max_answer
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.watch_probe = watch_probe
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        # Fail-over decides what is sent again (see _request), not the pool.
        self._pool.retryAutomatically = False
        agent = quiet_agent(  # no "Starting factory" log per connection
            reactor,
            pool=self._pool,
            connect_timeout=request_timeout,
            tls=tls.policy() if tls is not None else None,
        )
        self._http = HTTPClient(agent)
        self._preferred = 0
        self._running: set[Deferred[Any]] = set()
        self._watches: set[_PrefixWatch] = set()
        self._closed = False
        self.stats = EtcdStats()
        """Request latencies, failures and fail-overs (for :mod:`txgeerpc.metrics`)."""

    # -- the operations ----------------------------------------------------

    def put(self, key: bytes, value: bytes, *, lease: int = 0) -> Deferred[int]:
        return self._call("/v3/kv/put", gateway.put_request(key, value, lease), gateway.revision)

    def get(self, key: bytes) -> Deferred[KeyValue | None]:
        def first(answer: dict[str, Any]) -> KeyValue | None:
            kvs = gateway.range_answer(answer).kvs
            return kvs[0] if kvs else None

        return self._call("/v3/kv/range", gateway.range_request(key), first)

    def get_prefix(self, prefix: bytes) -> Deferred[Range]:
        return self._call(
            "/v3/kv/range", gateway.range_request(prefix, prefix=True), gateway.range_answer
        )

    def count_prefix(self, prefix: bytes) -> Deferred[int]:
        return self._call(
            "/v3/kv/range",
            gateway.range_request(prefix, prefix=True, count_only=True),
            lambda answer: gateway.number(answer, "count"),
        )

    def delete(self, key: bytes) -> Deferred[int]:
        return self._call(
            "/v3/kv/deleterange",
            gateway.range_request(key),
            lambda answer: gateway.number(answer, "deleted"),
        )

    def grant(self, ttl: int) -> Deferred[int]:
        """See :meth:`txgeerpc.interfaces.IEtcd.grant`.

        :raises ValueError: ``ttl`` is less than 1.
        """
        if ttl < 1:
            raise ValueError(f"a lease lasts 1 second or more, not {ttl}")
        return self._call(
            "/v3/lease/grant",
            {"TTL": ttl},
            lambda answer: gateway.number(answer, "ID"),
            idempotent=False,  # granted twice, one lease would sit unused for its TTL
        )

    def keep_alive(self, lease: int) -> Deferred[int]:
        # A stream of one answer; a lease that is gone comes back without a TTL.
        return self._call(
            "/v3/lease/keepalive",
            {"ID": str(lease)},
            lambda answer: max(gateway.number(answer.get("result") or {}, "TTL"), 0),
        )

    def revoke(self, lease: int) -> Deferred[bool]:
        def gone(failure: Failure) -> bool:
            failure.trap(EtcdError)
            if failure.value.code != gateway.NOT_FOUND:  # type: ignore[union-attr]
                failure.raiseException()
            return False

        d = self._call("/v3/lease/revoke", {"ID": str(lease)}, lambda answer: True)
        return d.addErrback(gone)

    def create(self, key: bytes, value: bytes, *, lease: int = 0) -> Deferred[KeyValue | None]:
        return self._call(
            "/v3/kv/txn",
            gateway.create_request(key, value, lease),
            gateway.create_answer,
            idempotent=False,  # applied twice, the second answers "exists"
        )

    def watch_prefix(
        self, prefix: bytes, start_revision: int, listener: EventsListener
    ) -> _PrefixWatch:
        """See :meth:`txgeerpc.interfaces.IEtcd.watch_prefix`.  After :meth:`close`,
        the watch's ``done`` has failed with :class:`EtcdError`.

        :raises ValueError: ``start_revision`` is less than 1.
        """
        if start_revision < 1:
            raise ValueError(f"a watch starts at revision 1 or later, not {start_revision}")
        watch = _PrefixWatch(self, prefix, start_revision, listener)
        if self._closed:
            watch._finish(EtcdError("client closed"))
            return watch
        self._watches.add(watch)
        watch.done.addBoth(self._forget_watch, watch)
        watch.start()
        return watch

    def _forget_watch(self, result: Any, watch: _PrefixWatch) -> Any:
        self._watches.discard(watch)
        return result

    def close(self) -> Deferred[None]:
        """Stop every watch and cancel every request (their Deferreds fail
        with ``CancelledError``); the Deferred fires once the idle pooled
        connections are closed (the aborted ones close on the next reactor
        turns).  Nothing works after it."""
        self._closed = True
        for watch in list(self._watches):
            watch.stop()
        for running in list(self._running):
            running.cancel()
        if self._logging_in is not None:
            self._logging_in.cancel()
        closed: Deferred[None] = self._pool.closeCachedConnections()
        return closed

    # -- requests, with fail-over --------------------------------------------

    def _call(
        self,
        path: str,
        body: dict[str, Any],
        read: Callable[[dict[str, Any]], Any],
        *,
        idempotent: bool = True,
    ) -> Deferred[Any]:
        """``read(answer)`` of the first member that answers.  A request
        that is not ``idempotent`` goes to another member only when it was
        certainly not applied (no connection, or "no leader")."""
        if self._closed:
            return fail(EtcdError("client closed"))
        request = _Request()
        started = self._clock.seconds()
        # Cancelling stops the member being asked (and any fail-over); the
        # work's own outcome then only needs consuming.
        result: Deferred[Any] = Deferred(lambda _: self._cancel(request))
        self._running.add(result)

        def finished(outcome: Any) -> None:
            self._running.discard(result)
            failed = isinstance(outcome, Failure)
            if not (failed and outcome.check(CancelledError)):
                self.stats.record(path, self._clock.seconds() - started, failed)
            if result.called:
                return
            if isinstance(outcome, Failure):
                result.errback(outcome)
                return
            try:
                value = read(outcome)
            except EtcdError:
                result.errback()
            except Exception as error:  # a field that is not what etcd sends
                result.errback(EtcdError(f"unexpected answer ({error!r}): {outcome!r:.300}"))
            else:
                result.callback(value)

        ensureDeferred(self._request(path, body, request, idempotent)).addBoth(finished)
        return result

    def _cancel(self, request: _Request) -> None:
        # A caller that gave up waiting (its own deadline, shorter than ours)
        # had no answer from this member: the next request starts at the next.
        if request.attempt is not None and request.index == self._preferred and not self._closed:
            self._preferred = (request.index + 1) % len(self.endpoints)
        request.cancel()

    def _order(self) -> list[tuple[int, str]]:
        """Every endpoint once, the one that last answered first (as of now:
        other requests may change that meanwhile)."""
        count, start = len(self.endpoints), self._preferred
        return [
            ((start + step) % count, self.endpoints[(start + step) % count])
            for step in range(count)
        ]

    async def _request(
        self, path: str, body: dict[str, Any], request: _Request, idempotent: bool
    ) -> dict[str, Any]:
        reasons: dict[str, str] = {}
        for index, endpoint in self._order():
            if reasons:  # the previous member did not answer: on to this one
                self.stats.failovers += 1
            request.index = index
            try:
                answer = await self._ask(endpoint, path, body, request)
            except _Unreachable as reason:
                reasons[endpoint] = str(reason)
                if reason.sent and not idempotent:
                    reasons[endpoint] += " (it may have been applied: not sent to another member)"
                    # The caller's retry is a new request: it starts at the next.
                    self._preferred = (index + 1) % len(self.endpoints)
                    break
                continue
            if reasons and index != self._preferred:
                self._log.warn(
                    "etcd: {failed} did not answer ({reasons}); now using {endpoint}",
                    failed=", ".join(reasons),
                    reasons="; ".join(reasons.values()),
                    endpoint=endpoint,
                )
            self._preferred = index
            return answer
        raise EtcdUnavailable(reasons)

    async def _ask(
        self, endpoint: str, path: str, body: dict[str, Any], request: _Request
    ) -> dict[str, Any]:
        """One member's answer; an auth token it no longer takes is renewed once."""
        for attempt in (1, 2):
            try:
                exchange = self._exchange(endpoint, path, body, request)
                answer: dict[str, Any] = await self._timed(exchange, request)
                return answer
            except EtcdError as error:
                self._check_answer(error, request, retry=attempt == 1)
        raise AssertionError("unreachable")

    def _check_answer(self, error: EtcdError, request: _Request, *, retry: bool) -> None:
        """Return to try again with a new token; raise what the error means."""
        if error.code in (gateway.UNAVAILABLE, gateway.DEADLINE_EXCEEDED):
            raise _Unreachable(error.message, sent=error.message not in gateway.NOT_APPLIED)
        if error.code == gateway.UNAUTHENTICATED and self._credentials and retry:
            self._forget_token(request.token)
            return
        raise error

    async def _timed(self, exchange: Any, request: _Request | None = None) -> Any:
        """``exchange`` within the request timeout; a member that cannot be
        used is :class:`_Unreachable`, a cancelled request ``CancelledError``."""
        if request is not None:
            request.sent = False  # until the exchange sends it (it starts right now)
        d = ensureDeferred(exchange)
        timeout = self.request_timeout

        def timed_out(*_: Any) -> Failure:
            sent = request is None or request.sent  # not sent: still connecting, or logging in
            return Failure(_Unreachable(f"no answer within {timeout:g}s", sent=sent))

        d.addTimeout(timeout, self._clock, timed_out)
        if request is not None:
            request.attempt = d
        try:
            return await d
        except (EtcdError, _Unreachable, CancelledError):
            if request is not None and request.cancelled:
                raise CancelledError() from None
            raise
        except Exception as error:  # refused, reset, unresolvable...: the transport's own
            if (request is not None and request.cancelled) or self._closed:
                raise CancelledError() from None
            sent = (request is None or request.sent) and not isinstance(
                error, ConnectError | ConnectingCancelledError
            )
            raise _Unreachable(_describe(error), sent=sent) from None
        finally:
            if request is not None:
                request.attempt = None

    async def _headers(self, endpoint: str, request: _Request) -> dict[bytes, list[bytes]]:
        headers = {b"Content-Type": [b"application/json"]}
        if self._credentials is not None:
            token = self._token if self._token is not None else await self._login(endpoint)
            request.token = token
            headers[b"Authorization"] = [token.encode("ascii")]
        return headers

    def _forget_token(self, sent: str | None) -> None:
        """Drop the token a member refused, unless it was renewed since."""
        if sent is not None and self._token == sent:
            self._token = None

    def _login(self, endpoint: str) -> Deferred[str]:
        """A new auth token: one login at a time, whoever needs it.  The
        login belongs to no request: cancelling one request cancels only its
        own wait."""
        if self._logging_in is None:
            login = ensureDeferred(self._authenticate(endpoint))
            login.addTimeout(self.request_timeout, self._clock)
            self._logging_in = login
            login.addBoth(self._logged_in)
        waiter: Deferred[str] = Deferred()
        self._login_waiters.append(waiter)
        return waiter

    def _logged_in(self, result: Any) -> None:
        self._logging_in = None
        waiters, self._login_waiters = self._login_waiters, []
        if not isinstance(result, Failure):
            self._token = result
        elif not result.check(EtcdError):
            # Not the credentials refused: the member did not answer.
            reason = _describe(result.value)
            result = Failure(_Unreachable(f"login: {reason}", sent=False))
        for waiter in waiters:
            if not waiter.called:  # else cancelled
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)

    async def _authenticate(self, endpoint: str) -> str:
        assert self._credentials is not None
        name, password = self._credentials
        answer = await self._post(
            endpoint, "/v3/auth/authenticate", {"name": name, "password": password}, {}
        )
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise EtcdError("authentication answered no token", endpoint=endpoint)
        return token

    async def _exchange(
        self, endpoint: str, path: str, body: dict[str, Any], request: _Request
    ) -> dict[str, Any]:
        headers = await self._headers(endpoint, request)
        request.sent = True
        return await self._post(endpoint, path, body, headers)

    async def _post(
        self,
        endpoint: str,
        path: str,
        body: dict[str, Any],
        headers: dict[bytes, list[bytes]],
    ) -> dict[str, Any]:
        if self._closed:
            raise CancelledError()
        response = await self._http.post(
            endpoint + path,
            data=json.dumps(body).encode(),
            headers=Headers({b"Content-Type": [b"application/json"], **headers}),
            unbuffered=True,  # read once, by _read: no copy kept by treq
        )
        data = await self._read(response, endpoint)
        try:
            answer = gateway.load(data, endpoint)
        except EtcdError:  # not etcd's gateway (a proxy, another server): try another
            text = f"HTTP {response.code}, not JSON: {data[:100]!r}"
            raise _Unreachable(text, sent=True) from None
        error = gateway.error_of(answer, endpoint)
        if error is None and isinstance(answer.get("result"), dict):
            error = gateway.error_of(answer["result"], endpoint)
        if error is not None:
            raise error
        if response.code != 200:
            raise EtcdError(f"HTTP {response.code}", endpoint=endpoint)
        result: dict[str, Any] = answer
        return result

    def _read(self, response: Any, endpoint: str) -> Deferred[bytes]:
        """A whole (short) answer body, at most ``max_answer`` bytes."""
        limit = self._max_answer
        return read_body(response, limit, lambda: EtcdAnswerTooLarge(limit, endpoint=endpoint))

    async def _open_stream(
        self, endpoint: str, path: str, body: dict[str, Any], request: _Request
    ) -> Any:
        """A streamed answer, once its status is known to be 200."""

        async def open_() -> Any:
            headers = await self._headers(endpoint, request)
            # A member that loses its leader ends the stream, rather than
            # serving a stale view of the cluster.
            headers[b"Grpc-Metadata-Hasleader"] = [b"true"]
            if self._closed:
                raise CancelledError()
            request.sent = True
            response = await self._http.post(
                endpoint + path,
                data=json.dumps(body).encode(),
                headers=Headers(headers),
                # treq would otherwise keep a copy of every message for as
                # long as the watch lasts.
                unbuffered=True,
            )
            if response.code != 200:
                data = await self._read(response, endpoint)
                error = gateway.error_of(gateway.load(data, endpoint), endpoint)
                raise error or EtcdError(f"HTTP {response.code}", endpoint=endpoint)
            return response

        for attempt in (1, 2):
            try:
                return await self._timed(open_(), request)
            except EtcdError as error:
                self._check_answer(error, request, retry=attempt == 1)
        raise AssertionError("unreachable")


class _Request:
    """One request's state across the members it is sent to."""

    def __init__(self) -> None:
        self.cancelled = False
        self.attempt: Deferred[Any] | None = None
        """The exchange with the member being asked."""
        self.token: str | None = None
        """The auth token it was last sent with."""
        self.index = 0
        """The endpoint being asked."""
        self.sent = False
        """Whether the request itself went out to it (not only a login)."""

    def cancel(self) -> None:
        self.cancelled = True
        if self.attempt is not None:
            self.attempt.cancel()


def _describe(error: BaseException | None) -> str:
    reasons = getattr(error, "reasons", None)  # ResponseFailed & co. wrap Failures
    if reasons:
        return "; ".join(_describe(reason.value) for reason in reasons)
    return str(error) or type(error).__name__


@implementer(IEtcdWatch)
class _PrefixWatch:
    """One prefix watch of an :class:`EtcdClient` (see
    :meth:`~txgeerpc.interfaces.IEtcd.watch_prefix`)."""

    _log = Logger()

    def __init__(
        self, client: EtcdClient, prefix: bytes, start_revision: int, listener: EventsListener
    ) -> None:
        self._client = client
        self.prefix = prefix
        self.revision = start_revision - 1
        self._listener = listener
        self.done: Deferred[None] = Deferred()
        self.endpoint: str | None = None
        """The member the watch is connected to (None between connections)."""
        self._index = client._preferred
        self._failures = 0
        self._request: _Request | None = None
        """The connection being opened (cancelling it cancels the opening)."""
        self._token: str | None = None  # the auth token the stream was opened with
        self._body: BodyReader | None = None
        self._stream: gateway.MessageStream | None = None
        self._retry: IDelayedCall | None = None
        self._healthy_since: float | None = None
        self._probe: IDelayedCall | None = None
        self._probing: Deferred[Any] | None = None
        self._stopped = False
        self.reconnections = 0
        """How many times the watch resumed on a new connection."""

    def start(self) -> None:
        self._connect()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._close_connection()
        if not self.done.called:
            self.done.callback(None)

    def _close_connection(self) -> None:
        self._stop_probing()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        request, self._request = self._request, None
        if request is not None:
            request.cancel()
        body, self._body = self._body, None
        if body is not None:
            body.abort()
        self.endpoint = None

    def _connect(self) -> None:
        self._retry = None
        client = self._client
        endpoint = client.endpoints[self._index % len(client.endpoints)]
        body = gateway.watch_request(self.prefix, self.revision + 1)
        self._request = request = _Request()
        opening = ensureDeferred(client._open_stream(endpoint, "/v3/watch", body, request))
        opening.addCallbacks(self._opened, self._lost, callbackArgs=(endpoint,))
        opening.addErrback(self._broken)

    def _broken(self, failure: Failure) -> None:
        self._log.failure("etcd: the watch of {prefix!r} broke", failure, prefix=self.prefix)

    def _opened(self, response: Any, endpoint: str) -> None:
        if self._request is not None:
            self._token = self._request.token
        self._request = None
        self.endpoint = endpoint
        self._stop_probing()
        self._stream = gateway.MessageStream(endpoint, self._client._max_answer)
        body = BodyReader(self._received, lambda reason: self._ended(body, reason))
        self._body = body
        response.deliverBody(body)
        if self._body is body and not self._stopped:
            self._quiet_from_now()

    def _received(self, data: bytes) -> None:
        assert self._stream is not None
        self._quiet_from_now()
        try:
            messages = self._stream.feed(data)
        except EtcdAnswerTooLarge as error:
            # Resuming would only get the same message again.
            self._finish(error)
            return
        except EtcdError as error:
            self._drop(str(error))
            return
        for message in messages:
            if self._stopped or self._body is None:
                return
            self._message(message)

    def _message(self, message: Any) -> None:
        error = gateway.error_of(message, self.endpoint or "")
        if error is not None:
            self._drop(str(error))
            return
        result = message.get("result") or {}
        if result.get("canceled"):
            compacted = gateway.number(result, "compact_revision")
            reason = str(result.get("cancel_reason") or "no reason given")
            if compacted:
                self._finish(EtcdCompacted(compacted, endpoint=self.endpoint or ""))
                return
            if "auth" in reason.lower() or "token" in reason.lower():
                self._client._forget_token(self._token)  # a new one at the next connection
            self._drop(f"watch canceled: {reason}")
            return
        if result.get("created"):
            self._healthy_since = self._client._clock.seconds()
            if self.reconnections:
                self._log.info(
                    "etcd: watch of {prefix!r} resumed on {endpoint} from revision {revision}",
                    prefix=self.prefix,
                    endpoint=self.endpoint,
                    revision=self.revision + 1,
                )
        events = [
            event for event in gateway.watch_events(result) if event.kv.mod_revision > self.revision
        ]
        if events:
            self.revision = max(event.kv.mod_revision for event in events)
            self._tell(events)

    def _quiet_from_now(self) -> None:
        """(Re)start the quiet period after which the member is checked."""
        if self._client.watch_probe <= 0 or self._probing is not None:
            return
        if self._probe is not None and self._probe.active():
            self._probe.reset(self._client.watch_probe)
        else:
            self._probe = self._client._clock.callLater(self._client.watch_probe, self._check)

    def _stop_probing(self) -> None:
        if self._probe is not None and self._probe.active():
            self._probe.cancel()
        self._probe = None
        probing, self._probing = self._probing, None
        if probing is not None:
            probing.cancel()

    def _check(self) -> None:
        self._probe = None
        endpoint = self.endpoint
        if endpoint is None:
            return
        client = self._client

        async def ask() -> None:
            await client._post(endpoint, "/v3/maintenance/status", {}, {})  # needs no auth

        probing = ensureDeferred(client._timed(ask()))
        self._probing = probing

        def answered(_: Any) -> None:
            self._probing = None
            self._quiet_from_now()

        def silent(reason: Failure) -> None:
            if self._probing is not probing:
                return  # cancelled: the connection is gone anyway
            self._probing = None
            self._drop(f"the member did not answer a check: {_describe(reason.value)}")

        probing.addCallbacks(answered, silent)

    def _finish(self, error: EtcdError) -> None:
        """The watch cannot go on: ``done`` fails with ``error``."""
        self._stopped = True
        self._close_connection()
        if not self.done.called:
            self.done.errback(error)

    def _tell(self, events: list[WatchEvent]) -> None:
        try:
            self._listener(events, self.revision)
        except Exception:
            self._log.failure("etcd: a watch listener failed")

    def _drop(self, reason: str) -> None:
        """End this connection and resume on the next member."""
        self._close_connection()
        self._lost(Failure(_Unreachable(reason, sent=True)))

    def _ended(self, body: BodyReader, reason: Failure | None) -> None:
        if body is not self._body:
            return  # one we dropped
        self._body = None
        self._lost(reason or Failure(_Unreachable("the member ended the watch", sent=True)))

    def _lost(self, reason: Failure) -> None:
        self._request = None
        self._stop_probing()  # a check of the member just lost must not drop the next one
        client = self._client
        endpoint = self.endpoint or client.endpoints[self._index % len(client.endpoints)]
        self.endpoint = None
        if self._stopped:
            return
        if reason.check(CancelledError):
            return
        now = self._client._clock.seconds()
        if self._healthy_since is not None and now - self._healthy_since >= _HEALTHY:
            self._failures = 0
        self._healthy_since = None
        self._failures += 1
        self._index += 1
        self.reconnections += 1
        client.stats.watch_reconnections += 1
        # Every other member at once; once each has failed in a row, back off.
        behind = self._failures - len(self._client.endpoints)
        delay = 0.0
        if behind >= 0:
            delay = min(self._client.reconnect_delay * 2**behind, self._client.max_reconnect_delay)
        self._log.warn(
            "etcd: watch of {prefix!r} on {endpoint} lost ({reason}); resuming from revision "
            "{revision} in {delay:g}s",
            prefix=self.prefix,
            endpoint=endpoint,
            reason=_describe(reason.value),
            revision=self.revision + 1,
            delay=delay,
        )
        # callLater: the delay varies per reconnection (0, then doubling).
        self._retry = self._client._clock.callLater(delay, self._connect)


__all__ = ["EtcdClient", "EtcdTLS", "normalize_endpoints"]
