"""
Go's ``net/rpc`` and JSON-RPC 1.0 peers (docs/protocol.md 14): how the
one-port server tells their clients by the first bytes, the JSON-RPC codecs,
the one port serving them, and the client addresses that send no Option.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import connect
from txgeerpc._netrpc import MAX_LOOKAHEAD, NETRPC_CONNECTED, Start, classify
from txgeerpc._one_port import Kind, sniff
from txgeerpc._wire import EMPTY_STRUCT, Header
from txgeerpc.codec import JSONRPCClientCodec, JSONRPCServerCodec
from txgeerpc.discovery import StaticDiscovery
from txgeerpc.errors import CodecError, InvalidAddress, MessageTooLarge, RemoteError
from txgeerpc.examples import Args
from txgeerpc.testing import MemoryNetwork
from txgeerpc.xclient import XClient

from ._helpers import checked_clock, example_server, vector

# The first bytes Go 1.27's rpc.Dial client writes: gob's definition of Request.
GO_NETRPC_START = (
    b".\x7f\x03\x01\x01\x07Request\x01\xff\x80\x00\x01\x02\x01\rServiceMethod"
    b"\x01\x0c\x00\x01\x03Seq\x01\x06\x00\x00\x00"
)
# The same from a process that had defined a gob type before (type id -65).
GO_NETRPC_START_LATER_ID = b"/\xff\x81\x03\x01\x01\x07Request\x01\xff\x82\x00"
# What jsonrpc.Dial's client writes for Foo.Sum(Args{1, 2}).
GO_JSONRPC_REQUEST = b'{"method":"Foo.Sum","params":[{"Num1":1,"Num2":2}],"id":0}\n'
OPTION = (
    b'{"MagicNumber":3927900,"CodecType":"application/gob",'
    b'"ConnectTimeout":10000000000,"HandleTimeout":0}\n'
)


class ClassifyTests(SynchronousTestCase):
    def test_every_prefix_waits_then_decides_right(self) -> None:
        for start, kind in [
            (GO_NETRPC_START, Kind.NETRPC),
            (GO_NETRPC_START_LATER_ID, Kind.NETRPC),
            (GO_JSONRPC_REQUEST, Kind.JSONRPC),
            (b' \n\t{ "id" : 7, "method": "Foo.Sum", "params": [{}]}', Kind.JSONRPC),
            (b'{"Params":[1],"Method":"A.B","ID":"x"}', Kind.JSONRPC),
            (OPTION, Kind.RPC),
            (b"  \r\n" + OPTION, Kind.RPC),
            (b'{"magicnumber":3927900}', Kind.RPC),
            (b"{}\n", Kind.RPC),  # the Option's parser says what is wrong with it
            (b"CONNECT /_goRPC_ HTTP/1.0\n\n", Kind.CONNECT),
            (b"GET /debug/geerpc HTTP/1.1\r\n", Kind.HTTP),
        ]:
            decided = [sniff(start[:cut]) for cut in range(len(start) + 1)]
            first = next(index for index, found in enumerate(decided) if found is not None)
            self.assertEqual(set(decided[first:]), {kind}, start)
            self.assertEqual(set(decided[:first]), {None}, start)
            self.assertLessEqual(first, MAX_LOOKAHEAD + 4, start)

    def test_the_lookahead_is_bounded(self) -> None:
        # A first member's name that never ends: an Option (its parser decides).
        long_name = b'{"' + b"m" * 500
        self.assertIsNone(classify(long_name[: MAX_LOOKAHEAD - 1]))
        self.assertIs(classify(long_name), Start.OTHER)
        self.assertIs(sniff(long_name), Kind.RPC)
        self.assertIs(classify(b" " * 500), Start.OTHER)
        self.assertIs(classify(b'{"meth\\u006fd":1}'), Start.OTHER)  # escapes: not looked into

    def test_not_a_gob_definition(self) -> None:
        for data in [b"\x05\x02\x03\x01\x01", b"\x05\x7f\x03\x01\x02", b"\x00\x7f\x03\x01\x01"]:
            self.assertIs(classify(data), Start.OTHER, data)

    def test_without_go_netrpc_the_old_rules(self) -> None:
        self.assertIs(sniff(GO_NETRPC_START, go_netrpc=False), Kind.GARBAGE)
        self.assertIs(sniff(GO_JSONRPC_REQUEST, go_netrpc=False), Kind.RPC)


class JSONRPCCodecTests(SynchronousTestCase):
    def test_server_numbers_requests_and_answers_with_their_ids(self) -> None:
        codec = JSONRPCServerCodec()
        decoder, encoder = codec.new_decoder(1 << 20), codec.new_encoder()
        decoder.feed(
            b'{"method":"A.B","params":[{"x":1}],"id":"abc"}'
            b' {"id":[1,2],"method":"A.C","params":[]}\n{"method":"A.D","params":[3]}'
        )
        pairs = []
        while (message := decoder.next_message()) is not None:
            header = decoder.decode_header(message)
            pairs.append((header, decoder.decode_body(decoder.next_message())))
        self.assertEqual(
            pairs,
            [
                (Header("A.B", 1, ""), {"x": 1}),
                (Header("A.C", 2, ""), None),
                (Header("A.D", 3, ""), 3),
            ],
        )
        # Replies in any order, each with its request's id (null when it had none).
        self.assertEqual(
            encoder.encode(Header("A.C", 2, "boom"), EMPTY_STRUCT),
            b'{"id":[1,2],"result":null,"error":"boom"}\n',
        )
        self.assertEqual(
            encoder.encode(Header("A.D", 3, ""), 6), b'{"id":null,"result":6,"error":null}\n'
        )
        self.assertEqual(
            encoder.encode(Header("A.B", 1, ""), {"y": "é"}),
            b'{"id":"abc","result":{"y":"\xc3\xa9"},"error":null}\n',
        )
        self.assertEqual(codec._ids, {})  # nothing kept once answered

    def test_server_body_errors_fail_only_their_call(self) -> None:
        decoder = JSONRPCServerCodec().new_decoder(1 << 20)
        decoder.feed(b'{"method":"A.B","id":1} {"method":"A.B","params":{"x":1},"id":2}')
        for text in ["jsonrpc: request body missing params", "jsonrpc: params must be an array"]:
            decoder.decode_header(decoder.next_message())
            error = self.assertRaises(CodecError, decoder.decode_body, decoder.next_message())
            self.assertIn(text, str(error))

    def test_server_header_errors(self) -> None:
        for data in [b"[1]", b'{"method":5,"params":[],"id":1}', b"7 "]:
            decoder = JSONRPCServerCodec().new_decoder(1 << 20)
            decoder.feed(data)
            self.assertRaises(CodecError, decoder.decode_header, decoder.next_message())

    def test_server_limit(self) -> None:
        decoder = JSONRPCServerCodec().new_decoder(64)
        decoder.feed(b'{"method":"A.B","params":["' + b"x" * 100)
        self.assertRaises(MessageTooLarge, decoder.next_message)

    def test_client_requests_are_gos(self) -> None:
        encoder = JSONRPCClientCodec().new_encoder()
        self.assertEqual(
            encoder.encode(Header("Foo.Sum", 0, ""), Args(1, 2)),
            GO_JSONRPC_REQUEST,
        )

    def test_client_responses(self) -> None:
        decoder = JSONRPCClientCodec().new_decoder(1 << 20)
        decoder.feed(
            b'{"id":1,"result":3,"error":null}{"id":2,"result":null,"error":"bad"}'
            b'{"id":3,"error":""}'
        )
        got = []
        for _ in range(3):
            header = decoder.decode_header(decoder.next_message())
            got.append((header, decoder.decode_body(decoder.next_message())))
        self.assertEqual(
            got,
            [
                (Header("", 1, ""), 3),
                (Header("", 2, "bad"), None),
                (Header("", 3, "unspecified error"), None),
            ],
        )

    def test_client_response_errors_as_gos(self) -> None:
        # Go's client ends the stream on these ("invalid error <nil>" for the last).
        for data in [
            b'{"id":1,"result":null,"error":{"code":1}}',
            b'{"id":-1,"result":1}',
            b'{"id":4,"result":null,"error":null}',
        ]:
            decoder = JSONRPCClientCodec().new_decoder(1 << 20)
            decoder.feed(data)
            self.assertRaises(CodecError, decoder.decode_header, decoder.next_message())


class OnePortTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.server = example_server(self.clock)

    def connect(self, **kwargs: Any) -> tuple[Any, StringTransport]:
        factory = self.server.port_factory(debug_path=None, **kwargs)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)

        def close() -> None:
            if protocol in factory.open:
                transport.disconnected = True
                protocol.connectionLost()

        self.addCleanup(close)
        return protocol, transport

    def test_a_gob_stream_without_option_gets_the_same_replies(self) -> None:
        # Vector 01 (a Go GeeRPC client) less its Option is what net/rpc sends:
        # the replies are byte for byte those the Option's stream gets.
        data = vector("01-gob-tcp.c2s.bin")
        stream = data[data.index(b"\n") + 1 :]
        for step in (1, 7, len(stream)):
            protocol, transport = self.connect()
            for index in range(0, len(stream), step):
                protocol.dataReceived(stream[index : index + step])
            self.assertEqual(transport.value(), vector("01-gob-tcp.s2c.bin"), step)
            self.assertFalse(transport.disconnecting)
        self.flushLoggedErrors(ZeroDivisionError)

    def test_connect_go_rpc_path(self) -> None:
        data = vector("01-gob-tcp.c2s.bin")
        stream = data[data.index(b"\n") + 1 :]
        protocol, transport = self.connect()
        protocol.dataReceived(b"CONNECT /_goRPC_ HTTP/1.0\n\n" + stream)
        self.assertEqual(transport.value(), NETRPC_CONNECTED + vector("01-gob-tcp.s2c.bin"))
        self.flushLoggedErrors(ZeroDivisionError)

    def test_jsonrpc_requests(self) -> None:
        protocol, transport = self.connect()
        for byte in range(len(GO_JSONRPC_REQUEST)):
            protocol.dataReceived(GO_JSONRPC_REQUEST[byte : byte + 1])
        protocol.dataReceived(
            b'{"method":"Arith.Divide","params":[{"Num1":1}],"id":"x"}'
            b'{"method":"Foo.Sum","id":2}'
            b'{"method":"Nope.Sum","params":[{}],"id":3}'
            b'{"method":"Arith.Echo","params":["\xc3\xa9"],"id":4}'
        )
        self.assertEqual(
            transport.value().decode().splitlines(),
            [
                '{"id":0,"result":3,"error":null}',
                '{"id":"x","result":null,"error":"divide by zero"}',
                '{"id":2,"result":null,"error":"jsonrpc: request body missing params"}',
                '{"id":3,"result":null,"error":"rpc server: can\'t find service Nope"}',
                '{"id":4,"result":"é","error":null}',
            ],
        )
        self.assertFalse(transport.disconnecting)
        self.flushLoggedErrors(ZeroDivisionError)

    def test_hostile_jsonrpc_closes_with_one_line(self) -> None:
        for data in [b'{"method":7,"params":[],"id":1}', b'{"id":1,"params":["' + b"x" * 5000]:
            self.server = example_server(self.clock, max_message_size=1024)
            protocol, transport = self.connect()
            protocol.dataReceived(data)
            self.assertTrue(transport.disconnecting, data)
            self.assertEqual(transport.value(), b"", data)

    def test_switched_off(self) -> None:
        protocol, transport = self.connect(go_netrpc=False)
        protocol.dataReceived(b"CONNECT /_goRPC_ HTTP/1.0\n\n")
        self.assertEqual(transport.value(), b"HTTP/1.0 404 Not Found\r\n\r\n")
        protocol, transport = self.connect(go_netrpc=False)
        protocol.dataReceived(GO_NETRPC_START)
        self.assertTrue(transport.disconnected or transport.disconnecting)


class _Recorder(Protocol):
    received = b""

    def dataReceived(self, data: bytes) -> None:
        type(self).received += data


class ClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.network = MemoryNetwork()
        self.addCleanup(self.network.close)

    def test_every_scheme_against_the_one_port(self) -> None:
        server = example_server(self.network.clock)
        port = self.network.listen(server.port_factory(debug_path=None))
        for scheme in ("netrpc", "netrpc+http", "jsonrpc"):
            d = connect(self.network.reactor, f"{scheme}@{port.address}", clock=self.network.clock)
            self.network.flush()
            client = self.successResultOf(d)
            summed = client.call("Foo.Sum", Args(2, 3))
            divided = client.call("Arith.Divide", Args(1, 0))
            self.network.flush()
            self.assertEqual(self.successResultOf(summed), 5, scheme)
            failure = self.failureResultOf(divided, RemoteError)
            self.assertEqual(failure.value.message, "divide by zero")
            self.assertIs(client.speaks_extension, False)
            client.close()
            self.network.flush()
        self.flushLoggedErrors(ZeroDivisionError)

    def test_no_option_and_no_extension_bytes(self) -> None:
        for scheme, expected in [
            ("jsonrpc", b'{"method":"Foo.Sum","params":[{"Num1":1,"Num2":2}],"id":1}\n'),
            ("netrpc", None),
        ]:
            _Recorder.received = b""
            port = self.network.listen(Factory.forProtocol(_Recorder))
            d = connect(self.network.reactor, f"{scheme}@{port.address}", clock=self.network.clock)
            self.network.flush()
            client = self.successResultOf(d)
            call = client.call("Foo.Sum", Args(1, 2), timeout=5, metadata={"k": "v"})
            self.network.flush()
            if expected is not None:
                self.assertEqual(_Recorder.received, expected)
            else:
                self.assertIs(classify(_Recorder.received), Start.GOB)
                self.assertNotIn(b"Txgeerpc", _Recorder.received)
                self.assertNotIn(b"MagicNumber", _Recorder.received)
            call.cancel()
            self.network.flush()
            self.assertEqual(_Recorder.received.count(b"Foo.Sum"), 1)  # no cancel sent
            self.failureResultOf(call)
            client.close()
            self.network.flush()

    def test_codec_mismatch(self) -> None:
        d = connect(self.network.reactor, "netrpc@127.0.0.1:1", codec="json")
        self.assertIn("speak gob", str(self.failureResultOf(d, InvalidAddress).value))


class XClientTests(SynchronousTestCase):
    def test_xclient_over_go_addresses(self) -> None:
        network = MemoryNetwork()
        self.addCleanup(network.close)
        server = example_server(network.clock)
        port = network.listen(server.port_factory(debug_path=None))
        addresses = [f"{scheme}@{port.address}" for scheme in ("netrpc", "jsonrpc")]
        xclient = XClient(
            StaticDiscovery(addresses),
            lambda address: connect(network.reactor, address, clock=network.clock),
            network.clock,
        )
        results = [xclient.call("Foo.Sum", Args(i, 1)) for i in range(4)]
        broadcast = xclient.broadcast("Arith.Multiply", Args(6, 7))
        network.flush()
        self.assertEqual([self.successResultOf(d) for d in results], [1, 2, 3, 4])
        self.assertEqual(self.successResultOf(broadcast), 42)
        closed = xclient.close()
        network.flush()
        self.successResultOf(closed)
