"""
Servers from a GeeRPC registry, polled in the background.

Calls never wait behind a slow registry: :meth:`RegistryDiscovery.servers`
answers at once with the last good list; a refresh that fails (registry
down, a bad status, a timeout) keeps that list and is logged (unlike the
reference, defect 30).  Given several registries that share one list
(registries on etcd), a refresh that fails at one asks the next ones before
it counts as failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ..discovery import ServerList
from ..interfaces import IDiscovery
from ._ring import FailoverRing
from ._wire import Answer, Request, listed_servers

DEFAULT_REFRESH = 10.0
"""Seconds between registry refreshes (the reference's default)."""
DEFAULT_KEEP_ON_EMPTY = 120.0
"""Seconds a registry that suddenly lists no server is not believed: a
restarted registry is empty until each server's next heartbeat (every 100 s
for txgeerpc servers at the default TTL)."""


@implementer(IDiscovery)
class RegistryDiscovery(ServerList, Service):
    """Servers from a registry's ``X-Geerpc-Servers``, refreshed every
    ``refresh`` seconds while the service runs (a ``TimerService``: the
    first at start; one asked for with :meth:`refresh` does not move the
    next).

    :param request: how to make HTTP requests
        (:func:`~txgeerpc.registry.agent_request`).
    :param registry_url: the registry's URL, or several registries' (that
        share one list): a refresh asks the one that answered last, and the
        next ones in turn while they fail.
    :param keep_on_empty: when the registry suddenly lists no server at all
        (it restarted; servers re-join at their next heartbeat), keep the
        last list this many seconds before believing it (0: at once).
    :raises ValueError: no registry URL is given.
    :ivar registry_urls: every registry, in the order given.
    :ivar registry_url: the registry the next refresh asks first.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        request: Request,
        registry_url: str | Sequence[str],
        *,
        refresh: float = DEFAULT_REFRESH,
        request_timeout: float = 5.0,
        keep_on_empty: float = DEFAULT_KEEP_ON_EMPTY,
    ) -> None:
        self._clock = clock
        self._request = request
        self._ring = FailoverRing(registry_url)
        self.registry_urls = self._ring.urls
        self._request_timeout = request_timeout
        ServerList.__init__(self)
        self._timer = TimerService(refresh, self._tick)
        self._timer.clock = clock
        self._pending: Deferred[Any] | None = None
        self._refreshed: list[Deferred[list[str]]] = []
        self._keep_on_empty = keep_on_empty
        self._empty_since: float | None = None
        self.failures = 0

    @property
    def registry_url(self) -> str:
        """The registry the next refresh asks first (the one that answered
        last)."""
        return self._ring.current

    def _first_coming(self) -> bool:
        return bool(self.running) or self._pending is not None

    def startService(self) -> None:
        """Start refreshing: the first refresh at once."""
        super().startService()
        self._timer.startService()

    def stopService(self) -> Deferred[None]:
        """Stop refreshing; a refresh under way is cancelled (and ends with
        the last good list).

        :returns: a Deferred that fires once no refresh is under way.
        """
        super().stopService()
        stopped: Deferred[Any] = (
            self._timer.stopService() if self._timer.running else succeed(None)
        )
        if self._pending is not None:
            self._pending.cancel()
        return stopped.addCallback(lambda _: None)

    def _tick(self) -> Deferred[list[str]]:
        # The timer waits for it: a refresh that outlasts the interval is
        # not doubled (nor is one asked for meanwhile, which it joins).
        return self.refresh()

    def refresh(self) -> Deferred[list[str]]:
        """Ask the registry now (a refresh already under way is not doubled).

        :returns: a Deferred firing with the list once this refresh has ended
            (the last good list if it failed: it never fails itself).
        """
        done: Deferred[list[str]] = Deferred()
        self._refreshed.append(done)
        if self._pending is not None:
            return done
        if not self.running and self._first_done:  # stopped: no more requests
            self._refreshed.remove(done)
            return succeed(self.servers())
        self._ring.new_round()
        self._ask()
        return done

    def _ask(self) -> None:
        """Ask the registry in use."""
        # txgeerpc registries answer JSON too (no header-size limit); Go's
        # ignore the Accept and answer the header.
        d = self._request(
            b"GET", self.registry_url, {b"Accept": b"application/json"}, self._request_timeout
        )
        self._pending = d
        d.addCallbacks(self._answered, self._failed)
        d.addErrback(self._broken)

    def _broken(self, failure: Any) -> None:
        """A bug while taking an answer in: the refresh still ends."""
        self._log.failure("discovery: taking in a refresh failed", failure)
        self._done()

    def _answered(self, answer: Answer) -> None:
        if answer.status != 200:
            self._failed(f"the registry answered {answer.status}")
            return
        try:
            servers = listed_servers(answer)
        except ValueError as error:
            self._failed(str(error))
            return
        self._ring.answered()
        self._take(servers)
        self._done()

    def _take(self, servers: list[str]) -> None:
        self.failures = 0
        if not servers and self._servers and self._keep_on_empty > 0:
            now = self._clock.seconds()
            if self._empty_since is None:
                self._empty_since = now
                self._log.warn(
                    "discovery: {registry} lists no servers (restarted?); keeping {count} "
                    "known servers for up to {keep}s while they re-join",
                    registry=self.registry_url,
                    count=len(self._servers),
                    keep=f"{self._keep_on_empty:g}",
                )
            if now - self._empty_since < self._keep_on_empty:
                return
        self._empty_since = None
        if servers != self._servers:
            self._log.info(
                "discovery: {registry} lists {servers}",
                registry=self.registry_url,
                servers=", ".join(servers) or "no servers",
            )
            self._change(servers)

    def _failed(self, reason: Any) -> None:
        if not self.running:  # stopped (the request cancelled): no more requests
            self._done()
            return
        why = reason.getErrorMessage() if hasattr(reason, "getErrorMessage") else reason
        failed_at = self.registry_url
        if self._ring.failed():
            self._log.warn(
                "discovery: refreshing from {registry} failed ({why}); trying {next}",
                registry=failed_at,
                why=why,
                next=self.registry_url,
            )
            self._ask()
            return
        self.failures += 1
        self._log.warn(
            "discovery: refreshing from {registry} failed ({why}){others}; keeping {count} "
            "known servers",
            registry=failed_at,
            why=why,
            others=", as from every other registry" if len(self.registry_urls) > 1 else "",
            count=len(self._servers),
        )
        self._done()

    def _done(self) -> None:
        """The refresh has ended (well or not): tell the waiters."""
        self._pending = None
        # Taken before anyone hears: a refresh asked for by a waiter is a new one.
        refreshes, self._refreshed = self._refreshed, []
        self._first_ended()
        for refreshed in refreshes:
            refreshed.callback(self.servers())
