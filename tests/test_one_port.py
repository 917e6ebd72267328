"""
One port for every protocol: raw GeeRPC, HTTP CONNECT and plain HTTP, told
apart by the first bytes (vectors 06, 08 and 19), and the client side of
CONNECT.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txgeerpc._http_connect import CONNECTED, HTTPConnectEndpoint, connect_request
from txgeerpc._one_port import Kind, sniff
from txgeerpc.errors import ConnectFailed

from ._helpers import checked_clock, example_server, vector

OPTION = (
    b'{"MagicNumber":3927900,"CodecType":"application/gob",'
    b'"ConnectTimeout":10000000000,"HandleTimeout":0}\n'
)


class SniffTests(SynchronousTestCase):
    def test_every_prefix_waits_then_decides(self) -> None:
        for start, kind in [
            (OPTION, Kind.RPC),
            (b"  \r\n" + OPTION, Kind.RPC),
            (b"CONNECT /_geeprc_ HTTP/1.0\n\n", Kind.CONNECT),
            (b"GET /debug/geerpc HTTP/1.1\r\n", Kind.HTTP),
            (b"POST /x HTTP/1.1\r\n", Kind.HTTP),
        ]:
            decided = [sniff(start[:cut]) for cut in range(len(start) + 1)]
            first = next(index for index, found in enumerate(decided) if found is not None)
            self.assertEqual(set(decided[first:]), {kind}, start)
            self.assertEqual(set(decided[:first]), {None}, start)

    def test_garbage(self) -> None:
        for garbage in [b"\x00\x01", b"get / HTTP/1.1", b" " * 64, b"ABCDEFGHIJKLMNOPQ"]:
            self.assertEqual(sniff(garbage), Kind.GARBAGE, garbage)
        # Unknown methods are HTTP all the same: the site answers them (501).
        self.assertEqual(sniff(b"PROPFIND / HTTP/1.1"), Kind.HTTP)


class ServerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.server = example_server(self.clock)
        self.factory = self.server.port_factory(debug_path=None)

    def connect(self) -> tuple[Any, StringTransport]:
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)

        def close() -> None:
            # StringTransport never reports the end: do it, as a real one would.
            if protocol in self.factory.open:
                transport.disconnected = True
                protocol.connectionLost()

        self.addCleanup(close)
        return protocol, transport

    def test_vector_06_replay_gets_the_references_bytes(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(vector("06-gob-http-connect.c2s.bin"))
        self.assertEqual(transport.value(), vector("06-gob-http-connect.s2c.bin"))
        self.assertEqual(
            self.flushLoggedErrors(ZeroDivisionError), []
        )  # a domain error: no traceback

    def test_connect_head_option_and_request_in_one_segment(self) -> None:
        # Vector 19: the reference loses everything after the head; we answer.
        data = vector("19-coalesced-connect.c2s.bin")
        expected = CONNECTED + vector("01-gob-tcp.s2c.bin")[:75]
        for cut in range(1, len(data)):
            protocol, transport = self.connect()
            protocol.dataReceived(data[:cut])
            protocol.dataReceived(data[cut:])
            self.assertEqual(transport.value(), expected, f"split at {cut}")

    def test_crlf_http_11_and_headers(self) -> None:
        protocol, transport = self.connect()
        head = b"CONNECT /_geeprc_ HTTP/1.1\r\nHost: example\r\nX-Any: 1\r\n\r\n"
        protocol.dataReceived(head + vector("01-gob-tcp.c2s.bin")[:217])
        self.assertEqual(transport.value(), CONNECTED + vector("01-gob-tcp.s2c.bin")[:75])

    def test_raw_stream_on_the_same_port(self) -> None:
        protocol, transport = self.connect()
        data = vector("01-gob-tcp.c2s.bin")
        for index in range(len(data)):
            protocol.dataReceived(data[index : index + 1])
        self.assertEqual(transport.value(), vector("01-gob-tcp.s2c.bin"))
        self.assertEqual(
            self.flushLoggedErrors(ZeroDivisionError), []
        )  # a domain error: no traceback

    def test_other_methods_on_the_rpc_path_get_405(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(vector("08-http-get-rpc-path.c2s.bin"))
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n"), answer)
        self.assertIn(b"content-type: text/plain; charset=utf-8", answer.lower())
        self.assertTrue(answer.endswith(b"\r\n\r\n405 must CONNECT\n"), answer)

    def test_http_request_split_anywhere(self) -> None:
        request = vector("08-http-get-rpc-path.c2s.bin")
        for cut in range(1, len(request)):
            protocol, transport = self.connect()
            protocol.dataReceived(request[:cut])
            protocol.dataReceived(request[cut:])
            answer = transport.value()
            self.assertTrue(answer.startswith(b"HTTP/1.1 405 "), f"split at {cut}")
            self.assertTrue(answer.endswith(b"405 must CONNECT\n"), f"split at {cut}")

    def test_connect_elsewhere_is_404(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"CONNECT /elsewhere HTTP/1.0\n\n")
        self.assertEqual(transport.value(), b"HTTP/1.0 404 Not Found\r\n\r\n")
        self.assertTrue(transport.disconnecting)

    def test_silent_or_slow_peers_are_dropped_at_the_deadline(self) -> None:
        timeout = self.server.settings.handshake_timeout
        for first in [b"", b"CONN", b"CONNECT /_geeprc_ HTTP/1.0\n"]:
            protocol, transport = self.connect()
            protocol.dataReceived(first)
            self.clock.advance(timeout - 0.001)
            self.assertFalse(transport.disconnecting, first)
            self.clock.advance(0.001)
            self.assertTrue(transport.disconnecting, first)
            self.assertEqual(transport.value(), b"")

    def test_a_slow_http_head_is_dropped_at_the_deadline(self) -> None:
        timeout = self.server.settings.handshake_timeout
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /debug/geerpc HTTP/1.1\r\n")
        for _ in range(3):
            self.clock.advance(timeout / 4)
            protocol.dataReceived(b"X-Slow: 1\r\n")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(timeout / 4)
        self.assertTrue(transport.disconnecting)

    def test_whitespace_before_connect(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"\r\n" + vector("19-coalesced-connect.c2s.bin"))
        self.assertEqual(transport.value(), CONNECTED + vector("01-gob-tcp.s2c.bin")[:75])

    def test_a_refused_connection_reads_nothing_more(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"CONNECT /nope HTTP/1.0\n\n")
        transport.clear()
        protocol.dataReceived(vector("19-coalesced-connect.c2s.bin"))
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.server.connections, 0)

    def test_a_half_close_still_gets_every_reply(self) -> None:
        # Go answers what it read, then closes, when the client stops sending.
        protocol, transport = self.connect()
        protocol.dataReceived(vector("06-gob-http-connect.c2s.bin"))
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), vector("06-gob-http-connect.s2c.bin"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            self.flushLoggedErrors(ZeroDivisionError), []
        )  # a domain error: no traceback

    def test_a_half_close_waits_for_running_requests(self) -> None:
        protocol, transport = self.connect()
        data = vector("03-gob-handle-timeout.c2s.bin")  # Foo.Sleep{1}, HandleTimeout 250ms, ...
        protocol.dataReceived(data)
        protocol.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.25)
        self.assertTrue(transport.disconnecting)
        self.assertIn(b"expect within 250ms", transport.value())

    def test_garbage_is_closed(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"\x16\x03\x01\x00")  # a TLS hello
        self.assertTrue(transport.disconnecting)


class PortSiteTests(SynchronousTestCase):
    def test_the_default_limit(self) -> None:
        clock = checked_clock(self)
        self.assertEqual(example_server(clock).port_factory().site.max_body, 65536)


class _Wrapped:
    """A client endpoint whose connection is a StringTransport."""

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.protocol: IProtocol | None = None

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        self.protocol = protocol
        protocol.makeConnection(self.transport)
        return succeed(protocol)


@implementer(IProtocol)
class _Recorder:
    def __init__(self) -> None:
        self.data = b""
        self.transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any) -> None:
        pass

    def connectionMade(self) -> None:
        pass


class _RecorderFactory:
    def __init__(self) -> None:
        self.built: list[_Recorder] = []

    def buildProtocol(self, addr: Any) -> _Recorder:
        self.built.append(_Recorder())
        return self.built[-1]

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass


class ClientEndpointTests(SynchronousTestCase):
    def test_the_protocol_gets_the_connection_after_the_200_line(self) -> None:
        wrapped = _Wrapped()
        factory = _RecorderFactory()
        d = HTTPConnectEndpoint(wrapped).connect(factory)  # type: ignore[arg-type]
        self.assertEqual(wrapped.transport.value(), connect_request())
        self.assertNoResult(d)
        assert wrapped.protocol is not None
        wrapped.protocol.dataReceived(CONNECTED[:10])
        self.assertNoResult(d)
        wrapped.protocol.dataReceived(CONNECTED[10:] + b"first bytes")
        inner = self.successResultOf(d)
        self.assertIs(inner, factory.built[0])
        self.assertEqual(factory.built[0].data, b"first bytes")
        wrapped.protocol.dataReceived(b" more")
        self.assertEqual(factory.built[0].data, b"first bytes more")

    def test_anything_but_200_fails_the_connect(self) -> None:
        for answer in [
            b"HTTP/1.1 405 Method Not Allowed\r\n\r\n",
            b"SSH-2.0-x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        ]:
            wrapped = _Wrapped()
            d = HTTPConnectEndpoint(wrapped).connect(_RecorderFactory())  # type: ignore[arg-type]
            assert wrapped.protocol is not None
            wrapped.protocol.dataReceived(answer)
            failure = self.failureResultOf(d, ConnectFailed)
            self.assertNotIn("Traceback", str(failure.value))
            self.assertTrue(wrapped.transport.disconnecting)

    def test_cancelling_aborts_the_exchange(self) -> None:
        wrapped = _Wrapped()
        d = HTTPConnectEndpoint(wrapped).connect(_RecorderFactory())  # type: ignore[arg-type]
        d.cancel()
        self.assertTrue(wrapped.transport.disconnecting)
        self.failureResultOf(d)
