"""
Where the servers are: a static list, or a GeeRPC registry polled in the
background.

Calls never wait behind a slow registry: :meth:`servers` answers at once with
the last good list; a refresh that fails (registry down, a bad status, a
timeout) keeps that list and is logged (unlike the reference, defect 30).
Given several registries that share one list (registries on etcd), a refresh
that fails at one asks the next ones before it counts as failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from .heartbeat import Answer, Request, registry_urls
from .registry import SERVERS_HEADER

DEFAULT_REFRESH = 10.0
"""Seconds between registry refreshes (the reference's default)."""
DEFAULT_KEEP_ON_EMPTY = 120.0
"""Seconds a registry that suddenly lists no server is not believed: a
restarted registry is empty until each server's next heartbeat (every 100 s
for txgeerpc servers at the default TTL)."""

Listener = Callable[[list[str]], None]


class ServerList:
    """What a discovery's users see: its list (copied out), listeners told
    of every change, and :meth:`ready` for the first list.  A discovery
    calls :meth:`_change` with each new list and :meth:`_first_ended` once
    its first attempt has ended, and says in :meth:`_first_coming` whether
    one is still to end."""

    def __init__(self) -> None:
        self._servers: list[str] = []
        self._listeners: list[Listener] = []
        self._ready: list[Deferred[None]] = []
        self._first_done = False

    def servers(self) -> list[str]:
        """The last known list (a copy); empty before the first."""
        return list(self._servers)

    def on_change(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(servers)`` after every change, until the returned
        function is called."""
        return _subscribe(self._listeners, listener)

    def ready(self) -> Deferred[None]:
        """Fires once the first attempt at a list has ended, well or not (at
        once if none is under way or coming: the discovery is not running)."""
        if self._first_done or not self._first_coming():
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._ready.append(waiter)
        return waiter

    def _first_coming(self) -> bool:
        return False

    def _change(self, servers: list[str]) -> bool:
        """Make ``servers`` the list, telling the listeners; False if it was already."""
        if servers == self._servers:
            return False
        self._servers = servers
        _tell(self._listeners, self.servers())
        return True

    def _first_ended(self) -> None:
        self._first_done = True
        waiters, self._ready = self._ready, []
        for waiter in waiters:
            waiter.callback(None)


class StaticDiscovery(ServerList):
    """A list the caller keeps up to date with :meth:`update`."""

    def __init__(self, servers: Iterable[str] = ()) -> None:
        super().__init__()
        self._servers = list(servers)
        self._first_done = True

    def update(self, servers: Iterable[str]) -> None:
        """Replace the list (copied, unlike the reference, defect 31); the
        listeners are told even when it is the same."""
        self._servers = list(servers)
        _tell(self._listeners, self.servers())


class RegistryDiscovery(ServerList, Service):
    """Servers from a registry's ``X-Geerpc-Servers``, refreshed every
    ``refresh`` seconds while the service runs.

    :param request: how to make HTTP requests (see :mod:`txgeerpc.heartbeat`).
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
        self.registry_urls = registry_urls(registry_url)
        self._current = 0  # the registry asked first
        self._refresh = refresh
        self._request_timeout = request_timeout
        ServerList.__init__(self)
        self._next: IDelayedCall | None = None
        self._pending: Deferred[Any] | None = None
        self._refreshed: list[Deferred[list[str]]] = []
        self._keep_on_empty = keep_on_empty
        self._empty_since: float | None = None
        self.failures = 0

    @property
    def registry_url(self) -> str:
        """The registry the next refresh asks first (the one that answered
        last)."""
        return self.registry_urls[self._current]

    def _first_coming(self) -> bool:
        return bool(self.running) or self._pending is not None

    def startService(self) -> None:
        super().startService()
        self.refresh()

    def stopService(self) -> None:
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        if self._pending is not None:
            self._pending.cancel()

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
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        self._ask(0)
        return done

    def _ask(self, tried: int) -> None:
        """Ask the registry in use, the ``tried``-th of this refresh."""
        # txgeerpc registries answer JSON too (no header-size limit); Go's
        # ignore the Accept and answer the header.
        d = self._request(
            b"GET", self.registry_url, {b"Accept": b"application/json"}, self._request_timeout
        )
        self._pending = d
        d.addCallbacks(self._answered, self._failed, callbackArgs=(tried,), errbackArgs=(tried,))
        d.addErrback(self._broken)

    def _broken(self, failure: Any) -> None:
        """A bug while taking an answer in: the refresh still ends."""
        self._log.failure("discovery: taking in a refresh failed", failure)
        self._done()

    def _answered(self, answer: Answer, tried: int) -> None:
        if answer.status != 200:
            self._failed(f"the registry answered {answer.status}", tried)
            return
        try:
            servers = listed_servers(answer)
        except ValueError as error:
            self._failed(str(error), tried)
            return
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

    def _failed(self, reason: Any, tried: int) -> None:
        if not self.running:  # stopped (the request cancelled): no more requests
            self._done()
            return
        why = reason.getErrorMessage() if hasattr(reason, "getErrorMessage") else reason
        failed_at = self.registry_url
        count = len(self.registry_urls)
        self._current = (self._current + 1) % count
        if tried + 1 < count:
            self._log.warn(
                "discovery: refreshing from {registry} failed ({why}); trying {next}",
                registry=failed_at,
                why=why,
                next=self.registry_url,
            )
            self._ask(tried + 1)
            return
        self.failures += 1
        self._log.warn(
            "discovery: refreshing from {registry} failed ({why}){others}; keeping {count} "
            "known servers",
            registry=failed_at,
            why=why,
            others=", as from every other registry" if count > 1 else "",
            count=len(self._servers),
        )
        self._done()

    def _done(self) -> None:
        """The refresh has ended (well or not): schedule the next, tell the
        waiters."""
        self._pending = None
        # Schedule before telling anyone: a waiter may refresh again at once
        # (which cancels this timer), and must not end up with two.
        if self.running:
            if self._next is not None and self._next.active():
                self._next.cancel()
            self._next = self._clock.callLater(self._refresh, self.refresh)
        # Taken before anyone hears: a refresh asked for by a waiter is a new one.
        refreshes, self._refreshed = self._refreshed, []
        self._first_ended()
        for refreshed in refreshes:
            refreshed.callback(self.servers())


def listed_servers(answer: Answer) -> list[str]:
    """The servers a registry's ``GET`` answer lists, sorted: from its JSON
    body when it sent one, else from ``X-Geerpc-Servers``.

    :raises ValueError: a JSON body that is not a registry listing.
    """
    return sorted(registry_listing(answer))


def registry_listing(answer: Answer) -> dict[str, float | None]:
    """Each server a registry's ``GET`` answer lists, with the seconds since
    its last heartbeat when the registry says (a txgeerpc registry's JSON).

    :raises ValueError: a JSON body that is not a registry listing.
    """
    content_type = answer.headers.get(b"content-type", b"")
    if not content_type.startswith(b"application/json"):
        raw = answer.headers.get(SERVERS_HEADER.lower(), b"").decode("latin-1").split(",")
        return {server.strip(): None for server in raw if server.strip()}
    try:
        entries = [
            (entry["address"], entry.get("age_seconds"))
            for entry in json.loads(answer.body)["servers"]
        ]
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ValueError(f"the registry sent a JSON body that lists no servers ({error})") from None
    if not all(isinstance(address, str) for address, _ in entries):
        raise ValueError("the registry sent a JSON listing with addresses that are not strings")
    return {
        address.strip(): float(age) if isinstance(age, (int, float)) else None
        for address, age in entries
        if address.strip()
    }


_log = Logger()


def _subscribe(listeners: list[Listener], listener: Listener) -> Callable[[], None]:
    listeners.append(listener)

    def unsubscribe() -> None:
        if listener in listeners:
            listeners.remove(listener)

    return unsubscribe


def _tell(listeners: list[Listener], servers: list[str]) -> None:
    """Every listener hears of the change, whatever the others raise."""
    for listener in list(listeners):
        try:
            listener(list(servers))
        except Exception:
            _log.failure("discovery: a listener failed on {servers}", servers=servers)
