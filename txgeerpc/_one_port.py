"""
One listening port for every protocol: a raw GeeRPC stream (it starts with the
Option's ``{``), HTTP ``CONNECT`` to the RPC path (then a GeeRPC stream), and
any other HTTP request (a ``twisted.web`` site: the debug page, the 405 on the
RPC path, later the registry) — told apart by the first bytes.

:class:`Sniffer` is the sans-IO decision; :class:`OnePortProtocol` is the thin
protocol that buffers until the decision, then hands the connection (and the
buffered bytes, all of them) to the chosen protocol.
"""

from __future__ import annotations

import enum
import re
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocol,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from ._http_connect import CONNECTED, BadHead, parse_request_head, split_head
from ._wire import DEFAULT_DEBUG_PATH, DEFAULT_RPC_PATH

if TYPE_CHECKING:
    from .server import Server


class Kind(enum.Enum):
    RPC = "rpc"
    CONNECT = "connect"
    HTTP = "http"
    GARBAGE = "garbage"


_WHITESPACE = b" \t\r\n"
_LONGEST_METHOD = 16  # no HTTP method name is longer
_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")


def sniff(data: bytes) -> Kind | None:
    """What a connection that started with ``data`` speaks, or ``None`` until
    more bytes decide it.  Leading whitespace is skipped (Go's JSON decoder
    skips it before the Option; HTTP servers before a request line)."""
    start = 0
    while start < len(data) and data[start] in _WHITESPACE:
        start += 1
    if start == len(data):
        return None if start < 64 else Kind.GARBAGE
    if data[start] == ord("{"):
        return Kind.RPC
    word = data[start : start + _LONGEST_METHOD + 1]
    space = word.find(b" ")
    if space == -1:
        if len(word) > _LONGEST_METHOD or not (word.isalpha() and word.isupper()):
            return Kind.GARBAGE
        return None
    method = word[:space]
    if method == b"CONNECT":
        return Kind.CONNECT
    if method and method.isalpha() and method.isupper():
        return Kind.HTTP  # the site answers methods it does not know (501)
    return Kind.GARBAGE


@implementer(IHalfCloseableProtocol)
class OnePortProtocol(Protocol):
    """Buffers a new connection's first bytes until :func:`sniff` decides,
    then becomes the chosen protocol's pass-through."""

    _log = Logger()
    transport: Any

    def __init__(self, factory: OnePortFactory, address: IAddress | None) -> None:
        self._factory = factory
        self._address = address
        self._buffer = b""
        self._inner: IProtocol | None = None
        self._connect_head = False
        self._refused = False
        self._http_head_seen = b""  # plain HTTP: bytes until the first head ends
        self._deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self._factory.open.add(self)
        self._deadline = self._factory.clock.callLater(
            self._factory.handshake_timeout, self._too_slow
        )

    def dataReceived(self, data: bytes) -> None:
        if self._inner is not None:
            if self._deadline is not None:
                self._watch_http_head(data)
            self._inner.dataReceived(data)
            return
        if self._refused:
            return
        self._buffer += data
        if self._connect_head:
            if b"\n" in data:  # the head can only have ended on a newline
                self._read_connect_head()
            return
        kind = sniff(self._buffer)
        if kind is None:
            return
        if kind is Kind.RPC:
            self._become(self._factory.rpc.buildProtocol(self._address), self._buffer)
        elif kind is Kind.HTTP:
            # The deadline holds until the first request head is complete.
            buffered = self._buffer
            self._become(self._factory.site.buildProtocol(self._address), buffered, keep=True)
            self._watch_http_head(buffered)
        elif kind is Kind.CONNECT:
            self._connect_head = True
            self._read_connect_head()
        else:
            self._refuse(f"unrecognised protocol, first bytes {self._buffer[:16]!r}")

    def _watch_http_head(self, data: bytes) -> None:
        seen = self._http_head_seen + data
        if _END_OF_HEAD.search(seen.lstrip(_WHITESPACE)) is not None:
            self._cancel_deadline()
            self._http_head_seen = b""
        else:
            self._http_head_seen = seen[-3:]

    def _read_connect_head(self) -> None:
        try:
            split = split_head(self._buffer.lstrip(_WHITESPACE))
            if split is None:
                return
            head, rest = split
            request = parse_request_head(head)
        except BadHead as error:
            self._refuse(str(error), b"HTTP/1.0 400 Bad Request\r\n\r\n")
            return
        if request.path != self._factory.rpc_path:
            self._refuse(
                f"CONNECT to {request.path!r}, not the RPC path",
                b"HTTP/1.0 404 Not Found\r\n\r\n",
            )
            return
        self.transport.write(CONNECTED)
        # Unlike the reference, bytes sent right after the head are kept.
        self._become(self._factory.rpc.buildProtocol(self._address), rest)

    def _become(self, inner: IProtocol | None, buffered: bytes, keep: bool = False) -> None:
        if not keep:
            self._cancel_deadline()
        self._buffer = b""
        if inner is None:
            self.transport.loseConnection()
            return
        self._inner = inner
        inner.makeConnection(self.transport)
        if buffered:
            inner.dataReceived(buffered)

    def _refuse(self, why: str, answer: bytes = b"") -> None:
        self._cancel_deadline()
        self._refused = True
        self._log.info("txgeerpc: {peer}: {why}; closing", peer=_describe(self._address), why=why)
        self._buffer = b""
        if answer:
            self.transport.write(answer)
            self.transport.loseConnection()
        else:
            self.transport.abortConnection()

    def _too_slow(self) -> None:
        self._deadline = None
        self._log.info(
            "txgeerpc: {peer} sent no request within {timeout}s; closing",
            peer=_describe(self._address),
            timeout=self._factory.handshake_timeout,
        )
        self.transport.abortConnection()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def readConnectionLost(self) -> None:
        inner = self._inner
        if inner is None:
            self._cancel_deadline()
            self.transport.loseConnection()
        elif IHalfCloseableProtocol.providedBy(inner):
            inner.readConnectionLost()
        else:
            self.transport.loseConnection()  # written replies still go out first

    def writeConnectionLost(self) -> None:
        inner = self._inner
        if inner is not None and IHalfCloseableProtocol.providedBy(inner):
            inner.writeConnectionLost()
        else:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._factory.open.discard(self)
        self._cancel_deadline()
        if self._inner is not None:
            self._inner.connectionLost(reason)


def _describe(address: IAddress | None) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    return f"{host}:{port}" if host is not None else str(address)


class MustConnect(Resource):
    """The RPC path answers anything but CONNECT as the reference does:
    ``405`` with ``405 must CONNECT\\n`` (vector 08)."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setResponseCode(405)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"405 must CONNECT\n"


def mount(root: Resource, path: str, resource: Resource) -> None:
    """Put ``resource`` at ``path`` (``/debug/geerpc``) under ``root``."""
    segments = [segment.encode() for segment in path.strip("/").split("/")]
    parent = root
    for segment in segments[:-1]:
        child = parent.children.get(segment)
        if child is None:
            child = Resource()
            parent.putChild(segment, child)
        parent = child
    parent.putChild(segments[-1], resource)


DEFAULT_MAX_BODY = 64 * 1024
"""Bytes of request body a :class:`QuietSite` takes at most: the registry and
the debug page read none."""


class _BodyLimitedChannel(HTTPChannel):
    """An HTTP channel that answers ``413`` and closes the connection as soon
    as a request body is known to go over its site's ``max_body``: at once for
    a ``Content-Length`` over it (nothing of the body is read into memory), as
    the body grows over it for a chunked one.  The request is never rendered."""

    _log = Logger()
    site: Any  # set by Site.buildProtocol
    _body_refused = False

    def _max_body(self) -> int:
        return int(getattr(self.site, "max_body", DEFAULT_MAX_BODY))

    def allHeadersReceived(self) -> None:
        if self.length is not None and self.length > self._max_body():
            self.refuse_body(f"Content-Length {self.length}")
            return
        super().allHeadersReceived()

    def body_grew(self, size: int) -> bool:
        """A chunked body has ``size`` bytes so far; False (after answering
        ``413``) when that is over the limit."""
        if self._body_refused:
            return False
        if size > self._max_body():
            self.refuse_body(f"chunked body past {self._max_body()} bytes")
            return False
        return True

    def refuse_body(self, why: str) -> None:
        """Answer ``413`` and close; drop whatever else arrives."""
        if self._body_refused:
            return
        self._body_refused = True
        limit = self._max_body()
        self._log.info(
            "txgeerpc: {peer}: {method} {path}: request body over {limit} bytes ({why}); "
            "answered 413 and closing",
            peer=_describe(self.transport.getPeer() if self.transport is not None else None),
            method=getattr(self, "_command", b"?").decode("latin-1"),
            path=getattr(self, "_path", b"?").decode("latin-1"),
            limit=limit,
            why=why,
        )
        body = f"413 request body too large (the limit is {limit} bytes)\n".encode()
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (len(body), body)
        )
        self.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        if not self._body_refused:
            super().lineReceived(line)

    def rawDataReceived(self, data: bytes) -> None:
        if not self._body_refused:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if not self._body_refused:
            super().allContentReceived()


class _BodyLimitedRequest(Request):
    """Counts a request's body as it arrives (see :class:`_BodyLimitedChannel`)."""

    _body_size = 0

    def handleContentChunk(self, data: bytes) -> None:
        self._body_size += len(data)
        grew = getattr(self.channel, "body_grew", None)
        if grew is not None and not grew(self._body_size):
            return
        super().handleContentChunk(data)


class QuietSite(Site):
    """A :class:`~twisted.web.server.Site` whose access log leaves out the
    successful requests under ``quiet_paths`` (registry heartbeats and
    listings: one line per server per beat would drown the rest), and which
    takes request bodies of at most ``max_body`` bytes: a longer one (its
    ``Content-Length``, or a chunked body as it grows) is answered ``413`` and
    its connection closed, without reading the body into memory (logged).

    :param max_body: bytes of request body taken at most.
    """

    protocol = _BodyLimitedChannel  # type: ignore[assignment]
    requestFactory = _BodyLimitedRequest

    def __init__(
        self, resource: Resource, *args: Any, max_body: int = DEFAULT_MAX_BODY, **kwargs: Any
    ) -> None:
        super().__init__(resource, *args, **kwargs)
        self.quiet_paths: set[bytes] = set()
        self.max_body = max_body

    def log(self, request: Any) -> None:
        path = request.path or b""
        if request.code < 400 and any(
            path == quiet or path.startswith(quiet.rstrip(b"/") + b"/")
            for quiet in self.quiet_paths
        ):
            return
        super().log(request)


class OnePortFactory(Factory):
    """Builds :class:`OnePortProtocol` for a :class:`~txgeerpc.Server`.

    :ivar site: the ``twisted.web`` site plain HTTP requests go to; mount more
        resources on ``site.resource`` (a :class:`Resource` root).
    :ivar open: every connection open on this factory's ports, whatever it speaks.
    """

    def __init__(
        self,
        server: Server,
        clock: IReactorTime,
        *,
        rpc_path: str = DEFAULT_RPC_PATH,
        debug_path: str | None = DEFAULT_DEBUG_PATH,
    ) -> None:
        self.clock = clock
        self.open: set[OnePortProtocol] = set()
        self.rpc = server.factory()
        self.rpc_path = rpc_path
        self.handshake_timeout = server.settings.handshake_timeout
        root = Resource()
        mount(root, rpc_path, MustConnect())
        if debug_path is not None:
            from .debug import DebugResource

            mount(root, debug_path, DebugResource(server))
        self.site = QuietSite(root, reactor=clock)
        self.site.displayTracebacks = False
        self.site.noisy = False

    def buildProtocol(self, addr: IAddress | None) -> OnePortProtocol:
        return OnePortProtocol(self, addr)


__all__ = [
    "DEFAULT_MAX_BODY",
    "Kind",
    "MustConnect",
    "OnePortFactory",
    "OnePortProtocol",
    "QuietSite",
    "mount",
    "sniff",
]
