"""
The loopback TCP carrier of :class:`Faults`: a proxy listening on 127.0.0.1
that forwards each connection to a target endpoint, bytes shaped by the same
:class:`~._faults.Flow` as in memory, timed on the reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IListeningPort, IPushProducer, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from ._faults import WINDOW, Faults, Flow


@implementer(IPushProducer)
class _Side(Protocol):
    """One socket of a proxied connection: the Source of the flow it reads
    into and the Sink of the flow it writes out."""

    transport: Any

    def __init__(self, link: _Link, on_connect: Any = None) -> None:
        self._link = link
        self._on_connect = on_connect
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._ended = False
        self._read_paused = False
        self._write_paused = False
        self.outgoing: Flow | None = None  # the flow this side reads into
        self.lost: Deferred[None] = Deferred()
        self.connected = False

    def connectionMade(self) -> None:
        self.connected = True
        self.transport.registerProducer(self, True)
        if self._on_connect is not None:
            self._on_connect()

    def dataReceived(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > WINDOW and not self._read_paused:
            self._read_paused = True  # push back on the sender
            self.transport.pauseProducing()
        if self.outgoing is not None:
            self.outgoing.wake()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self._link.side_lost(self, reason)
        self.lost.callback(None)

    # Source
    def pull(self, room: int) -> tuple[bytes, bool]:
        data = b"".join(self._buffer)
        taken, rest = data[:room], data[room:]
        self._buffer = [rest] if rest else []
        self._buffered = len(rest)
        if self._read_paused and self._buffered <= WINDOW and self.connected:
            self._read_paused = False
            self.transport.resumeProducing()
        return taken, self._ended and not rest

    def end_of_input(self) -> None:
        self._ended = True
        if self.outgoing is not None:
            self.outgoing.wake()

    # Sink
    def ready(self) -> bool:
        return not self._write_paused or not self.connected

    def push(self, data: bytes) -> None:
        if self.connected:
            self.transport.write(data)

    def end(self) -> None:
        if self.connected:
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    # IPushProducer: the transport's write buffer is full / drained.
    def pauseProducing(self) -> None:
        self._write_paused = True

    def resumeProducing(self) -> None:
        self._write_paused = False
        flow = self._link.flow_into(self)
        if flow is not None:
            flow.wake()

    def stopProducing(self) -> None:
        pass


class _Link:
    """One proxied connection: the accepted side, the side towards the target."""

    def __init__(self, proxy: FaultProxy, faults: Faults) -> None:
        self._proxy = proxy
        self._faults = faults
        self.client = _Side(self, self.start)
        self.server = _Side(self)
        self.to_server: Flow | None = None
        self.to_client: Flow | None = None
        self._done = False

    def start(self) -> None:
        """The accepted side is connected: connect to the target."""
        self.client.transport.pauseProducing()  # nothing to forward to yet
        connecting = self._proxy.target.connect(Factory.forProtocol(lambda: self.server))

        def failed(failure: Failure) -> None:
            if self.client.connected:
                self.client.transport.abortConnection()

        connecting.addCallbacks(lambda _: self._connected(), failed)

    def _connected(self) -> None:
        if not self.client.connected:
            self.server.transport.abortConnection()
            return
        reactor = self._proxy.reactor
        self.to_server = Flow(self._faults.to_server, reactor, self.client, self.server, self.reset)
        self.to_client = Flow(self._faults.to_client, reactor, self.server, self.client, self.reset)
        self.client.outgoing = self.to_server
        self.server.outgoing = self.to_client
        self._faults._connections.add(self)
        self.client.transport.resumeProducing()
        self.to_server.wake()

    def flow_into(self, side: _Side) -> Flow | None:
        return self.to_server if side is self.server else self.to_client

    def side_lost(self, side: _Side, reason: Failure) -> None:
        other = self.server if side is self.client else self.client
        if reason.check(ConnectionDone) and self.to_server is not None:
            side.end_of_input()  # forwarded after the bytes before it
        elif other.connected:
            self._reset_flows()
            other.transport.abortConnection()
        if not self.client.connected and not self.server.connected:
            self._reset_flows()
            self._proxy._links.discard(self)

    def reset(self) -> None:
        """Abort both sockets: both peers see a reset."""
        self._reset_flows()
        for side in (self.client, self.server):
            if side.connected:
                side.transport.abortConnection()

    def _reset_flows(self) -> None:
        self._faults._connections.discard(self)
        for flow in (self.to_server, self.to_client):
            if flow is not None:
                flow.close()


class FaultProxy:
    """A loopback TCP proxy that forwards connections to ``target`` under
    :attr:`faults` (bytes shaped on the reactor's clock)::

        proxy = FaultProxy(reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        await proxy.start()
        client = await connect(reactor, f"tcp@{proxy.address}")
        proxy.faults.to_client.blackhole = True
        ...
        await proxy.stop()

    :ivar faults: what goes wrong, changeable while connections are live.
    """

    def __init__(
        self,
        reactor: Any,
        target: IStreamClientEndpoint,
        faults: Faults | None = None,
    ) -> None:
        self.reactor = reactor
        self.target = target
        self.faults = faults if faults is not None else Faults()
        self._port: IListeningPort | None = None
        self._links: set[_Link] = set()

    async def start(self) -> str:
        """Listen on 127.0.0.1 (a free port); returns :attr:`address`."""
        endpoint = TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1")
        self._port = await endpoint.listen(Factory.forProtocol(self._accepted))
        return self.address

    @property
    def address(self) -> str:
        """``127.0.0.1:port``, to put after ``tcp@`` or ``http@``."""
        assert self._port is not None, "start() the proxy first"
        return f"127.0.0.1:{self._port.getHost().port}"  # type: ignore[attr-defined]

    def _accepted(self) -> _Side:
        link = _Link(self, self.faults)
        self._links.add(link)
        return link.client

    async def stop(self) -> None:
        """Stop listening, reset every connection and wait until all are gone."""
        if self._port is not None:
            await self._port.stopListening()  # type: ignore[misc]
            self._port = None
        waits = []
        for link in list(self._links):
            link.reset()
            for side in (link.client, link.server):
                if side.connected:
                    waits.append(side.lost)
        await DeferredList(waits)
