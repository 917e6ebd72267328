"""
An in-memory TCP network on a :class:`~twisted.internet.task.Clock`: the real
``listenTCP``/``connectTCP`` code paths (so ``txgeerpc.connect`` with its
endpoints, HTTP CONNECT and connect timeout, and a server's one-port factory
run as in production), bytes moved by the clock, faults applied between the
two transports of each connection.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import (
    CannotListenError,
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    TimeoutError,
    UserError,
)
from twisted.internet.interfaces import (
    IConnector,
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    ITransport,
)
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from zope.interface import implementer

from ._faults import Faults, Flow

BUFFER_SIZE = 64 * 1024
"""A transport pauses its producer when its write buffer holds more than this
(Twisted's ``FileDescriptor.bufferSize``)."""


@implementer(ITransport, IConsumer, IPushProducer)
class MemoryTransport:
    """One end of an in-memory TCP connection.

    :ivar buffered: bytes written and not yet taken by the network.
    :ivar reading: False while the protocol has paused reading
        (``pauseProducing``) or is closing.
    :ivar producer_paused: the registered producer was told to pause because
        :attr:`buffered` passed :data:`BUFFER_SIZE`.
    """

    def __init__(self, connection: MemoryConnection, host: IPv4Address, peer: IPv4Address) -> None:
        self._connection = connection
        self._host = host
        self._peer = peer
        self._buffer: list[bytes] = []
        self.buffered = 0
        self.protocol: IProtocol | None = None
        self.producer: IPushProducer | None = None
        self.producer_paused = False
        self.reading = True
        self.disconnecting = False
        self.disconnected = False
        self.read_closed = False
        self.outgoing: Flow
        self.incoming: Flow

    # ITransport
    def write(self, data: bytes) -> None:
        if self.disconnecting or self.disconnected or not data:
            return
        self._buffer.append(bytes(data))
        self.buffered += len(data)
        self.outgoing.wake()
        if self.producer is not None and not self.producer_paused and self.buffered > BUFFER_SIZE:
            self.producer_paused = True
            self.producer.pauseProducing()

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if self.disconnecting or self.disconnected:
            return
        self.disconnecting = True
        self.reading = False
        self.outgoing.wake()

    def abortConnection(self) -> None:
        if not self.disconnected:
            self._connection.abort(self)

    def getPeer(self) -> IPv4Address:
        return self._peer

    def getHost(self) -> IPv4Address:
        return self._host

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def setTcpKeepAlive(self, enabled: bool) -> None:
        pass

    # IConsumer
    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError("a producer is already registered")
        self.producer = producer
        self.producer_paused = False
        if self.buffered > BUFFER_SIZE:
            self.producer_paused = True
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        self.producer = None
        if self.disconnecting:
            self.outgoing.wake()

    # IPushProducer: reading from the network
    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        if not self.disconnecting and not self.disconnected:
            self.reading = True
            self.incoming.wake()

    def stopProducing(self) -> None:
        self.loseConnection()

    # The network's side: this transport as the Source of its outgoing flow
    # and the Sink of its incoming one.
    def pull(self, room: int) -> tuple[bytes, bool]:
        if self.disconnected:
            return b"", False
        data = b"".join(self._buffer)
        taken, rest = data[:room], data[room:]
        self._buffer = [rest] if rest else []
        self.buffered = len(rest)
        if rest:
            return taken, False
        # Empty: as Twisted's doWrite, a paused producer is resumed first,
        # and a closing connection closes only if none is waiting.
        if self.producer is not None and self.producer_paused:
            self.producer_paused = False
            self.producer.resumeProducing()
            return taken, False
        if self.disconnecting and not self.buffered:
            self._connection.closed(self)
            return taken, True
        return taken, False

    def ready(self) -> bool:
        # A closed end takes what still arrives and drops it, so that the
        # peer's buffer drains and the peer can close too.
        return self.disconnected or (self.reading and not self.read_closed)

    def push(self, data: bytes) -> None:
        if not self.disconnected:
            assert self.protocol is not None
            self.protocol.dataReceived(data)

    def end(self) -> None:
        if self.disconnected:
            return
        self.read_closed = True
        protocol = self.protocol
        if IHalfCloseableProtocol.providedBy(protocol):
            protocol.readConnectionLost()  # type: ignore[union-attr]
        else:
            self._connection.closed(self)

    def connection_lost(self, reason: Failure) -> None:
        assert self.protocol is not None
        self.protocol.connectionLost(reason)


class MemoryConnection:
    """One in-memory connection: a client and a server transport, and a flow
    each way under the listener's :class:`Faults`.

    :ivar client: the client's transport.
    :ivar server: the server's transport.
    :ivar to_server: the flow from client to server.
    :ivar to_client: the flow from server to client.
    """

    def __init__(
        self,
        network: MemoryNetwork,
        faults: Faults,
        client_address: IPv4Address,
        server_address: IPv4Address,
    ) -> None:
        self._network = network
        self._faults = faults
        clock = network.clock
        self.client = MemoryTransport(self, client_address, server_address)
        self.server = MemoryTransport(self, server_address, client_address)
        self.to_server = Flow(faults.to_server, clock, self.client, self.server, self.reset)
        self.to_client = Flow(faults.to_client, clock, self.server, self.client, self.reset)
        self.client.outgoing = self.server.incoming = self.to_server
        self.server.outgoing = self.client.incoming = self.to_client
        faults._connections.add(self)
        network._connections.add(self)

    @property
    def live(self) -> bool:
        """True until both sides have seen the connection lost."""
        return not (self.client.disconnected and self.server.disconnected)

    def closed(self, transport: MemoryTransport) -> None:
        """``transport`` closes cleanly (its own close, or the peer's end read
        by a protocol that cannot half-close)."""
        self._lose(transport, Failure(ConnectionDone()))

    def abort(self, transport: MemoryTransport) -> None:
        """``transport`` aborts: it sees ``ConnectionAborted``, the peer a reset."""
        peer = self.server if transport is self.client else self.client
        self._lose(transport, Failure(ConnectionAborted()))
        self._lose(peer, Failure(ConnectionLost("Connection reset by peer")))

    def reset(self) -> None:
        """Both sides see the connection lost (a reset in the network)."""
        for transport in (self.client, self.server):
            self._lose(transport, Failure(ConnectionLost("Connection reset by peer")))

    def _lose(self, transport: MemoryTransport, reason: Failure) -> None:
        if transport.disconnected:
            return
        transport.disconnected = True
        transport.reading = False
        if not reason.check(ConnectionDone) or not self.live:
            # A reset (nothing more arrives either way), or both sides closed.
            self.to_server.close()
            self.to_client.close()
        if not self.live:
            self._faults._connections.discard(self)
            self._network._connections.discard(self)
        # As Twisted, connectionLost comes in a later turn.
        self._network.clock.callLater(0, transport.connection_lost, reason)


@implementer(IListeningPort)
class MemoryPort:
    """A listening port of a :class:`MemoryNetwork`."""

    def __init__(
        self,
        network: MemoryNetwork,
        address: IPv4Address,
        factory: IProtocolFactory,
        faults: Faults,
    ) -> None:
        self._network = network
        self._address = address
        self.factory = factory
        self.faults = faults
        self.listening = False

    def startListening(self) -> None:
        if not self.listening:
            self.listening = True
            self.factory.doStart()
            self._network._ports[(self._address.host, self._address.port)] = self

    def stopListening(self) -> Deferred[None]:
        if self.listening:
            self.listening = False
            del self._network._ports[(self._address.host, self._address.port)]
            self.factory.doStop()
        return succeed(None)

    def getHost(self) -> IPv4Address:
        return self._address

    @property
    def address(self) -> str:
        """``host:port``, to put after ``tcp@`` or ``http@``."""
        return f"{self._address.host}:{self._address.port}"


@implementer(IConnector)
class MemoryConnector:
    """A connection attempt; it completes (or is refused) in the next turn."""

    def __init__(
        self,
        network: MemoryNetwork,
        host: str,
        port: int,
        factory: Any,
        timeout: float,
    ) -> None:
        self._network = network
        self._destination = IPv4Address("TCP", host, port)
        self.factory = factory
        self.transport: MemoryTransport | None = None
        self._timeout = timeout
        self._calls: list[IDelayedCall] = []
        self.state = "connecting"
        factory.doStart()
        if timeout:  # as Twisted's connectors: scheduled when connecting starts
            self._calls.append(
                network.clock.callLater(timeout, self._failed, Failure(TimeoutError()))
            )
        factory.startedConnecting(self)
        self._calls.append(network.clock.callLater(0, self._attempt))

    def _attempt(self) -> None:
        port = self._network._listener(self._destination.host, self._destination.port)
        if port is None:
            self._failed(Failure(ConnectionRefusedError()))
            return
        if port.faults.to_server.blackhole:
            return  # the SYN is lost: the attempt waits for its timeout
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls.clear()
        self.state = "connected"
        self.transport = self._network._accept(self, port)

    def _failed(self, reason: Failure) -> None:
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls.clear()
        if self.state != "connecting":
            return
        self.state = "disconnected"
        self.factory.clientConnectionFailed(self, reason)
        self.factory.doStop()

    def stopConnecting(self) -> None:
        if self.state == "connecting":
            self._failed(Failure(UserError()))

    def disconnect(self) -> None:
        if self.state == "connecting":
            self.stopConnecting()
        elif self.transport is not None:
            self.transport.loseConnection()

    def connect(self) -> None:
        raise NotImplementedError("in-memory connectors do not reconnect")

    def getDestination(self) -> IPv4Address:
        return self._destination


class NetworkReactor(MemoryReactor):
    """A memory reactor whose time is the network's clock and whose TCP is the
    network (other methods as :class:`twisted.internet.testing.MemoryReactor`)."""

    def __init__(self, network: MemoryNetwork) -> None:
        super().__init__()
        self._network = network

    # IReactorTime, on the network's clock
    def seconds(self) -> float:
        return self._network.clock.seconds()

    def callLater(self, delay: float, callable: Any, *args: Any, **kw: Any) -> IDelayedCall:
        return self._network.clock.callLater(delay, callable, *args, **kw)

    def getDelayedCalls(self) -> Any:
        return self._network.clock.getDelayedCalls()

    # IReactorTCP, on the network
    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> MemoryPort:
        self.tcpServers.append((port, factory, backlog, interface))
        return self._network.listen(factory, port=port, host=interface or "0.0.0.0")

    def connectTCP(
        self,
        host: str,
        port: int,
        factory: Any,
        timeout: float = 30,
        bindAddress: Any = None,
    ) -> MemoryConnector:
        self.tcpClients.append((host, port, factory, timeout, bindAddress))  # type: ignore[arg-type]
        connector = MemoryConnector(self._network, host, port, factory, timeout)
        self.connectors.append(connector)  # type: ignore[arg-type]
        return connector


class MemoryNetwork:
    """TCP in memory, on a clock.

    ``network.reactor`` provides ``listenTCP``, ``connectTCP`` and the clock,
    so servers listen and clients connect with the code they use in
    production (endpoints, ``txgeerpc.connect``, a server's
    :meth:`~txgeerpc.Server.port_factory`)::

        network = MemoryNetwork()
        server = Server(network.clock)
        port = network.listen(server.port_factory())   # or network.reactor.listenTCP
        d = connect(network.reactor, f"tcp@{port.address}", connect_timeout=5)
        network.flush()

    Bytes move when the clock runs: :meth:`flush` runs everything due now,
    :meth:`advance` moves time in steps, running what falls due on the way.
    Each listener has :class:`Faults` (the network's :attr:`faults` unless
    given), applied between the client's and the server's transports.

    :ivar clock: the clock everything runs on (the reactor's time too).
    :ivar reactor: a memory reactor for ``listenTCP``/``connectTCP``.
    :ivar faults: the faults of listeners that were given none.
    """

    def __init__(self, clock: Clock | None = None, *, faults: Faults | None = None) -> None:
        self.clock = clock if clock is not None else Clock()
        self.faults = faults if faults is not None else Faults()
        self.reactor = NetworkReactor(self)
        self._ports: dict[tuple[str, int], MemoryPort] = {}
        self._connections: set[MemoryConnection] = set()
        self._next_port = 30000
        self._next_client_port = 50000

    def listen(
        self,
        factory: IProtocolFactory,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        faults: Faults | None = None,
    ) -> MemoryPort:
        """Listen with ``factory`` (port 0: a free one); connections to it are
        under ``faults`` (the network's by default)."""
        if port == 0:
            while any(p == self._next_port for _, p in self._ports):
                self._next_port += 1
            port = self._next_port
            self._next_port += 1
        if (host, port) in self._ports:
            raise CannotListenError(host, port, OSError("address already in use"))
        listening = MemoryPort(
            self,
            IPv4Address("TCP", host, port),
            factory,
            faults if faults is not None else self.faults,
        )
        listening.startListening()
        return listening

    def _listener(self, host: str, port: int) -> MemoryPort | None:
        if host == "localhost":
            host = "127.0.0.1"
        return self._ports.get((host, port)) or self._ports.get(("0.0.0.0", port))

    def _accept(self, connector: MemoryConnector, port: MemoryPort) -> MemoryTransport:
        client_address = IPv4Address("TCP", "127.0.0.1", self._next_client_port)
        self._next_client_port += 1
        connection = MemoryConnection(self, port.faults, client_address, port.getHost())
        server = port.factory.buildProtocol(client_address)
        client = connector.factory.buildProtocol(port.getHost())
        connection.server.protocol = server
        connection.client.protocol = client
        if server is None or client is None:  # refused by a factory: closed at once
            connection.abort(connection.server if server is None else connection.client)
            return connection.client
        server.makeConnection(connection.server)
        client.makeConnection(connection.client)
        return connection.client

    @property
    def connections(self) -> list[MemoryConnection]:
        """Connections not yet lost on both sides."""
        return list(self._connections)

    def flush(self) -> None:
        """Run everything due now (bytes, closes, zero-delay calls) until
        nothing is; time does not move."""
        clock = self.clock
        while any(call.getTime() <= clock.seconds() for call in clock.getDelayedCalls()):
            clock.advance(0)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, stopping at every delayed call
        that falls due on the way so each runs at its own time."""
        clock = self.clock
        end = clock.seconds() + seconds
        self.flush()
        while True:
            due = [call.getTime() for call in clock.getDelayedCalls()]
            step = min((t for t in due if t <= end), default=None)
            if step is None:
                clock.advance(end - clock.seconds())
                self.flush()
                return
            clock.advance(step - clock.seconds())
            self.flush()

    def close(self) -> None:
        """Reset every connection, stop every listener and deliver it all;
        nothing of the network is left on the clock."""
        for connection in list(self._connections):
            connection.reset()
        for port in list(self._ports.values()):
            port.stopListening()
        self.flush()


__all__ = ["MemoryConnection", "MemoryNetwork", "MemoryPort", "MemoryTransport"]
