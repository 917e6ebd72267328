"""
One listening port for every protocol: a raw GeeRPC stream (it starts with the
Option's ``{``), HTTP ``CONNECT`` to the RPC path (then a GeeRPC stream), and
any other HTTP request (a ``twisted.web`` site, built by the server: the debug
page, the 405 on the RPC path, the registry) — told apart by the first bytes.
Go's ``net/rpc`` clients too (docs/protocol.md 14): a gob stream with no
Option, a JSON-RPC 1.0 request, ``CONNECT /_goRPC_`` (see
:mod:`txgeerpc._netrpc` for how they are told apart, in a bounded lookahead).

:class:`Sniffer` is the sans-IO decision; :class:`OnePortProtocol` is the thin
protocol that buffers until the decision, then hands the connection (and the
buffered bytes, all of them) to the chosen protocol.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.error import ConnectionAborted, ConnectionDone
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
from zope.interface import implementer

from ._admission import HANDSHAKE_TIMEOUT
from ._http_connect import CONNECTED, BadHead, parse_request_head, split_head
from ._netrpc import NETRPC_CONNECTED, NETRPC_PATH, Start, classify
from ._nodelay import set_tcp_nodelay
from ._server_protocol import DEFAULT_HANDSHAKE_TIMEOUT, ServerFactory, ServerProtocol
from ._web import QuietSite
from ._wire import DEFAULT_RPC_PATH
from .codec import GobCodec, JSONRPCServerCodec
from .interfaces import ICodec


class Kind(enum.Enum):
    RPC = "rpc"
    CONNECT = "connect"
    HTTP = "http"
    GARBAGE = "garbage"
    NETRPC = "netrpc"
    """Go's ``net/rpc`` over TCP: gob, no Option."""
    JSONRPC = "jsonrpc"
    """Go's ``net/rpc/jsonrpc``: JSON-RPC 1.0."""
    TLS = "tls"


_WHITESPACE = b" \t\r\n"
_LONGEST_METHOD = 16  # no HTTP method name is longer
_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")
_TLS_HANDSHAKE = 0x16


def sniff(data: bytes, go_netrpc: bool = True) -> Kind | None:
    """What a connection that started with ``data`` speaks, or ``None`` until
    more bytes decide it.  Leading whitespace is skipped (Go's JSON decoder
    skips it before the Option; HTTP servers before a request line).  With
    ``go_netrpc``, Go's ``net/rpc`` gob streams and JSON-RPC requests are
    recognised too (:func:`txgeerpc._netrpc.classify`: at most
    :data:`~txgeerpc._netrpc.MAX_LOOKAHEAD` bytes)."""
    if go_netrpc:
        go = classify(data)
        if go is Start.GOB:
            return Kind.NETRPC
        if go is Start.JSONRPC:
            return Kind.JSONRPC
        if go is None:
            return None
    start = 0
    while start < len(data) and data[start] in _WHITESPACE:
        start += 1
    if start == len(data):
        return None if start < 64 else Kind.GARBAGE
    if data[start] == _TLS_HANDSHAKE:  # a TLS record: a ClientHello starts 0x16 0x03
        if start + 1 == len(data):
            return None
        return Kind.TLS if data[start + 1] == 3 else Kind.GARBAGE
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

    def __init__(
        self, factory: OnePortFactory, address: IAddress | None, *, secure: bool = False
    ) -> None:
        self._factory = factory
        self._address = address
        # Inside TLS (built by the connection's outer protocol, which alone
        # counts in factory.open and the admission control).
        self._secure = secure
        self._tls_inner: OnePortProtocol | None = None
        self._buffer = b""
        self._inner: IProtocol | None = None
        self._connect_head = False
        self._refused = False
        self._http_head_seen = b""  # plain HTTP: bytes until the first head ends
        self._deadline: IDelayedCall | None = None
        self._started = 0.0

    def connectionMade(self) -> None:
        if not self._secure:
            self._factory.open.add(self)
            if self._factory.tcp_nodelay is not None:
                set_tcp_nodelay(self.transport, self._factory.tcp_nodelay)
        clock = self._factory.clock
        self._started = clock.seconds()
        self._deadline = clock.callLater(self._factory.handshake_timeout, self._too_slow)

    def dataReceived(self, data: bytes) -> None:
        self._factory.admission.touch(self)
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
        kind = sniff(self._buffer, self._factory.go_netrpc)
        if kind is None:
            return
        if kind is Kind.TLS:
            self._start_tls()
            return
        if self._factory.tls_only and not self._secure and kind is not Kind.GARBAGE:
            self._refuse(
                f"plaintext {kind.value} on a TLS-only port",
                b"HTTP/1.0 400 Bad Request\r\n\r\nThis port speaks TLS only.\n"
                if kind is Kind.HTTP
                else b"",
                "plaintext_on_tls_only",
            )
            return
        if kind is Kind.RPC:
            self._become(self._factory.rpc.buildProtocol(self._address), self._buffer)
        elif kind is Kind.NETRPC:
            rpc = self._factory.rpc.buildProtocol(self._address)
            self._become(rpc, self._buffer, codec=GobCodec())
        elif kind is Kind.JSONRPC:
            rpc = self._factory.rpc.buildProtocol(self._address)
            self._become(rpc, self._buffer, codec=JSONRPCServerCodec())
        elif kind is Kind.HTTP:
            # The deadline holds until the first request head is complete.
            buffered = self._buffer
            self._become(self._factory.site.buildProtocol(self._address), buffered, keep=True)
            self._watch_http_head(buffered)
        elif kind is Kind.CONNECT:
            self._connect_head = True
            self._read_connect_head()
        else:
            self._refuse(
                f"unrecognised protocol, first bytes {self._buffer[:16]!r}",
                kind="unrecognised_protocol",
            )

    def _start_tls(self) -> None:
        """A TLS ClientHello: this connection becomes TLS, and a new
        :class:`OnePortProtocol` inside it sniffs again (its own deadline
        covers the handshake and the first request)."""
        tls = self._factory.tls_factory
        if tls is None or self._secure:
            what = "TLS inside TLS" if self._secure else "a TLS ClientHello; this port has no TLS"
            self._refuse(what, kind="tls_inside_tls" if self._secure else "tls_not_served")
            return
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        inner = OnePortProtocol(self._factory, self._address, secure=True)
        self._tls_inner = inner
        self._become(TLSMemoryBIOProtocol(tls, inner), self._buffer)

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
            self._refuse(str(error), b"HTTP/1.0 400 Bad Request\r\n\r\n", "bad_connect")
            return
        if (
            request.path == NETRPC_PATH
            and self._factory.go_netrpc
            and request.path != self._factory.rpc_path
        ):
            self.transport.write(NETRPC_CONNECTED)
            rpc = self._factory.rpc.buildProtocol(self._address)
            self._become(rpc, rest, codec=GobCodec())
            return
        if request.path != self._factory.rpc_path:
            self._refuse(
                f"CONNECT to {request.path!r}, not the RPC path",
                b"HTTP/1.0 404 Not Found\r\n\r\n",
                "bad_connect",
            )
            return
        self.transport.write(CONNECTED)
        # Unlike the reference, bytes sent right after the head are kept.
        inner = self._factory.rpc.buildProtocol(self._address)
        if isinstance(inner, ServerProtocol):
            inner.transport_kind = "connect"  # the debug page's connections
        self._become(inner, rest)

    @property
    def inner(self) -> IProtocol | None:
        """The protocol the connection was handed to, once decided."""
        return self._inner

    def _become(
        self,
        inner: IProtocol | None,
        buffered: bytes,
        keep: bool = False,
        codec: ICodec | None = None,
    ) -> None:
        if not keep:
            self._cancel_deadline()
        self._buffer = b""
        if inner is None:
            self.transport.loseConnection()
            return
        if isinstance(inner, ServerProtocol):
            # Leading whitespace, a CONNECT head and the Option: one deadline.
            inner.handshake_started = self._started
        self._inner = inner
        inner.makeConnection(self.transport)
        if codec is not None and isinstance(inner, ServerProtocol):
            inner.serve_without_option(codec)  # a Go net/rpc client: no Option
        if buffered:
            inner.dataReceived(buffered)

    def _refuse(self, why: str, answer: bytes = b"", kind: str = "") -> None:
        if kind:
            counters = self._factory.rpc.counters
            counters.failed(counters.handshake_failures, kind)
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
        self._factory.rpc.counters.add(HANDSHAKE_TIMEOUT)
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

    # What admission control asks of a connection (txgeerpc._admission).
    def idle(self) -> bool:
        """Nothing running and nothing half received: not yet decided, an
        RPC stream with no request running or begun, an HTTP connection
        between requests."""
        if self._tls_inner is not None:
            return self._tls_inner.idle()
        inner = self._inner
        if inner is None:
            return True
        if isinstance(inner, ServerProtocol):
            return inner.idle()
        return self._deadline is None and not getattr(inner, "requests", None)

    def fresh(self) -> bool:
        """No request completed yet (the first to go when room is needed)."""
        if self._tls_inner is not None:
            return self._tls_inner.fresh()
        inner = self._inner
        if inner is None:
            return True
        if isinstance(inner, ServerProtocol):
            return not inner.served
        return self._deadline is not None

    def evict(self) -> None:
        """Close at once: room is needed for a new connection."""
        self._cancel_deadline()
        self._factory.note(
            "txgeerpc: closed {count} idle connection(s) to make room for new ones "
            "(the limit is {total}); last {peer}",
            peer=_describe(self._address),
        )
        transport = self.transport
        transport.abortConnection()
        if isinstance(transport, tcp.Connection):
            # Free its descriptor now, not on the reactor's next turn: in one
            # accept loop, every new connection that evicts one would otherwise
            # hold a descriptor more, up to running out (EMFILE).  The call the
            # reactor makes later is ignored (tcp.Connection guards against it).
            transport.connectionLost(Failure(ConnectionAborted()))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._secure:
            if self._inner is None and not reason.check(ConnectionDone):
                self._factory.tls_refused += 1
                self._log.info(
                    "txgeerpc: {peer}: TLS handshake refused: {why}",
                    peer=_describe(self._address),
                    why=_tls_failure(reason),
                )
        else:
            self._factory.open.discard(self)
            self._factory.admission.release(self)
            if self._factory.on_closed is not None:
                self._factory.on_closed()
        self._cancel_deadline()
        if self._inner is not None:
            self._inner.connectionLost(reason)


_NOTE_INTERVAL = 10.0


def _tls_failure(reason: Failure) -> str:
    from .tls import describe_tls_failure

    return describe_tls_failure(reason)


def _describe(address: IAddress | None) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    return f"{host}:{port}" if host is not None else str(address)


class OnePortFactory(Factory):
    """Builds :class:`OnePortProtocol`: one listening port for a GeeRPC
    factory and a web site.  :meth:`txgeerpc.Server.port_factory` makes one.

    :param rpc: the factory of raw GeeRPC streams (after ``{``, or after a
        ``CONNECT`` to ``rpc_path``).
    :param site: the ``twisted.web`` site plain HTTP requests go to.
    :param clock: times the deadline for a connection's first request.
    :param rpc_path: the path ``CONNECT`` must name.
    :param handshake_timeout: seconds a new connection has to send its Option
        or its first request head.
    :param go_netrpc: also serve Go's ``net/rpc`` clients (gob without an
        Option, ``CONNECT /_goRPC_``) and JSON-RPC 1.0 ones (docs/protocol.md 14).

    :ivar site: ``site``; mount more resources on ``site.resource``.
    :ivar open: every connection open on this factory's ports, whatever it speaks.
    :ivar admission: the connection limits (``rpc``'s, shared by every port
        factory of one server).
    :ivar tls: the :class:`~txgeerpc.tls.ServerTLS` connections starting
        with a TLS ClientHello get (``None``: they are refused); set it with
        :meth:`serve_tls`.
    :ivar tls_only: refuse plaintext (serve only TLS).
    :ivar tls_refused: TLS handshakes refused (bad or missing client
        certificates, clients that do not trust this server...).
    :ivar tcp_nodelay: set ``TCP_NODELAY`` on every TCP connection accepted
        (``True``), clear it (``False``) or leave the system's default, Nagle's
        algorithm on (``None``, the default: docs/operations.md says why).
    """

    _log = Logger()

    def __init__(
        self,
        rpc: ServerFactory,
        site: QuietSite,
        clock: IReactorTime,
        *,
        rpc_path: str = DEFAULT_RPC_PATH,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        go_netrpc: bool = True,
    ) -> None:
        self.clock = clock
        self.go_netrpc = go_netrpc
        self.open: set[OnePortProtocol] = set()
        self.rpc = rpc
        self.site = site
        self.rpc_path = rpc_path
        self.handshake_timeout = handshake_timeout
        self.admission = rpc.admission
        self._notes: dict[str, tuple[int, float | None]] = {}
        self.tls: Any = None
        self.tls_factory: Any = None
        self.tls_only = False
        self.tls_refused = 0
        self.tcp_nodelay: bool | None = None
        self.on_closed: Callable[[], None] | None = None
        """Called after a connection of this factory closed (workers publish
        their count: :mod:`txgeerpc._accept_balance`)."""

    def serve_tls(self, tls: Any, *, only: bool = False) -> None:
        """Serve TLS too (a :class:`~txgeerpc.tls.ServerTLS`), on every port
        of this factory: a connection starting with a TLS ClientHello is
        unwrapped, then sniffed again (GeeRPC, ``CONNECT``, HTTP).

        :param only: refuse plaintext connections.
        """
        from twisted.internet.protocol import Factory as _Factory
        from twisted.protocols.tls import TLSMemoryBIOFactory

        self.tls = tls
        self.tls_only = only
        # The wrapped factory is never asked for protocols: the one-port
        # protocol builds the inner one itself.
        self.tls_factory = TLSMemoryBIOFactory(tls, False, _Factory(), self.clock)

    def buildProtocol(self, addr: IAddress | None) -> OnePortProtocol | None:
        """A protocol for a new connection, or ``None`` (Twisted then closes
        it at once) when the connection limits refuse it."""
        protocol = OnePortProtocol(self, addr)
        if not self.admission.admit(protocol, getattr(addr, "host", None)):
            self.note(
                "txgeerpc: refused {count} connection(s) over the limits ({total} in all, "
                "{per_peer} per peer); last from {peer}",
                peer=_describe(addr),
            )
            return None
        return protocol

    def http_connections(self) -> int:
        """Connections open now that are talking HTTP (not GeeRPC)."""
        return sum(
            1
            for protocol in list(self.open)
            if protocol.inner is not None and not isinstance(protocol.inner, ServerProtocol)
        )

    def note(self, text: str, peer: str) -> None:
        """Log a refusal or an eviction: at once, then at most one line per
        kind every :data:`_NOTE_INTERVAL` seconds, with how many there were."""
        now = self.clock.seconds()
        count, logged_at = self._notes.get(text, (0, None))
        count += 1
        if logged_at is not None and now - logged_at < _NOTE_INTERVAL:
            self._notes[text] = (count, logged_at)
            return
        self._notes[text] = (0, now)
        admission = self.admission
        self._log.info(
            text,
            count=count,
            peer=peer,
            total=admission.max_connections,
            per_peer=admission.max_per_peer,
        )


__all__ = ["Kind", "OnePortFactory", "OnePortProtocol", "sniff"]
