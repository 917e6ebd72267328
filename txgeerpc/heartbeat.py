"""
Heartbeats from a server to a GeeRPC registry: ``POST`` with
``X-Geerpc-Server: proto@addr``, as Go servers send them, done the way the
reference should have (PROTOCOL.md defects 32, 33 and 35):

- the first beat at start, then one per period; the period is the caller's,
  else a third of the TTL the registry announces (``X-Geerpc-Timeout``, sent
  by txgeerpc registries), else 60 s;
- every request has a timeout and its status is checked;
- a failed beat is retried with backoff (1 s, doubling, up to the period),
  for ever: a registry that is down at start or restarts is re-joined;
- on a clean stop the entry is deregistered (``DELETE``; Go registries answer
  405 and simply let it expire).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from .registry import SERVER_HEADER, TIMEOUT_HEADER

Answer = tuple[int, dict[bytes, bytes]]
"""(status, response headers with lower-case names)."""
Request = Callable[[bytes, str, dict[bytes, bytes], float], "Deferred[Answer]"]
"""``(method, url, headers, timeout) -> Deferred[(status, response headers)]``."""

DEFAULT_PERIOD = 60.0
MAX_PERIOD = 240.0  # the reference's default: never beat less often
FIRST_RETRY = 1.0


def agent_request(reactor: Any) -> Request:
    """A :data:`Request` made with ``twisted.web.client.Agent``."""
    from twisted.web.client import Agent, readBody
    from twisted.web.http_headers import Headers

    agent = Agent(reactor)

    def request(
        method: bytes, url: str, headers: dict[bytes, bytes], timeout: float
    ) -> Deferred[Answer]:
        async def go() -> Answer:
            response = await agent.request(
                method, url.encode(), Headers({name: [value] for name, value in headers.items()})
            )
            await readBody(response)  # always read (and so release) the body
            found = {
                name.lower(): values[0] for name, values in response.headers.getAllRawHeaders()
            }
            return response.code, found

        d = ensureDeferred(go())
        d.addTimeout(timeout, reactor)
        return d

    return request


class Heartbeat(Service):
    """Keeps ``advertise`` registered at ``registry_url``.

    :param request: how to make HTTP requests (:func:`agent_request` in
        production, a fake in tests).
    :param period: seconds between beats; ``None`` derives it from the TTL.
    :param request_timeout: seconds each request may take.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        request: Request,
        registry_url: str,
        advertise: str,
        *,
        period: float | None = None,
        request_timeout: float = 10.0,
    ) -> None:
        self._clock = clock
        self._request = request
        self.registry_url = registry_url
        self.advertise = advertise
        self._period = period
        self.period = period if period is not None else DEFAULT_PERIOD
        self._request_timeout = request_timeout
        self._next: IDelayedCall | None = None
        self._retry = FIRST_RETRY
        self._beating: Deferred[Any] | None = None
        self.beats = 0
        self.failures = 0

    def startService(self) -> None:
        super().startService()
        self._beat()

    def _beat(self) -> None:
        self._next = None
        d = self._request(
            b"POST",
            self.registry_url,
            {SERVER_HEADER: self.advertise.encode()},
            self._request_timeout,
        )
        self._beating = d
        d.addCallbacks(self._answered, self._failed)

    def _answered(self, result: Answer) -> None:
        self._beating = None
        status, headers = result
        if not 200 <= status < 300:
            self._failed(f"the registry answered {status}")
            return
        if self.beats == 0 or self.failures:
            self._log.info(
                "heartbeat: {advertise} registered at {registry}",
                advertise=self.advertise,
                registry=self.registry_url,
            )
        self.beats += 1
        self.failures = 0
        self._retry = FIRST_RETRY
        if self._period is None:
            announced = headers.get(TIMEOUT_HEADER.lower())
            try:
                ttl = float(announced) if announced else 0.0
            except ValueError:
                ttl = 0.0
            self.period = min(ttl / 3, MAX_PERIOD) if ttl > 0 else DEFAULT_PERIOD
        self._schedule(self.period)

    def _failed(self, reason: Any) -> None:
        self._beating = None
        if not self.running:
            return
        self.failures += 1
        why = reason.getErrorMessage() if hasattr(reason, "getErrorMessage") else reason
        self._log.warn(
            "heartbeat: {advertise} to {registry} failed ({why}); retrying in {delay}s",
            advertise=self.advertise,
            registry=self.registry_url,
            why=why,
            delay=self._retry,
        )
        delay = self._retry
        self._retry = min(self._retry * 2, max(self.period, FIRST_RETRY))
        self._schedule(delay)

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._next = self._clock.callLater(delay, self._beat)

    def stopService(self) -> Deferred[None]:
        if not self.running:  # stopped already (deregistered once is enough)
            return succeed(None)
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        if self._beating is not None:
            self._beating.cancel()
        d = self._request(
            b"DELETE",
            self.registry_url,
            {SERVER_HEADER: self.advertise.encode()},
            self._request_timeout,
        )

        def done(result: Any) -> None:
            status = result[0] if isinstance(result, tuple) else None
            self._log.info(
                "heartbeat: {advertise} deregistered from {registry} ({status})",
                advertise=self.advertise,
                registry=self.registry_url,
                status=status if status is not None else "no answer",
            )

        return d.addBoth(done)
