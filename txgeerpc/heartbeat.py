"""
Heartbeats from a server to a GeeRPC registry: ``POST`` with
``X-Geerpc-Server: proto@addr``, as Go servers send them, done the way the
reference should have (PROTOCOL.md defects 32, 33 and 35):

- the first beat at start, then one per period; the period is the caller's,
  else a third of the TTL the registry announces (``X-Geerpc-Timeout``, sent
  by txgeerpc registries), else 60 s; never less than :data:`MIN_PERIOD`
  (an announced TTL is not trusted to set a tight loop of requests);
- every request has a timeout, at most the period (a hung request must not
  outlive the entry it refreshes), and its status is checked;
- a failed beat is retried with backoff (1 s or half a period if less,
  doubling, up to the period), for ever: a registry that is down at start or
  restarts is re-joined, and a beat that hung for a whole period is retried
  before the entry expires (after 2.5 periods of the 3 a TTL lasts);
- on a clean stop the entry is deregistered (``DELETE``; Go registries answer
  405 and simply let it expire);
- given several registries (processes sharing one list, as registries on etcd
  do), beats go to the one that answered last; one that fails (no answer, a
  timeout, a 5xx) is passed over for the next at once, and the backoff only
  starts when every one of them has failed in a row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .errors import RegistryAnswerTooLarge, RegistryTimeout
from .registry import SERVER_HEADER, TIMEOUT_HEADER


class Answer(NamedTuple):
    """What a registry answered."""

    status: int
    headers: dict[bytes, bytes]
    """Response headers, names in lower case (the first value of each)."""
    body: bytes = b""


Request = Callable[[bytes, str, dict[bytes, bytes], float], "Deferred[Answer]"]
"""``(method, url, headers, timeout) -> Deferred[Answer]``."""

MAX_ANSWER_BODY = 8 * 1024 * 1024
"""Bytes of a registry's answer body :func:`agent_request` reads at most."""

DEFAULT_PERIOD = 60.0
MAX_PERIOD = 240.0  # the reference's default: never beat less often
MIN_PERIOD = 0.5
"""Seconds between beats at least, whatever the registry announces."""
FIRST_RETRY = 1.0


def agent_request(reactor: Any, *, max_body: int = MAX_ANSWER_BODY) -> Request:
    """A :data:`Request` made with ``twisted.web.client.Agent``.

    Its Deferred fails with :class:`~txgeerpc.errors.RegistryTimeout` after
    ``timeout`` seconds, :class:`~txgeerpc.errors.RegistryAnswerTooLarge` past
    ``max_body`` bytes of body, or the connection's own error (refused...).
    """
    from twisted.web.client import Agent
    from twisted.web.http_headers import Headers

    agent = Agent(reactor)

    def request(
        method: bytes, url: str, headers: dict[bytes, bytes], timeout: float
    ) -> Deferred[Answer]:
        async def go() -> Answer:
            response = await agent.request(
                method, url.encode(), Headers({name: [value] for name, value in headers.items()})
            )
            body = await _read_body(response, max_body, url)  # always read: it frees the connection
            found = {
                name.lower(): values[0] for name, values in response.headers.getAllRawHeaders()
            }
            return Answer(response.code, found, body)

        d = ensureDeferred(go())
        # Cancelled before the answer, Agent fails with ResponseNeverReceived
        # rather than CancelledError: whatever it is, it was the timeout.
        d.addTimeout(timeout, reactor, lambda *_: Failure(RegistryTimeout(url, timeout)))
        return d

    return request


def _read_body(response: Any, limit: int, url: str) -> Deferred[bytes]:
    """The body of ``response``, at most ``limit`` bytes; cancelling (or going
    over) drops the connection."""
    from twisted.internet.protocol import Protocol
    from twisted.web.client import ResponseDone
    from twisted.web.http import PotentialDataLoss

    class Collect(Protocol):
        def __init__(self) -> None:
            self.parts: list[bytes] = []
            self.size = 0

        def stop(self) -> None:
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]

        def dataReceived(self, data: bytes) -> None:
            if done.called:
                return
            self.size += len(data)
            if self.size > limit:
                done.errback(RegistryAnswerTooLarge(url, limit))
                self.stop()
                return
            self.parts.append(data)

        def connectionLost(self, reason: Any = None) -> None:
            if done.called:
                return
            if reason is None or reason.check(ResponseDone, PotentialDataLoss):
                done.callback(b"".join(self.parts))
            else:
                done.errback(reason)

    collect = Collect()
    done: Deferred[bytes] = Deferred(lambda _: collect.stop())
    response.deliverBody(collect)
    return done


def registry_urls(registry_url: str | Sequence[str]) -> tuple[str, ...]:
    """One registry URL or several, as a tuple.

    :raises ValueError: no URL at all.
    """
    urls = (registry_url,) if isinstance(registry_url, str) else tuple(registry_url)
    if not urls:
        raise ValueError("no registry URL given")
    return urls


def fails_over(status: int) -> bool:
    """Whether a registry that answered ``status`` to a heartbeat (or a
    refresh) should be passed over for another one: yes for 5xx (unavailable,
    full, a broken proxy) and the 4xx that are about that server (404 and 405:
    not a registry there; 408, 429); no for the other 4xx, which are about the
    request (a bad address), so any registry would answer the same."""
    return not 400 <= status < 500 or status in (404, 405, 408, 429)


class Heartbeat(Service):
    """Keeps ``advertise`` registered at ``registry_url``.

    :param request: how to make HTTP requests (:func:`agent_request` in
        production, a fake in tests).
    :param registry_url: the registry's URL, or several registries' (that
        share one list): beats go to the one that answered last and move on
        to the next when it fails (see :func:`fails_over`).
    :param period: seconds between beats, :data:`MIN_PERIOD` at least;
        ``None`` derives it from the TTL the registry announces.
    :param request_timeout: seconds each request may take at most (and at
        most one period).
    :raises ValueError: ``period`` is less than :data:`MIN_PERIOD`, or no
        registry URL is given.
    :ivar registry_urls: every registry, in the order given.
    :ivar registry_url: the registry the next beat goes to.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        request: Request,
        registry_url: str | Sequence[str],
        advertise: str,
        *,
        period: float | None = None,
        request_timeout: float = 10.0,
    ) -> None:
        if period is not None and not period >= MIN_PERIOD:
            raise ValueError(f"a heartbeat period is {MIN_PERIOD:g}s at least, got {period:g}s")
        self._clock = clock
        self._request = request
        self.registry_urls = registry_urls(registry_url)
        self._current = 0  # the registry beats go to
        self._answered_last = 0  # the registry that last took a beat
        self._failed_in_row = 0  # registries passed over since the last answer or backoff
        self.advertise = advertise
        self._period = period
        self.period = period if period is not None else DEFAULT_PERIOD
        self._request_timeout = request_timeout
        self._next: IDelayedCall | None = None
        self._retry = self._first_retry()
        self._beating: Deferred[Any] | None = None
        self.beats = 0
        self.failures = 0
        self._warned_period = False
        self._warned_floor = False

    @property
    def registry_url(self) -> str:
        """The registry the next beat goes to (the one that answered last,
        unless it failed since)."""
        return self.registry_urls[self._current]

    def startService(self) -> None:
        super().startService()
        self._beat()

    @property
    def request_timeout(self) -> float:
        """Seconds the next request may take: the configured request timeout,
        but no more than the period shared by the registries (a beat that
        fails over through every one of them still ends within a period)."""
        return min(self._request_timeout, self.period / len(self.registry_urls))

    def _beat(self) -> None:
        self._next = None
        d = self._request(
            b"POST",
            self.registry_url,
            {SERVER_HEADER: self.advertise.encode()},
            self.request_timeout,
        )
        self._beating = d
        d.addCallbacks(self._answered, self._failed)

    def _answered(self, result: Answer) -> None:
        self._beating = None
        status, headers, body = result
        if not 200 <= status < 300:
            self._failed(_refusal(status, body), fail_over=fails_over(status))
            return
        if self.beats == 0 or self.failures:
            self._log.info(
                "heartbeat: {advertise} registered at {registry}",
                advertise=self.advertise,
                registry=self.registry_url,
            )
        self.beats += 1
        self.failures = 0
        self._answered_last = self._current
        self._failed_in_row = 0
        announced = headers.get(TIMEOUT_HEADER.lower())
        try:
            ttl = float(announced) if announced else 0.0
        except ValueError:
            ttl = 0.0
        if self._period is None:
            self.period = min(ttl / 3, MAX_PERIOD) if ttl > 0 else DEFAULT_PERIOD
            if self.period < MIN_PERIOD:
                self.period = MIN_PERIOD
                self._warn_floor(ttl)
        elif 0 < ttl <= self._period and not self._warned_period:
            self._warned_period = True
            self._log.warn(
                "heartbeat: beating every {period}s to {registry}, which forgets servers "
                "after {ttl}s: {advertise} will drop out between beats (beat at most every "
                "{suggested}s)",
                period=f"{self._period:g}",
                registry=self.registry_url,
                ttl=f"{ttl:g}",
                advertise=self.advertise,
                suggested=f"{ttl / 3:g}",
            )
        self._retry = self._first_retry()
        self._schedule(self.period)

    def _first_retry(self) -> float:
        return min(FIRST_RETRY, self.period / 2)

    def _warn_floor(self, ttl: float) -> None:
        if self._warned_floor:
            return
        self._warned_floor = True
        self._log.warn(
            "heartbeat: {registry} forgets servers after {ttl}s; beating every {period}s "
            "(the shortest period, not a third of that){dropping}",
            registry=self.registry_url,
            ttl=f"{ttl:g}",
            period=f"{MIN_PERIOD:g}",
            dropping=f": {self.advertise} will drop out between beats" if ttl <= MIN_PERIOD else "",
        )

    def _failed(self, reason: Any, *, fail_over: bool = True) -> None:
        self._beating = None
        if not self.running:
            return
        self.failures += 1
        why = reason.getErrorMessage() if hasattr(reason, "getErrorMessage") else reason
        failed_at = self.registry_url
        count = len(self.registry_urls)
        if fail_over and count > 1:
            self._current = (self._current + 1) % count
            self._failed_in_row += 1
            if self._failed_in_row < count:  # another registry has not failed yet: at once
                self._log.warn(
                    "heartbeat: {advertise} to {registry} failed ({why}); trying {next} now",
                    advertise=self.advertise,
                    registry=failed_at,
                    why=why,
                    next=self.registry_url,
                )
                self._beat()
                return
        self._failed_in_row = 0
        delay = self._retry
        if fail_over and count > 1:
            self._log.warn(
                "heartbeat: {advertise} to {registry} failed ({why}), as to every other "
                "registry; retrying at {next} in {delay}s",
                advertise=self.advertise,
                registry=failed_at,
                why=why,
                next=self.registry_url,
                delay=delay,
            )
        else:
            self._log.warn(
                "heartbeat: {advertise} to {registry} failed ({why}); retrying in {delay}s",
                advertise=self.advertise,
                registry=failed_at,
                why=why,
                delay=delay,
            )
        self._retry = min(self._retry * 2, max(self.period, FIRST_RETRY))
        self._schedule(delay)

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._next = self._clock.callLater(delay, self._beat)

    def stopService(self) -> Deferred[None]:
        """Stop beating and deregister: from the registry that answered last,
        then (if it fails, see :func:`fails_over`) from the next ones, all
        within one :attr:`request_timeout`.

        :returns: a Deferred firing with ``None`` once deregistered or given
            up on (it never fails: the registry expires the entry anyway).
        """
        if not self.running:  # stopped already (deregistered once is enough)
            return succeed(None)
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        if self._beating is not None:
            self._beating.cancel()
        return ensureDeferred(self._deregister(self.request_timeout))

    async def _deregister(self, bound: float) -> None:
        count = len(self.registry_urls)
        start = self._clock.seconds()
        for tried in range(count):
            url = self.registry_urls[(self._answered_last + tried) % count]
            timeout = bound - (self._clock.seconds() - start)
            try:
                answer = await self._request(
                    b"DELETE", url, {SERVER_HEADER: self.advertise.encode()}, timeout
                )
            except CancelledError:  # the stop was cancelled: ask no one else
                why = "cancelled"
                break
            except Exception:
                why = Failure().getErrorMessage()
            else:
                if self._deregistered(answer, url):
                    return
                why = _refusal(answer.status, answer.body)
                if not fails_over(answer.status):
                    break
            later = self.registry_urls[(self._answered_last + tried + 1) % count]
            if tried + 1 == count or self._clock.seconds() - start >= bound:
                break
            self._log.warn(
                "heartbeat: could not deregister {advertise} from {registry}: {why}; trying {next}",
                advertise=self.advertise,
                registry=url,
                why=why,
                next=later,
            )
        self._not_deregistered(why, url)

    def _deregistered(self, answer: Answer, url: str) -> bool:
        """Log what ``url`` answered to the ``DELETE``, if it settles it.

        :returns: whether it does (otherwise it is a failure).
        """
        if 200 <= answer.status < 300:
            self._log.info(
                "heartbeat: {advertise} deregistered from {registry}",
                advertise=self.advertise,
                registry=url,
            )
        elif answer.status == 404:
            self._log.info(
                "heartbeat: {advertise} was not registered at {registry} (nothing to deregister)",
                advertise=self.advertise,
                registry=url,
            )
        elif answer.status == 405:
            self._log.info(
                "heartbeat: {registry} does not deregister (405, as Go registries answer); "
                "it will expire {advertise} after its TTL",
                advertise=self.advertise,
                registry=url,
            )
        else:
            return False
        return True

    def _not_deregistered(self, why: str, url: str) -> None:
        self._log.warn(
            "heartbeat: could not deregister {advertise} from {registry}: {why}; the "
            "registry will expire it after its TTL",
            advertise=self.advertise,
            registry=url,
            why=why,
        )


def _refusal(status: int, body: bytes) -> str:
    """What a registry's error answer says: its status and the first line of
    its body ("registry full: ..."), if any."""
    said = body.decode("utf-8", "replace").strip().split("\n", 1)[0][:200]
    return f"the registry answered {status}: {said}" if said else f"the registry answered {status}"
