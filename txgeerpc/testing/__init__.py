"""
Test helpers for code that uses txgeerpc, with time and bytes under the
test's control:

- :class:`MemoryNetwork`: TCP in memory on a clock; a real :class:`Server`
  listens with its one-port factory and the real :func:`txgeerpc.connect`
  (endpoints, HTTP CONNECT, connect timeout) connects to it;
- :class:`Faults`: latency, blackhole, pause, slow reader, cut and reset, one
  description applied in memory (a listener's faults) or over loopback TCP
  (:class:`FaultProxy`);
- :func:`connect_in_memory`: a client on one server connection through
  ``twisted.test.iosim``, the shortest way for plain call tests;
- :class:`FakeEtcd`: etcd in memory;
- :class:`CertificateAuthority`: TLS certificates for tests (a CA, server
  and client certificates, expired ones), made with ``cryptography``.

Example::

    clock = Clock()
    server = Server(clock)
    server.register(MyService())
    pair = connect_in_memory(server, clock=clock)
    d = pair.client.call("MyService.Method", 42)
    pair.flush()
    assert self.successResultOf(d) == ...
    pair.close()
"""

from __future__ import annotations

import attrs
from twisted.internet.task import Clock
from twisted.test.iosim import IOPump, connect, makeFakeClient, makeFakeServer

from .._client_protocol import ClientProtocol
from .._server_protocol import ServerProtocol
from .._wire import Option, seconds_to_ns
from ..client import Client
from ..etcd import FakeEtcd
from ..server import Server
from ._certs import CertificateAuthority, IssuedCertificate
from ._faults import DirectionFaults, Faults
from ._memory import MemoryConnection, MemoryNetwork, MemoryPort, MemoryTransport
from ._proxy import FaultProxy


@attrs.define
class InMemoryConnection:
    """A :class:`Client` connected to a :class:`Server` through an ``iosim`` pump.

    :ivar client: the connected client.
    :ivar server_protocol: the server side of the connection.
    :ivar pump: moves bytes; :meth:`flush` moves all of them.
    """

    client: Client
    client_protocol: ClientProtocol
    server_protocol: ServerProtocol
    pump: IOPump

    def flush(self) -> None:
        """Deliver every byte written so far, in both directions, letting the
        server take every turn it has queued (it answers long batches of
        requests in turns).  Never advances any clock."""
        while True:
            self.pump.flush()
            # The server answers long batches in turns, a zero-delay call on
            # its clock: run it as a reactor would (time does not move).
            clock = self.server_protocol.factory.clock
            advance = getattr(clock, "advance", None)
            if advance is None or not any(
                call.getTime() <= clock.seconds() for call in clock.getDelayedCalls()
            ):
                return
            advance(0)

    def close(self) -> None:
        """Close the client and deliver the close to both sides."""
        self.client.close()
        self.pump.flush()


def connect_in_memory(
    server: Server,
    *,
    codec: str = "application/gob",
    handle_timeout: float | None = None,
    clock: Clock | None = None,
    max_message_size: int | None = None,
) -> InMemoryConnection:
    """Connect a new client to ``server`` in memory (no sockets, no reactor).

    :param clock: the client's clock for call timeouts (a fresh Clock if not
        given; the server uses its own).
    """
    chosen = server.codecs.get(codec)
    option = Option(codec_type=chosen.name, handle_timeout_ns=seconds_to_ns(handle_timeout))
    client_protocol = ClientProtocol(
        chosen,
        option,
        clock if clock is not None else Clock(),
        max_message_size or server.settings.max_message_size,
    )
    server_protocol = server.factory().buildProtocol(None)  # type: ignore[arg-type]
    pump = connect(
        server_protocol,
        makeFakeServer(server_protocol),
        client_protocol,
        makeFakeClient(client_protocol),
        greet=False,
    )
    pump.flush()
    return InMemoryConnection(Client(client_protocol), client_protocol, server_protocol, pump)


__all__ = [
    "CertificateAuthority",
    "DirectionFaults",
    "FakeEtcd",
    "FaultProxy",
    "Faults",
    "InMemoryConnection",
    "IssuedCertificate",
    "MemoryConnection",
    "MemoryNetwork",
    "MemoryPort",
    "MemoryTransport",
    "connect_in_memory",
]
