"""
The GeeRPC registry (docs/protocol.md section 10), as a ``twisted.web`` resource.

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
purged on a timer too (:class:`~txgeerpc.registry.RegistryPurge`), ``DELETE`` with the same
header deregisters, a ``GET`` that accepts ``application/json`` gets every
entry with its last heartbeat, and the number of entries is bounded (a
heartbeat for a new server when full is ``503``; see
:class:`~txgeerpc.registry.MemoryStore`), and so are each source's writes
(:class:`~txgeerpc.registry.SourceLimits`: a rate, ``429``; an entry limit,
``429``; another source's entry, ``403``).  Where entries live is an
:class:`~txgeerpc.interfaces.IRegistryStore` (a ``MemoryStore``, an
:class:`~txgeerpc.etcd.EtcdStore`...).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ..errors import RegistryFull
from ..interfaces import IRegistryStore
from ._limits import IDENTITY_ATTRIBUTE, Refusal, SourceLimits, source_of
from ._store import Entry, outage
from ._wire import (
    MAX_LISTING_HEADER,
    SERVER_HEADER,
    SERVERS_HEADER,
    TIMEOUT_HEADER,
    InvalidServerAddress,
    validate_address,
)


class RegistryResource(Resource):
    """The registry at one path (``/_geerpc_/registry`` by default): mount it
    there (``putChild``); any path below it answers ``404``.

    :param limits: each source's write rate, entry limit and ownership
        (default: a :class:`~txgeerpc.registry.SourceLimits` with its
        defaults and the store's timeout; ``False``: none).
    """

    isLeaf = True
    _log = Logger()
    NOTE_INTERVAL = 10.0
    """Seconds between two log lines about refused writes (with their count)."""

    def __init__(
        self,
        store: IRegistryStore,
        clock: IReactorTime,
        *,
        limits: SourceLimits | bool | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.clock = clock
        if limits is None or limits is True:
            limits = SourceLimits(clock, store.timeout)
        self.limits: SourceLimits | None = limits or None
        self._noted_at: float | None = None
        self._unnoted = 0

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
            source = self._source(request)
            refused = self._limited(request, source, method, address)
            if refused is not None:
                return refused
            return self._answer(
                request,
                self.store.heartbeat(address, self.clock.seconds()),
                partial(self._registered, request, address, source),
            )
        if method in (b"GET", b"HEAD"):
            now = self.clock.seconds()
            return self._answer(request, self.store.live(now), partial(self._listing, request, now))
        if method == b"DELETE":
            address = self._address(request)
            if address is None:
                return b""
            refused = self._limited(request, self._source(request), method, address)
            if refused is not None:
                return refused
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
        text = outage(failure)
        if text is not None:  # one line: an outage fails every request
            self._log.warn(
                "registry: the store failed on {method} {uri}: {error}",
                error=text,
                method=request.method.decode("latin-1"),
                uri=request.uri.decode("latin-1"),
            )
            return b"registry store unavailable\n"
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

    def _source(self, request: Request) -> str:
        host = getattr(request.getClientAddress(), "host", None)
        return source_of(host, getattr(request, IDENTITY_ATTRIBUTE, None))

    def _limited(self, request: Request, source: str, method: bytes, address: str) -> bytes | None:
        """The answer to a write the limits refuse (logged at most every
        :attr:`NOTE_INTERVAL` seconds), or ``None``."""
        if self.limits is None:
            return None
        refusal = self.limits.check(source, method, address)
        if refusal is None:
            return None
        self._note(source, address, refusal)
        request.setResponseCode(refusal.status)
        if refusal.retry_after is not None:
            request.setHeader(b"retry-after", b"%d" % max(1, math.ceil(refusal.retry_after)))
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"{refusal.text}\n".encode()

    def _note(self, source: str, address: str, refusal: Refusal) -> None:
        now = self.clock.seconds()
        self._unnoted += 1
        if self._noted_at is not None and now - self._noted_at < self.NOTE_INTERVAL:
            return
        self._log.warn(
            "registry: refused {count} write(s) in {interval}s; last from {source} for "
            "{address}: {status} {text}",
            count=self._unnoted,
            interval=f"{self.NOTE_INTERVAL:g}",
            source=source,
            address=address,
            status=refusal.status,
            text=refusal.text,
        )
        self._noted_at = now
        self._unnoted = 0

    def _registered(self, request: Request, address: str, source: str, new: bool) -> bytes:
        if self.limits is not None:
            self.limits.listed(source, address)
        if new:
            self._log.info("registry: {address} joined", address=address)
        request.setHeader(TIMEOUT_HEADER, f"{self.store.timeout:g}".encode())
        return b""

    def _deregistered(self, request: Request, address: str, known: bool) -> bytes:
        if self.limits is not None:
            self.limits.left(address)
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
