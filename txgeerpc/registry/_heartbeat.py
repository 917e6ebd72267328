"""
Heartbeats from a server to a GeeRPC registry: ``POST`` with
``X-Geerpc-Server: proto@addr``, as Go servers send them, done the way the
reference should have (docs/protocol.md defects 32, 33 and 35):

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

from collections.abc import Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..interfaces import IRegistration
from ._ring import FailoverRing
from ._wire import SERVER_HEADER, TIMEOUT_HEADER, Answer, Request, fails_over, refusal

DEFAULT_PERIOD = 60.0
MAX_PERIOD = 240.0  # the reference's default: never beat less often
MIN_PERIOD = 0.5
"""Seconds between beats at least, whatever the registry announces."""
FIRST_RETRY = 1.0


@implementer(IRegistration)
class Heartbeat(Service):
    """Keeps ``advertise`` registered at ``registry_url``.

    :param request: how to make HTTP requests (:func:`agent_request` in
        production, a fake in tests).
    :param registry_url: the registry's URL, or several registries' (that
        share one list): beats go to the one that answered last and move on
        to the next when it fails (see :func:`fails_over`).
    :param advertise: the ``proto@addr`` to register; may be changed until
        the service starts (see :class:`~txgeerpc.interfaces.IRegistration`).
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
        self._ring = FailoverRing(registry_url)
        self.registry_urls = self._ring.urls
        self.advertise = advertise
        self._period = period
        self.period = period if period is not None else DEFAULT_PERIOD
        self._request_timeout = request_timeout
        self._next: IDelayedCall | None = None
        self._retry = self._first_retry()
        self._beating: Deferred[Any] | None = None
        self.beats = 0
        self.failures = 0
        """Failed beats in a row (0 once one is answered)."""
        self.failures_total = 0
        """Failed beats since the heartbeat was made."""
        self._warned_period = False
        self._warned_floor = False

    @property
    def counts(self) -> dict[str, int]:
        """``heartbeats`` (beats answered) and ``heartbeat_failures`` (beats
        that failed, each registry tried counting once): what
        :class:`txgeerpc.metrics.RegistrationCollector` exports."""
        return {"heartbeats": self.beats, "heartbeat_failures": self.failures_total}

    @property
    def registry_url(self) -> str:
        """The registry the next beat goes to (the one that answered last,
        unless it failed since)."""
        return self._ring.current

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
            self._failed(refusal(status, body), fail_over=fails_over(status))
            return
        if self.beats == 0 or self.failures:
            self._log.info(
                "heartbeat: {advertise} registered at {registry}",
                advertise=self.advertise,
                registry=self.registry_url,
            )
        self.beats += 1
        self.failures = 0
        self._ring.answered()
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
        self.failures_total += 1
        why = reason.getErrorMessage() if hasattr(reason, "getErrorMessage") else reason
        failed_at = self.registry_url
        count = len(self.registry_urls)
        if not fail_over:
            self._ring.new_round()
        elif self._ring.failed():  # another registry has not failed yet: at once
            self._log.warn(
                "heartbeat: {advertise} to {registry} failed ({why}); trying {next} now",
                advertise=self.advertise,
                registry=failed_at,
                why=why,
                next=self.registry_url,
            )
            self._beat()
            return
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
        # callLater, not a TimerService: the delay changes from one beat to
        # the next (the period follows the registry's TTL; failures back off).
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
        order = self._ring.from_answered()
        count = len(order)
        start = self._clock.seconds()
        for tried, url in enumerate(order):
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
                why = refusal(answer.status, answer.body)
                if not fails_over(answer.status):
                    break
            later = order[(tried + 1) % count]
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
