"""The test kit itself: the in-memory network runs the production paths
(endpoints, HTTP CONNECT, connect timeouts, the one-port sniffer), and
leaves nothing behind."""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

import txgeerpc.testing
from txgeerpc import Client, Server, connect
from txgeerpc.errors import ConnectFailed, ConnectTimeout
from txgeerpc.examples import Args
from txgeerpc.testing import DirectionFaults, Faults, MemoryNetwork, connect_in_memory

from ._helpers import checked_clock, example_server


class _Recorder(Protocol):
    """Sends ``request`` and records everything until the connection ends."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.chunks: list[int] = []
        self.reason: Failure | None = None

    def connectionMade(self) -> None:
        self.transport.write(self.request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.chunks.append(len(data))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason


class MemoryNetworkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.network = MemoryNetwork(self.clock)
        self.server = example_server(self.clock)
        self.port = self.network.listen(self.server.port_factory())
        self.addCleanup(self.network.close)

    def connected(self, address: str, **options: Any) -> Client:
        d = connect(self.network.reactor, address, **options)
        self.network.flush()
        return self.successResultOf(d)

    def test_tcp_and_http_connect_reach_the_one_port_factory(self) -> None:
        for scheme in ("tcp", "http"):
            client = self.connected(f"{scheme}@{self.port.address}", connect_timeout=5)
            d = client.call("Foo.Sleep", Args(2, 3), timeout=5)
            self.network.advance(1.9)
            self.assertNoResult(d)
            self.network.advance(0.1)
            self.assertEqual(self.successResultOf(d), 5)
            closed = client.close()
            self.network.flush()
            self.assertIsNone(self.successResultOf(closed))
            self.assertEqual((self.server.connections, self.network.connections), (0, []))
        self.assertEqual(self.server.services["Foo"].methods["Sleep"].stats.calls, 2)

    def test_plain_http_gets_the_debug_page(self) -> None:
        endpoint = TCP4ClientEndpoint(self.network.reactor, "127.0.0.1", self.port.getHost().port)
        recorder = _Recorder(b"GET /debug/geerpc HTTP/1.0\r\n\r\n")
        connectProtocol(endpoint, recorder)
        self.network.flush()
        self.assertTrue(recorder.received.startswith(b"HTTP/1.0 200 OK\r\n"))
        self.assertIn(b"Foo", recorder.received)
        assert recorder.reason is not None
        self.assertTrue(recorder.reason.check(ConnectionDone))

    def test_a_slow_reader_without_interval_reads_a_little_per_turn(self) -> None:
        self.network.faults.to_client.slow_reader(10)
        endpoint = TCP4ClientEndpoint(self.network.reactor, "127.0.0.1", self.port.getHost().port)
        recorder = _Recorder(b"GET /debug/geerpc HTTP/1.0\r\n\r\n")
        connectProtocol(endpoint, recorder)
        self.network.flush()
        self.assertTrue(recorder.received.startswith(b"HTTP/1.0 200 OK\r\n"))
        self.assertGreater(len(recorder.chunks), 10)
        self.assertEqual(max(recorder.chunks), 10)
        self.assertIsNotNone(recorder.reason)

    def test_listening_through_an_endpoint_string(self) -> None:
        d = serverFromString(self.network.reactor, "tcp:7001:interface=127.0.0.1").listen(
            self.server.port_factory()
        )
        port = self.successResultOf(d)
        client = self.connected("tcp@localhost:7001")
        d = client.call("Arith.Echo", "through the endpoint")
        self.network.flush()
        self.assertEqual(self.successResultOf(d), "through the endpoint")
        client.close()
        self.successResultOf(port.stopListening())
        failed = connect(self.network.reactor, "tcp@127.0.0.1:7001")
        self.network.flush()
        self.assertIsInstance(
            self.failureResultOf(failed, ConnectFailed).value.reason, ConnectionRefusedError
        )

    def test_nothing_listening_is_refused(self) -> None:
        d = connect(self.network.reactor, "http@127.0.0.1:1", connect_timeout=5)
        self.network.flush()
        self.assertIsInstance(
            self.failureResultOf(d, ConnectFailed).value.reason, ConnectionRefusedError
        )

    def test_a_lost_syn_runs_into_the_connect_timeout(self) -> None:
        self.network.faults.to_server.blackhole = True
        d = connect(self.network.reactor, f"tcp@{self.port.address}", connect_timeout=5)
        self.network.advance(4.9)
        self.assertNoResult(d)
        self.network.advance(0.1)
        # The TCP connector has the same timeout and its timer fires first, as
        # on a real reactor: connect() reports it as what it documents.
        failure = self.failureResultOf(d, ConnectTimeout)
        self.assertEqual(failure.value.timeout, 5)

    def test_the_server_handshake_timeout_holds_for_a_silent_client(self) -> None:
        endpoint = TCP4ClientEndpoint(self.network.reactor, "127.0.0.1", self.port.getHost().port)
        recorder = _Recorder(b"")
        connectProtocol(endpoint, recorder)
        self.network.advance(10)
        assert recorder.reason is not None
        self.assertEqual(len(self.network.connections), 0)

    def test_close_resets_what_is_left(self) -> None:
        client = self.connected(f"tcp@{self.port.address}")
        d = client.call("Foo.Sleep", Args(60))
        self.network.flush()
        self.network.close()
        self.failureResultOf(d)
        self.assertEqual((self.server.connections, self.network.connections), (0, []))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_port_per_address(self) -> None:
        from twisted.internet.error import CannotListenError

        self.assertRaises(
            CannotListenError,
            self.network.listen,
            self.server.port_factory(),
            port=self.port.getHost().port,
        )


class FaultsDescriptionTests(SynchronousTestCase):
    def test_values_are_checked(self) -> None:
        faults = Faults()
        self.assertRaises(ValueError, setattr, faults.to_client, "latency", -1)
        self.assertRaises(ValueError, setattr, faults.to_client, "read_limit", 0)
        self.assertRaises(ValueError, setattr, faults.to_server, "cut_after", -1)
        self.assertRaises(ValueError, DirectionFaults, read_interval=-1)

    def test_clear(self) -> None:
        faults = Faults()
        faults.pause()
        faults.to_client.slow_reader(10, 0.5)
        faults.to_server.blackhole = True
        faults.to_server.latency = 2
        faults.to_server.cut_after = 3
        faults.clear()
        self.assertEqual(repr(faults.to_server), repr(DirectionFaults()))
        self.assertEqual(repr(faults.to_client), repr(DirectionFaults()))


class ConnectInMemoryTests(SynchronousTestCase):
    def test_long_batches_are_answered_without_the_server_clock_moving(self) -> None:
        clock = checked_clock(self)
        pair = connect_in_memory(example_server(clock), clock=clock)
        calls = [pair.client.call("Arith.Multiply", Args(n, 3)) for n in range(100)]
        pair.flush()
        self.assertEqual([self.successResultOf(d) for d in calls], [3 * n for n in range(100)])
        self.assertEqual(clock.seconds(), 0)
        pair.close()


class ExportsTests(SynchronousTestCase):
    def test_public_names(self) -> None:
        self.assertEqual(
            sorted(txgeerpc.testing.__all__),
            [
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
            ],
        )
        for name in txgeerpc.testing.__all__:
            self.assertTrue(hasattr(txgeerpc.testing, name), name)

    def test_server_is_the_real_one(self) -> None:
        self.assertIs(Server, txgeerpc.Server)
