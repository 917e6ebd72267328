"""
HTTP CONNECT, GeeRPC's HTTP transport (docs/protocol.md section 6): sans-IO parsers
for the request head a client sends and the response head a server answers,
and the client endpoint that performs the exchange.

Go clients send ``CONNECT /_geeprc_ HTTP/1.0`` with bare ``\\n`` line ends and
no headers (vector 06); CRLF, HTTP/1.1 and headers are accepted too.  The
server answers exactly ``HTTP/1.0 200 Connected to Gee RPC\\n\\n`` and the
GeeRPC stream starts right after it, in both directions.  Bytes a client sends
after its head, before reading the answer, belong to the stream and are kept.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from ._wire import DEFAULT_RPC_PATH
from .errors import ConnectFailed, ProtocolError

CONNECTED = b"HTTP/1.0 200 Connected to Gee RPC\n\n"
"""The reference server's exact answer to a CONNECT on the RPC path."""

CONNECTED_REASON = "Connected to Gee RPC"

MAX_HEAD_SIZE = 8192
"""Longest request or response head accepted, in bytes."""

_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")
_REQUEST_LINE = re.compile(rb"([A-Z]+) (\S+) HTTP/1\.([01])\Z")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: (.*))?\Z")


class BadHead(ProtocolError):
    """An HTTP head that is too long or malformed."""


@attrs.frozen
class RequestHead:
    method: str
    path: str
    minor_version: int
    headers: tuple[tuple[str, str], ...]


def split_head(buffer: bytes) -> tuple[bytes, bytes] | None:
    """(head without its blank line, the bytes after it), or ``None`` until the
    blank line arrives.

    :raises BadHead: the head is longer than :data:`MAX_HEAD_SIZE`.
    """
    end = _END_OF_HEAD.search(buffer)
    if end is None:
        if len(buffer) > MAX_HEAD_SIZE:
            raise BadHead(f"HTTP head longer than {MAX_HEAD_SIZE} bytes")
        return None
    if end.start() > MAX_HEAD_SIZE:
        raise BadHead(f"HTTP head longer than {MAX_HEAD_SIZE} bytes")
    return buffer[: end.start()], buffer[end.end() :]


def parse_request_head(head: bytes) -> RequestHead:
    """The request line and headers of a CONNECT (or any HTTP/1.x) request.

    :raises BadHead: not an HTTP/1.0 or 1.1 request head.
    """
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    match = _REQUEST_LINE.match(lines[0])
    if match is None:
        raise BadHead(f"not an HTTP/1.x request line: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            raise BadHead(f"malformed header line: {line[:80]!r}")
        headers.append((name.strip().decode("latin-1"), value.strip().decode("latin-1")))
    return RequestHead(
        match.group(1).decode(),
        match.group(2).decode("latin-1"),
        int(match.group(3)),
        tuple(headers),
    )


def parse_status(head: bytes) -> tuple[int, str]:
    """(status code, reason) of a response head.

    :raises BadHead: not an HTTP/1.x status line.
    """
    line = head.replace(b"\r\n", b"\n").split(b"\n")[0]
    match = _STATUS_LINE.match(line)
    if match is None:
        raise BadHead(f"not an HTTP/1.x status line: {line[:80]!r}")
    return int(match.group(1)), (match.group(2) or b"").decode("latin-1")


def connect_request(path: str = DEFAULT_RPC_PATH) -> bytes:
    """The head a Go GeeRPC client sends (vector 06)."""
    return f"CONNECT {path} HTTP/1.0\n\n".encode("latin-1")


# -- the client side ---------------------------------------------------------------


class _ConnectingProtocol(Protocol):
    """Sends the CONNECT head, reads the answer, then hands the connection to
    the real protocol (and every later byte and event with it)."""

    transport: Any

    def __init__(
        self,
        factory: IProtocolFactory,
        path: str,
        done: Deferred[IProtocol],
        reason: str = CONNECTED_REASON,
    ) -> None:
        self._factory = factory
        self._path = path
        self._reason = reason
        self._done = done
        self._buffer = b""
        self._inner: IProtocol | None = None

    def connectionMade(self) -> None:
        self.transport.write(connect_request(self._path))

    def dataReceived(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.dataReceived(data)
            return
        self._buffer += data
        try:
            split = split_head(self._buffer)
            if split is None:
                return
            head, rest = split
            status, reason = parse_status(head)
        except BadHead as error:
            self._fail(ConnectFailed(error))
            return
        if (status, reason) != (200, self._reason):
            # As Go's DialHTTP: the exact status text, or no GeeRPC server.
            self._fail(ConnectFailed(BadHead(f"unexpected HTTP response: {status} {reason}")))
            return
        inner = self._factory.buildProtocol(self.transport.getPeer())
        if inner is None:
            self._fail(ConnectFailed(BadHead("the protocol factory built nothing")))
            return
        self._inner = inner
        self._buffer = b""
        inner.makeConnection(self.transport)
        self._done.callback(inner)
        if rest:
            inner.dataReceived(rest)

    def _fail(self, error: Exception) -> None:
        self.transport.abortConnection()
        if not self._done.called:
            self._done.errback(error)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._inner is not None:
            self._inner.connectionLost(reason)
        elif not self._done.called:
            self._done.errback(ConnectFailed(reason.value))


@implementer(IStreamClientEndpoint)
class HTTPConnectEndpoint:
    """Connects through ``wrapped``, performs ``CONNECT path``, and fires with
    the protocol ``protocolFactory`` builds once the server said 200.

    Cancelling the Deferred (a connect timeout) aborts the connection, during
    the TCP connect or the CONNECT exchange alike.

    :param reason: the reason phrase the server's 200 must carry (GeeRPC's
        ``Connected to Gee RPC``; Go's ``net/rpc`` says ``Connected to Go RPC``).
    """

    def __init__(
        self,
        wrapped: IStreamClientEndpoint,
        path: str = DEFAULT_RPC_PATH,
        reason: str = CONNECTED_REASON,
    ) -> None:
        self._wrapped = wrapped
        self._path = path
        self._reason = reason

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        state: dict[str, Any] = {}

        def cancel(deferred: Deferred[IProtocol]) -> None:
            handshake = state.get("protocol")
            if handshake is not None and handshake.transport is not None:
                handshake.transport.abortConnection()
            connecting = state.get("connecting")
            if connecting is not None:
                connecting.cancel()

        done: Deferred[IProtocol] = Deferred(cancel)

        def build() -> _ConnectingProtocol:
            protocol = _ConnectingProtocol(protocolFactory, self._path, done, self._reason)
            state["protocol"] = protocol
            return protocol

        try:
            connecting = self._wrapped.connect(Factory.forProtocol(build))
        except Exception:  # an endpoint that raises instead of failing its Deferred
            return fail()
        state["connecting"] = connecting

        def connected(protocol: Any) -> None:
            state.pop("connecting", None)

        def failed(failure: Failure) -> None:
            state.pop("connecting", None)
            if not done.called:
                done.errback(failure)

        connecting.addCallbacks(connected, failed)
        return done
