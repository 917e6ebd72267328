"""
The GeeRPC registry (PROTOCOL.md section 10), as a ``twisted.web`` resource.

Wire-compatible with the Go reference, so Go and Python servers and clients
can share one registry:

- ``POST`` with ``X-Geerpc-Server: proto@addr`` registers or refreshes an
  entry (``200``, empty body); the header missing or empty is ``500``.
- ``GET`` answers ``X-Geerpc-Servers``: the live addresses, sorted and
  comma-joined (present and empty when there are none).
- any other method: ``405``, empty body;
- any other path (``/_geerpc_/registry/x``, even a trailing slash): ``404``,
  as Go's ``http.ServeMux`` answers for a pattern without a trailing slash.

Unlike the reference: addresses are validated (``400``), expired entries are
purged on a timer too (:class:`RegistryPurge`), ``DELETE`` with the same
header deregisters, a ``GET`` that accepts ``application/json`` gets every
entry with its last heartbeat, and the number of entries is bounded (a
heartbeat for a new server when full is ``503``; see :class:`MemoryStore`).
Where entries live is an :class:`IRegistryStore` (:class:`MemoryStore` here;
other stores plug in behind the same interface).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import Attribute, Interface, implementer

from .errors import InvalidServerAddress as InvalidServerAddress
from .errors import RegistryFull

SERVER_HEADER = b"X-Geerpc-Server"
SERVERS_HEADER = b"X-Geerpc-Servers"
TIMEOUT_HEADER = b"X-Geerpc-Timeout"
"""Sent with every heartbeat answer: the TTL, so servers can beat in time
(a txgeerpc extension; Go servers ignore it)."""
MAX_LISTING_HEADER = 8192
"""A JSON answer carries ``X-Geerpc-Servers`` too while it is at most this
long: HTTP clients limit header lines (Twisted's to 16 KiB); the body has
no such limit."""
DEFAULT_TIMEOUT = 300.0
"""Seconds an entry lives after its last heartbeat (the reference's 5 min)."""
DEFAULT_MAX_ENTRIES = 10_000
"""Entries a :class:`MemoryStore` holds at most (the reference has no limit:
anyone who can reach it could fill its memory with made-up servers)."""

_PROTOCOLS = ("tcp", "tcp4", "tcp6", "http", "unix")
# An empty host is the local system (Go dials ":port" so); IPv6 literals may
# carry a zone ("[fe80::1%eth0]").
_HOST_PORT = re.compile(
    r"(\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9.\-_]+)?\]|[A-Za-z0-9.\-_]*):([0-9]{1,5})\Z"
)
_MAX_ADDRESS = 512


def validate_address(address: str) -> str:
    """``address`` if it is a ``proto@addr`` a client can dial.

    :raises InvalidServerAddress: with the reason.
    """
    if len(address) > _MAX_ADDRESS:
        raise InvalidServerAddress(f"longer than {_MAX_ADDRESS} characters")
    if "," in address or any(char.isspace() for char in address):
        raise InvalidServerAddress("commas and whitespace are not allowed")
    protocol, at, rest = address.partition("@")
    if "@" in rest:
        raise InvalidServerAddress("one @ only (Go clients split on every @)")
    if not at or protocol not in _PROTOCOLS:
        raise InvalidServerAddress(f"expected one of {', '.join(_PROTOCOLS)} then @")
    if protocol == "unix":
        if not rest.startswith("/"):
            raise InvalidServerAddress("a unix address is an absolute path")
        return address
    match = _HOST_PORT.match(rest)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise InvalidServerAddress("expected host:port")
    return address


@attrs.frozen
class Entry:
    address: str
    last_heartbeat: float


class IRegistryStore(Interface):
    """Where registry entries live (in memory; on etcd...).  Every method
    answers with a Deferred, so a store may live across the network; a store
    that cannot answer fails it (the registry then answers ``503``)."""

    timeout: float = Attribute(  # type: ignore[assignment]
        "Seconds an entry lives after its last heartbeat (0: for ever)."
    )

    def heartbeat(address: str, now: float) -> Deferred[bool]:
        """Register ``address`` or refresh it; True if it was not registered
        (or had expired).  A store that takes no more entries fails it with
        :class:`~txgeerpc.errors.RegistryFull` (the registry answers ``503``)."""

    def deregister(address: str) -> Deferred[bool]:
        """Forget ``address``; False if it was not registered."""

    def live(now: float) -> Deferred[list[Entry]]:
        """The entries still alive at ``now``, sorted by address."""

    def purge(now: float) -> Deferred[list[str]]:
        """Drop the entries dead at ``now``; the addresses dropped."""


@implementer(IRegistryStore)
class MemoryStore:
    """Entries in a dict.

    :param timeout: seconds an entry lives after its last heartbeat (0: entries
        never expire).
    :param max_entries: entries held at most.  A heartbeat for a new address
        when that many are held first drops the expired ones (logged as
        expired); if none has expired it fails with
        :class:`~txgeerpc.errors.RegistryFull`.  Refreshing an entry the store
        holds is always allowed.
    :raises ValueError: ``max_entries`` is less than 1.
    """

    _log = Logger()

    def __init__(
        self, timeout: float = DEFAULT_TIMEOUT, *, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be 1 or more, got {max_entries}")
        self.timeout = timeout
        self.max_entries = max_entries
        self._entries: dict[str, float] = {}

    def heartbeat(self, address: str, now: float) -> Deferred[bool]:
        last = self._entries.get(address)
        if last is None and len(self._entries) >= self.max_entries:
            for dead in self._drop_dead(now):
                self._log.info("registry: {address} expired", address=dead)
            if len(self._entries) >= self.max_entries:
                return fail(RegistryFull(self.max_entries))
        self._entries[address] = now
        return succeed(last is None or not self._alive(last, now))

    def deregister(self, address: str) -> Deferred[bool]:
        return succeed(self._entries.pop(address, None) is not None)

    def _alive(self, last: float, now: float) -> bool:
        return self.timeout <= 0 or last + self.timeout > now

    def entries(self, now: float) -> list[Entry]:
        """:meth:`live`, at once."""
        return [
            Entry(address, last)
            for address, last in sorted(self._entries.items())
            if self._alive(last, now)
        ]

    def live(self, now: float) -> Deferred[list[Entry]]:
        return succeed(self.entries(now))

    def purge(self, now: float) -> Deferred[list[str]]:
        return succeed(self._drop_dead(now))

    def _drop_dead(self, now: float) -> list[str]:
        dead = [address for address, last in self._entries.items() if not self._alive(last, now)]
        for address in dead:
            del self._entries[address]
        return dead


class RegistryResource(Resource):
    """The registry at one path (``/_geerpc_/registry`` by default): mount it
    there (``putChild``); any path below it answers ``404``."""

    isLeaf = True
    _log = Logger()

    def __init__(self, store: IRegistryStore, clock: IReactorTime) -> None:
        super().__init__()
        self.store = store
        self.clock = clock

    def render(self, request: Request) -> bytes | int:
        if request.postpath:
            # Go's mux matches the pattern "/_geerpc_/registry" exactly.
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"x-content-type-options", b"nosniff")
            return b"404 page not found\n"
        method = request.method
        if method == b"POST":
            address = self._address(request)
            if address is None:
                return b""
            return self._answer(
                request,
                self.store.heartbeat(address, self.clock.seconds()),
                partial(self._registered, request, address),
            )
        if method in (b"GET", b"HEAD"):
            now = self.clock.seconds()
            return self._answer(request, self.store.live(now), partial(self._listing, request, now))
        if method == b"DELETE":
            address = self._address(request)
            if address is None:
                return b""
            return self._answer(
                request,
                self.store.deregister(address),
                partial(self._deregistered, request, address),
            )
        request.setResponseCode(405)
        return b""

    def _answer(
        self,
        request: Request,
        asked: Deferred[Any],
        answer: Callable[[Any], bytes],
    ) -> bytes | int:
        """Render ``answer(result)`` once the store has answered:
        at once for an in-memory store, later for a remote one.  A store's
        failure is ``503``; rendering that raises (a bug, or a remote store's
        odd answer) is ``500`` and logged, and the request is finished."""

        def render(result: Any) -> bytes:
            try:
                if isinstance(result, Failure):
                    return self._unavailable(request, result)
                return answer(result)
            except Exception:
                return self._broken(request, Failure())

        at_once: list[Any] = []
        waiting = False
        gone = False

        def answered(result: Any) -> None:
            if not waiting:
                at_once.append(result)
            elif not gone:
                body = render(result)
                request.setHeader(b"content-length", b"%d" % len(body))
                request.write(body)
                request.finish()

        def disconnected(_: Any) -> None:
            nonlocal gone
            gone = True

        def unanswered(failure: Failure) -> None:
            self._log.failure(
                "registry: cannot answer {method} {uri}",
                failure=failure,
                method=request.method.decode("latin-1"),
                uri=request.uri.decode("latin-1"),
            )

        asked.addBoth(answered).addErrback(unanswered)
        if at_once:
            return render(at_once[0])
        waiting = True
        request.notifyFinish().addErrback(disconnected)
        return NOT_DONE_YET

    def _unavailable(self, request: Request, failure: Failure) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setResponseCode(503)
        if failure.check(RegistryFull):
            values = request.requestHeaders.getRawHeaders(SERVER_HEADER) or [b""]
            self._log.warn(
                "registry: refused {address}: {error}",
                address=values[0].decode("latin-1"),
                error=failure.value,
            )
            return f"{failure.value}\n".encode()
        self._log.failure(
            "registry: the store failed on {method} {uri}",
            failure=failure,
            method=request.method.decode("latin-1"),
            uri=request.uri.decode("latin-1"),
        )
        return b"registry store unavailable\n"

    def _broken(self, request: Request, failure: Failure) -> bytes:
        self._log.failure(
            "registry: answering {method} {uri} failed",
            failure=failure,
            method=request.method.decode("latin-1"),
            uri=request.uri.decode("latin-1"),
        )
        for name in (SERVERS_HEADER, TIMEOUT_HEADER):
            request.responseHeaders.removeHeader(name)
        request.setResponseCode(500)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"registry error\n"

    def _address(self, request: Request) -> str | None:
        values = request.requestHeaders.getRawHeaders(SERVER_HEADER) or []
        value = values[0].decode("latin-1").strip() if values else ""
        if not value:
            request.setResponseCode(500)  # as the reference answers a missing header
            return None
        try:
            if len(values) > 1:
                raise InvalidServerAddress("sent more than once")
            return validate_address(value)
        except InvalidServerAddress as error:
            self._log.info(
                "registry: refused {header} {value!r}: {error}",
                header=SERVER_HEADER.decode(),
                value=value,
                error=error,
            )
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.write(f"bad {SERVER_HEADER.decode()}: {error}\n".encode())
            return None

    def _registered(self, request: Request, address: str, new: bool) -> bytes:
        if new:
            self._log.info("registry: {address} joined", address=address)
        timeout = getattr(self.store, "timeout", None)
        if timeout is not None:
            request.setHeader(TIMEOUT_HEADER, f"{timeout:g}".encode())
        return b""

    def _deregistered(self, request: Request, address: str, known: bool) -> bytes:
        if known:
            self._log.info("registry: {address} left", address=address)
        else:
            request.setResponseCode(404)
        return b""

    def _listing(self, request: Request, now: float, entries: list[Entry]) -> bytes:
        # Bytes back as they came (the header was read as latin-1), as Go does.
        listed = ",".join(entry.address for entry in entries).encode("latin-1")
        accept = request.getHeader(b"accept") or b""
        if b"application/json" not in accept:
            request.setHeader(SERVERS_HEADER, listed)
            return b""
        if len(listed) <= MAX_LISTING_HEADER:
            request.setHeader(SERVERS_HEADER, listed)
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        body = {
            "servers": [
                {
                    "address": entry.address,
                    "last_heartbeat": entry.last_heartbeat,
                    "age_seconds": round(now - entry.last_heartbeat, 3),
                }
                for entry in entries
            ]
        }
        return json.dumps(body).encode()


class RegistryPurge(Service):
    """Drops expired entries every ``interval`` seconds (the reference only
    does so while answering a GET), logging each one."""

    _log = Logger()

    def __init__(self, store: IRegistryStore, clock: IReactorTime, interval: float) -> None:
        self._store = store
        self._clock = clock
        self._interval = interval
        self._next: IDelayedCall | None = None
        self._purging: Deferred[list[str]] | None = None

    def startService(self) -> None:
        super().startService()
        self._schedule()

    def _schedule(self) -> None:
        self._next = self._clock.callLater(self._interval, self._purge)

    def _purge(self) -> None:
        self._next = None
        self._purging = self._store.purge(self._clock.seconds())
        self._purging.addCallbacks(self._purged, self._failed)

    def _purged(self, dropped: list[str]) -> None:
        self._purging = None
        for address in dropped:
            self._log.info("registry: {address} expired", address=address)
        if self.running:
            self._schedule()

    def _failed(self, failure: Failure) -> None:
        self._purging = None
        if failure.check(CancelledError):
            return
        self._log.failure(
            "registry: purging failed (retrying in {interval}s)",
            failure=failure,
            interval=self._interval,
        )
        if self.running:
            self._schedule()

    def stopService(self) -> Any:
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        if self._purging is not None:
            self._purging.cancel()
        return None


def purge_interval(timeout: float) -> float:
    """How often to purge: often enough that an entry is gone within
    ``timeout`` plus one interval (a quarter of the timeout, 1 s at least)."""
    return max(timeout / 4, 1.0) if timeout > 0 else 60.0
