"""
Framed mode (docs/protocol.md 13.11): the sans-IO frame parser, bounded
decompression (the bomb), negotiation between txgeerpc peers only, limits on
the prefix, compression and per-message codecs.
"""

from __future__ import annotations

import itertools
import json
import tracemalloc
import zlib
from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Server, connect
from txgeerpc._framed import (
    GZIP,
    LZ4,
    NONE,
    PREFIX,
    ZSTD,
    FramedDecoder,
    FramedEncoder,
    FrameParser,
    InflatedTooLarge,
    compress,
    decompress,
    encode_frame,
)
from txgeerpc._option import parse_option
from txgeerpc._wire import HELLO, Header, Option
from txgeerpc.codec import MSGPACK, MsgpackCodec, default_registry
from txgeerpc.codec._msgpack import MsgpackDecoder, decode_value, header_of
from txgeerpc.errors import (
    BodyTooLarge,
    CodecError,
    MessageTooLarge,
    MessageTooLargeToSend,
    ProtocolError,
    RemoteMessageTooLarge,
)
from txgeerpc.examples import register_examples
from txgeerpc.testing import Clock, MemoryNetwork

HELLO_META = {
    "txgeerpc-framed": "1",
    "txgeerpc-compression": "gzip,zstd,lz4",
    # Every codec of the default registry (each has a framed codec id).
    "txgeerpc-codecs": ",".join(default_registry.names()),
}
"""What a default server's hello carries for a client asking for framed mode."""

LIMIT = 4 * 1024 * 1024


def _lookup(name: str) -> Any:
    return default_registry.get(name, aliases=False)


def _frames(count: int = 3) -> list[bytes]:
    return [encode_frame(2, NONE, b'{"H":%d}' % i, b"x" * (i * 7)) for i in range(count)]


class FrameParserTests(SynchronousTestCase):
    def test_whole_and_byte_by_byte(self) -> None:
        data = b"".join(_frames())
        for pieces in ([data], [data[i : i + 1] for i in range(len(data))]):
            parser = FrameParser(LIMIT)
            got = [frame for piece in pieces for frame in parser.feed(piece)]
            self.assertEqual(
                [(f.codec, f.header, f.body) for f in got],
                [(2, b'{"H":%d}' % i, b"x" * (i * 7)) for i in range(3)],
            )
            self.assertEqual(parser.buffered(), 0)

    @given(st.lists(st.integers(min_value=0, max_value=200), max_size=8))
    def test_random_splits(self, cuts: list[int]) -> None:
        data = b"".join(_frames(4))
        parser = FrameParser(LIMIT)
        got, start = [], 0
        for cut in sorted(cuts):
            got += parser.feed(data[start:cut])
            start = max(start, cut)
        got += parser.feed(data[start:])
        self.assertEqual([f.body for f in got], [b"x" * (i * 7) for i in range(4)])

    def test_header_over_the_limit_is_refused_on_the_prefix(self) -> None:
        parser = FrameParser(100)
        with self.assertRaises(MessageTooLarge) as caught:
            parser.feed(PREFIX.pack(1, 0, 101, 0))
        self.assertEqual((caught.exception.size, caught.exception.limit), (101, 100))

    def test_body_over_the_limit_is_skipped_without_buffering(self) -> None:
        parser = FrameParser(100)
        frames = parser.feed(PREFIX.pack(2, 0, 3, 2**32 - 1) + b"{H}" + b"z" * 50)
        self.assertEqual(len(frames), 1)
        self.assertIsNone(frames[0].body)
        self.assertEqual(frames[0].body_size, 2**32 - 1)
        for _ in range(16):  # 16 MiB of body: nothing is held
            self.assertEqual(parser.feed(b"z" * (1 << 20)), [])
            self.assertEqual(parser.buffered(), 0)
        self.assertEqual(parser.skipping(), 2**32 - 1 - 50 - 16 * (1 << 20))

    def test_the_frame_after_a_skipped_body_comes_through(self) -> None:
        parser = FrameParser(100)
        frames = parser.feed(PREFIX.pack(2, 0, 2, 300) + b"{}" + b"z" * 100)
        self.assertEqual([f.body for f in frames], [None])
        self.assertEqual(parser.feed(b"z" * 150), [])
        frames = parser.feed(b"z" * 50 + encode_frame(2, 0, b"{}", b"1"))
        self.assertEqual([f.body for f in frames], [b"1"])
        self.assertEqual((parser.skipping(), parser.buffered()), (0, 0))

    def test_unknown_codec_id(self) -> None:
        with self.assertRaises(ProtocolError):
            FrameParser(100).feed(PREFIX.pack(9, 0, 0, 0))

    def test_leading_whitespace_after_the_plain_stream(self) -> None:
        parser = FrameParser(100, after_plain=True)
        self.assertEqual(parser.feed(b"\n"), [])
        self.assertEqual(len(parser.feed(encode_frame(2, 0, b"{}", b"1"))), 1)


def _bomb(compression: int, inflated: int = 256 << 20) -> bytes:
    """A stream that inflates to ``inflated`` bytes of zeros, made in pieces."""
    chunk = bytes(1 << 20)
    if compression == GZIP:
        deflater = zlib.compressobj(9)
        out = [deflater.compress(chunk) for _ in range(inflated >> 20)]
        return b"".join(out) + deflater.flush()
    if compression == ZSTD:
        import zstandard

        c = zstandard.ZstdCompressor(level=3).compressobj()
        out = [c.compress(chunk) for _ in range(inflated >> 20)]
        return b"".join(out) + c.flush()
    import lz4.frame

    c = lz4.frame.LZ4FrameCompressor()
    out = [c.begin()] + [c.compress(chunk) for _ in range(inflated >> 20)]
    return b"".join(out) + c.flush()


_BOMBS: dict[int, bytes] = {}


class BoundedDecompressionTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        data = json.dumps({"k": list(range(3000))}).encode()
        for compression in (GZIP, ZSTD, LZ4):
            packed = compress(compression, data)
            self.assertLess(len(packed), len(data))
            self.assertEqual(decompress(compression, packed, len(data)), data)
            with self.assertRaises(InflatedTooLarge):
                decompress(compression, packed, len(data) - 1)

    def test_bomb_is_refused_at_the_limit_plus_one_within_twice_the_limit(self) -> None:
        """The issue's bomb: a 256 KiB gzip stream inflating to 256 MiB, and
        the zstd and lz4 equivalents."""
        for compression in (GZIP, ZSTD, LZ4):
            bomb = _BOMBS.get(compression)
            if bomb is None:
                bomb = _BOMBS[compression] = _bomb(compression)
            if compression == GZIP:
                self.assertLessEqual(len(bomb), 256 * 1024 + 4096)
            tracemalloc.start()
            try:
                with self.assertRaises(InflatedTooLarge) as caught:
                    decompress(compression, bomb, LIMIT)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            self.assertEqual(caught.exception.size, LIMIT + 1)
            self.assertIn(f"refused at byte {LIMIT + 1}", str(caught.exception))
            self.assertLess(peak, 2 * LIMIT, f"compression {compression}")

    def test_exactly_the_limit_passes(self) -> None:
        for compression in (GZIP, ZSTD, LZ4):
            data = bytes(1000)
            self.assertEqual(decompress(compression, compress(compression, data), 1000), data)

    def test_garbage_is_a_codec_error(self) -> None:
        for compression in (GZIP, ZSTD, LZ4):
            with self.assertRaises(CodecError):
                decompress(compression, b"not compressed at all", 100)

    def test_a_bomb_fails_its_call_only(self) -> None:
        decoder = FramedDecoder(_lookup, 1 << 20)
        bomb = zlib.compress(bytes(2 << 20))
        encoder = FramedEncoder(_lookup, "application/json")
        decoder.feed(encode_frame(2, GZIP, b'{"ServiceMethod":"A.B","Seq":1,"Error":""}', bomb))
        decoder.feed(encoder.encode(Header("A.B", 2, ""), 5))
        header = decoder.decode_header(decoder.next_message())
        self.assertEqual(header[1], 1)
        with self.assertRaises(InflatedTooLarge):
            decoder.decode_body(decoder.next_message())
        header = decoder.decode_header(decoder.next_message())
        self.assertEqual((header[1], decoder.decode_body(decoder.next_message())), (2, 5))


class CodecRoundTripTests(SynchronousTestCase):
    @given(
        st.sampled_from(
            ["application/gob", "application/json", "application/msgpack", "application/protobuf"]
        ),
        st.sampled_from([0, 1, 2, 3]),
    )
    def test_headers_and_bodies(self, codec: str, compression: int) -> None:
        encoder = FramedEncoder(_lookup, codec, compression, threshold=16)
        decoder = FramedDecoder(_lookup, LIMIT)
        messages = [
            (Header("A.B", 1, ""), {"Text": "y" * 300}),
            (Header("A.B", 2, "", 7, {"k": "v"}), {"Text": ""}),
            (Header("A.B", 3, "bad"), {}),
        ]
        data = b"".join(encoder.encode(h, b) for h, b in messages)
        decoder.feed(data)
        got = []
        while (message := decoder.next_message()) is not None:
            got.append(
                (decoder.decode_header(message), decoder.decode_body(decoder.next_message()))
            )
        self.assertEqual([g[0] for g in got], [m[0] for m in messages])
        self.assertEqual(got[0][1], {"Text": "y" * 300})
        if compression:  # the 300-byte body was compressed
            self.assertEqual(data[1], compression)

    def test_msgpack_and_protobuf_frames_hold_bare_messages(self) -> None:
        """In frames, msgpack and protobuf headers and bodies are the bare
        messages (no protobuf length varint): what decode_*_bytes read."""
        from txgeerpc.codec._msgpack import decode_body_bytes as msgpack_body
        from txgeerpc.codec._msgpack import decode_header_bytes as msgpack_header
        from txgeerpc.codec._protobuf import decode_body_bytes as protobuf_body
        from txgeerpc.codec._protobuf import decode_header_bytes as protobuf_header

        header = Header("A.B", 7, "", 5, {"k": "v"})
        for name, number, read_header, read_body in (
            ("application/msgpack", 3, msgpack_header, msgpack_body),
            ("application/protobuf", 4, protobuf_header, protobuf_body),
        ):
            frame = FramedEncoder(_lookup, name).encode(header, {"Text": "é" * 40})
            codec, compression, header_size, body_size = PREFIX.unpack_from(frame)
            self.assertEqual((codec, compression), (number, NONE), name)
            self.assertEqual(len(frame), 10 + header_size + body_size)
            self.assertEqual(read_header(frame[10 : 10 + header_size]), header, name)
            self.assertEqual(read_body(frame[10 + header_size :])[0], {"Text": "é" * 40}, name)
            decoder = FramedDecoder(_lookup, LIMIT)
            for byte in range(len(frame)):  # fed byte by byte
                decoder.feed(frame[byte : byte + 1])
            self.assertEqual(decoder.decode_header(decoder.next_message()), header, name)
            self.assertEqual(decoder.decode_body(decoder.next_message()), {"Text": "é" * 40})
            self.assertIsNone(decoder.next_message())

    def test_a_protobuf_message_body_stays_raw_until_converted(self) -> None:
        from examples.protobuf.stats_pb2 import Numbers
        from txgeerpc._convert import converter_for
        from txgeerpc._protobuf import PackedMessage

        numbers = Numbers(label="w", values=[3, 1, 4])
        encoder = FramedEncoder(_lookup, "application/protobuf", GZIP, threshold=1)
        decoder = FramedDecoder(_lookup, LIMIT)
        decoder.feed(encoder.encode(Header("Stats.Summarize", 1, ""), numbers))
        self.assertEqual(decoder.decode_header(decoder.next_message())[0], "Stats.Summarize")
        body = decoder.decode_body(decoder.next_message())
        self.assertEqual(
            body, PackedMessage("txgeerpc.examples.Numbers", numbers.SerializeToString())
        )
        self.assertEqual(converter_for(Numbers)(body), numbers)
        self.assertGreater(decoder.budget_left(), 0)

    def test_a_msgpack_body_over_its_budget_fails_its_call_only(self) -> None:
        encoder = FramedEncoder(_lookup, "application/msgpack")
        decoder = FramedDecoder(_lookup, LIMIT)
        nested = [[[]] * 2000] * 10  # small on the wire, big as Python lists
        decoder.feed(
            encoder.encode(Header("A.B", 1, ""), nested) + encoder.encode(Header("A.B", 2, ""), [1])
        )
        decoder.next_message()
        with self.assertRaises(CodecError):
            decoder.decode_body(decoder.next_message())
        self.assertEqual(decoder.decode_header(decoder.next_message())[1], 2)
        self.assertEqual(decoder.decode_body(decoder.next_message()), [1])


class OptionTests(SynchronousTestCase):
    def test_framed_key(self) -> None:
        option = Option(extension=1, framed=True)
        self.assertIn(b',"Txgeerpc":1,"TxgeerpcFramed":true}', option.to_json())
        self.assertEqual(len(option.to_widened_json()), 512)
        self.assertTrue(parse_option(option.to_json()[:-1]).framed)
        self.assertFalse(parse_option(Option(extension=1).to_json()[:-1]).framed)


class _Raw(Protocol):
    """A peer that sends given bytes and keeps what comes back."""

    def __init__(self, payload: bytes = b"") -> None:
        self.payload = payload
        self.received = b""
        self.lost = False

    def connectionMade(self) -> None:
        self.transport.write(self.payload)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


def _switch(codec: str = "application/json") -> bytes:
    """The Option asking for framed mode, then the switch message (plain)."""
    option = Option(codec_type=codec, extension=1, framed=True).to_json()
    switch = default_registry.get(codec).new_encoder()
    from txgeerpc._wire import EMPTY_STRUCT

    return option + switch.encode(
        Header("_txgeerpc.Framed", 0, "", 0, {"txgeerpc-compression": "none"}), EMPTY_STRUCT
    )


def _replies(data: bytes, skip_plain: bytes) -> list[tuple[Header, Any]]:
    assert data.startswith(skip_plain), data[:200]
    decoder = FramedDecoder(_lookup, LIMIT, after_plain=True)
    decoder.feed(data[len(skip_plain) :])
    out = []
    while (message := decoder.next_message()) is not None:
        header = decoder.decode_header(message)
        out.append((header, decoder.decode_body(decoder.next_message())))
    return out


class NegotiationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.network = MemoryNetwork(self.clock)
        self.addCleanup(self.network.close)

    def serve(self, **settings: Any) -> str:
        server = Server(self.clock, **settings)
        register_examples(server)
        self.server = server
        return f"tcp@{self.network.listen(server.port_factory()).address}"

    def client(self, address: str, **options: Any) -> Any:
        d = connect(self.network.reactor, address, **options)
        self.network.flush()
        client = self.successResultOf(d)
        self.addCleanup(lambda: (client.close(), self.network.flush()))
        return client

    def raw(self, address: str, payload: bytes) -> _Raw:
        peer = _Raw(payload)
        host, port = address.split("@")[1].rsplit(":", 1)
        self.network.reactor.connectTCP(host, int(port), ClientFactory.forProtocol(lambda: peer))
        self.network.flush()
        return peer

    def test_calls_in_every_codec_and_compression(self) -> None:
        address = self.serve()
        for codec in ("gob", "json", "msgpack", "protobuf"):
            for compression in (None, "gzip", "zstd", "lz4"):
                client = self.client(address, codec=codec, framed=True, compress=compression)
                sent = [
                    client.call("Arith.Echo", "é" * 3000),
                    client.call("Foo.Sum", {"Num1": 2, "Num2": 3}),
                ]
                self.network.flush()
                self.assertEqual([self.successResultOf(d) for d in sent], ["é" * 3000, 5])
                self.assertTrue(client._protocol.framed)

    def test_replies_come_compressed_as_asked(self) -> None:
        address = self.serve()
        option = Option(codec_type="application/json", extension=1, framed=True).to_json()
        switch = (
            default_registry.get("json")
            .new_encoder()
            .encode(Header("_txgeerpc.Framed", 0, "", 0, {"txgeerpc-compression": "zstd"}), {})
        )
        request = FramedEncoder(_lookup, "application/json", ZSTD).encode(
            Header("Arith.Echo", 1, ""), "abc" * 10000
        )
        self.assertEqual(request[1], ZSTD)
        peer = self.raw(address, option + switch + request)
        framed = peer.received[len(self._hello()) :]
        codec, compression, _, body_size = PREFIX.unpack_from(framed)
        self.assertEqual((codec, compression), (2, ZSTD))
        self.assertLess(body_size, 1000)
        self.assertEqual(_replies(peer.received, self._hello())[0][1], "abc" * 10000)

    def test_a_server_restricting_compressions(self) -> None:
        address = self.serve(compressions=["gzip"])
        client = self.client(address, codec="json", framed=True, compress="zstd")
        d = client.call("Arith.Echo", "x" * 5000)
        self.network.flush()
        self.assertEqual(self.successResultOf(d), "x" * 5000)
        self.assertEqual(client._protocol._encoder._compression, NONE)  # not accepted: none

    def test_a_server_refusing_framed_mode_keeps_the_plain_stream(self) -> None:
        address = self.serve(framed=False)
        client = self.client(address, codec="json", framed=True)
        d = client.call("Foo.Sum", {"Num1": 1, "Num2": 1})
        self.network.flush()
        self.assertEqual(self.successResultOf(d), 2)
        self.assertFalse(client._protocol.framed)

    def test_a_go_like_server_never_sees_a_frame(self) -> None:
        """A server that sends no hello (Go): the client stays plain, and
        every byte it writes is the plain JSON stream."""
        from twisted.internet.protocol import Factory

        written: list[bytes] = []

        class GoLike(Protocol):
            def dataReceived(self, data: bytes) -> None:
                written.append(data)
                if b"Foo.Sum" in data:
                    self.transport.write(  # type: ignore[union-attr]
                        b'{"ServiceMethod":"Foo.Sum","Seq":1,"Error":""}\n3\n'
                    )

        port = self.network.listen(Factory.forProtocol(GoLike))
        client = self.client(f"tcp@{port.address}", codec="json", framed=True, compress="gzip")
        d = client.call("Foo.Sum", {"Num1": 1, "Num2": 2})
        self.network.flush()
        self.assertEqual(self.successResultOf(d), 3)
        self.assertFalse(client._protocol.framed)
        stream = b"".join(written)
        option, rest = stream[:512], stream[512:]
        self.assertIn(b'"TxgeerpcFramed":true', option)
        self.assertTrue(rest.startswith(b'{"ServiceMethod":"Foo.Sum","Seq":1'), rest)
        self.assertNotIn(b"_txgeerpc.Framed", rest)

    def test_hello_offers_framed_only_when_asked(self) -> None:
        address = self.serve()
        plain = self.raw(address, Option(codec_type="application/json", extension=1).to_json())
        self.assertEqual(
            plain.received, b'{"ServiceMethod":"_txgeerpc.Hello","Seq":0,"Error":""}\n{}\n'
        )
        asked = self.raw(
            address, Option(codec_type="application/json", extension=1, framed=True).to_json()
        )
        hello = asked.received.split(b"\n")[0]
        self.assertEqual(json.loads(hello)["TxgeerpcMeta"], HELLO_META)

    def _hello(self, codec: str = "application/json") -> bytes:
        meta = HELLO_META
        from txgeerpc._wire import EMPTY_STRUCT

        return (
            default_registry.get(codec)
            .new_encoder()
            .encode(Header(HELLO, 0, "", 0, meta), EMPTY_STRUCT)
        )

    def test_a_body_over_the_limit_gets_an_error_naming_it_and_the_connection_survives(
        self,
    ) -> None:
        address = self.serve(max_message_size=1000)
        header = b'{"ServiceMethod":"Arith.Echo","Seq":1,"Error":""}'
        payload = (
            _switch()
            + PREFIX.pack(2, 0, len(header), 2**32 - 1)
            + header
            + b"q" * 5000  # the start of the body: skipped, not held
        )
        peer = self.raw(address, payload)
        replies = _replies(peer.received, self._hello())
        self.assertEqual(len(replies), 1)
        self.assertEqual(replies[0][0][1], 1)
        self.assertEqual(
            replies[0][0][2],
            f"body of {2**32 - 1} bytes exceeds the maximum message size of 1000 bytes",
        )
        self.assertFalse(peer.lost)
        # The rest of the body is skipped; the next call is answered.
        # More of the body: thrown away as it comes, the connection stays.
        peer.transport.write(b"q" * 10000)  # type: ignore[union-attr]
        self.network.flush()
        self.assertFalse(peer.lost)

    def test_a_body_over_the_limit_then_the_next_call(self) -> None:
        address = self.serve(max_message_size=1000)
        header = b'{"ServiceMethod":"Arith.Echo","Seq":1,"Error":""}'
        encoder = FramedEncoder(_lookup, "application/json")
        payload = (
            _switch()
            + PREFIX.pack(2, 0, len(header), 3000)
            + header
            + b"q" * 3000
            + encoder.encode(Header("Foo.Sum", 2, ""), {"Num1": 1, "Num2": 1})
        )
        peer = self.raw(address, payload)
        replies = _replies(peer.received, self._hello())
        self.assertEqual(
            [(h[1], h[2][:22], b) for h, b in replies],
            [(1, "body of 3000 bytes exc", {}), (2, "", 2)],
        )
        self.assertFalse(peer.lost)

    def test_a_header_over_the_limit_closes_cleanly(self) -> None:
        address = self.serve(max_message_size=1000)
        peer = self.raw(address, _switch() + PREFIX.pack(2, 0, 5000, 0))
        self.assertTrue(peer.lost)
        self.assertEqual(peer.received, self._hello())

    def test_the_real_client_sees_a_typed_error(self) -> None:
        address = self.serve(max_message_size=1000)
        client = self.client(address, codec="json", framed=True)
        d = client.call("Arith.Echo", "x" * 3000)
        ok = client.call("Foo.Sum", {"Num1": 1, "Num2": 2})
        self.network.flush()
        error = self.failureResultOf(d, RemoteMessageTooLarge).value
        self.assertEqual(error.limit, 1000)
        self.assertEqual(self.successResultOf(ok), 3)

    def test_a_compressed_bomb_is_refused_with_a_typed_error(self) -> None:
        address = self.serve(max_message_size=100_000)
        client = self.client(
            address, codec="json", framed=True, compress="gzip", compress_threshold=1
        )
        d = client.call("Arith.Echo", "a" * 150_000)  # inflates past the server's limit
        ok = client.call("Foo.Sum", {"Num1": 1, "Num2": 2})
        self.network.flush()
        error = self.failureResultOf(d, RemoteMessageTooLarge).value
        self.assertIn("inflates past the maximum message size of 100000 bytes", str(error))
        self.assertEqual(self.successResultOf(ok), 3)

    def test_the_client_refuses_to_send_past_its_limit(self) -> None:
        address = self.serve()
        client = self.client(address, codec="gob", framed=True, max_message_size=1000)
        self.failureResultOf(client.call("Arith.Echo", "x" * 3000), MessageTooLargeToSend)
        d = client.call("Arith.Echo", "y")
        self.network.flush()
        self.assertEqual(self.successResultOf(d), "y")

    def test_a_call_in_another_codec_is_answered_in_it(self) -> None:
        """The codec byte: a gob connection carrying one JSON call."""
        address = self.serve()
        gob = FramedEncoder(_lookup, "application/gob")
        switch = _switch("application/gob")
        payload = (
            switch
            + gob.encode(Header("Foo.Sum", 1, ""), {"Num1": 1, "Num2": 2})
            + gob.encode(Header("Foo.Sum", 2, ""), {"Num1": 2, "Num2": 2}, codec=2)
        )
        peer = self.raw(address, payload)
        hello = self._hello("application/gob")
        replies = _replies(peer.received, hello)
        self.assertEqual([(h[1], b) for h, b in replies], [(1, 3), (2, 4)])
        # The second reply's frame says JSON.
        framed = peer.received[len(hello) :]
        first = PREFIX.unpack_from(framed)
        second = PREFIX.unpack_from(framed, 10 + first[2] + first[3])
        self.assertEqual((first[0], second[0]), (1, 2))

    def test_protobuf_messages_framed(self) -> None:
        from examples.protobuf.stats_pb2 import Numbers, Summary
        from examples.protobuf.stats_service import Stats

        address = self.serve()
        self.server.register(Stats())
        for codec in ("protobuf", "msgpack", "json"):
            client = self.client(address, codec=codec, framed=True, compress="lz4")
            d = client.call(
                "Stats.Summarize", Numbers(label="w", values=[3, 1, 4]), result_type=Summary
            )
            self.network.flush()
            self.assertEqual(
                self.successResultOf(d), Summary(label="w", count=3, total=8, mean=8 / 3)
            )
            self.assertTrue(client._protocol.framed)

    def test_the_client_calls_in_another_codec(self) -> None:
        """client.call(codec=) on a JSON connection: each call's frames, both
        ways, carry its codec; protobuf's reply is a raw message."""
        from examples.protobuf.stats_pb2 import Numbers
        from examples.protobuf.stats_service import Stats
        from txgeerpc._protobuf import PackedMessage

        address = self.serve()
        self.server.register(Stats())
        client = self.client(address, codec="json", framed=True)
        echoed = client.call("Arith.Echo", "é" * 3, codec="msgpack")
        packed = client.call("Stats.Summarize", Numbers(values=[2]), codec="application/protobuf")
        same = client.call("Foo.Sum", {"Num1": 1, "Num2": 2}, codec="json")
        self.network.flush()
        self.assertEqual(self.successResultOf(echoed), "é" * 3)
        reply = self.successResultOf(packed)
        self.assertIsInstance(reply, PackedMessage)
        self.assertEqual(reply.type_name, "txgeerpc.examples.Summary")
        self.assertEqual(self.successResultOf(same), 3)
        protocol = client._protocol
        # Frames of codec ids 2 (JSON: the hello's switch aside, Foo.Sum), 3, 4.
        self.assertEqual(sorted(protocol._encoder._sides), [2, 3, 4])
        self.assertEqual(sorted(protocol._decoder._sides), [2, 3, 4])
        # The connection's codec goes on after them.
        plain = client.call("Arith.Echo", "after")
        self.network.flush()
        self.assertEqual(self.successResultOf(plain), "after")

    def test_another_codec_needs_framed_mode(self) -> None:
        from txgeerpc.errors import UnsupportedCodec

        address = self.serve()
        plain = self.client(address, codec="json")
        with self.assertRaises(ValueError) as raised:
            plain.call("Arith.Echo", "x", codec="msgpack")
        self.assertIn("framed=True", str(raised.exception))
        framed = self.client(address, codec="json", framed=True)
        with self.assertRaises(UnsupportedCodec):
            framed.call("Arith.Echo", "x", codec="xml")
        refusing = self.client(self.serve(framed=False), codec="json", framed=True)
        failure = self.failureResultOf(refusing.call("Arith.Echo", "x", codec="msgpack"))
        self.assertIsInstance(failure.value, CodecError)
        self.assertIn("did not agree to framed mode", str(failure.value))

    def test_a_codec_the_server_lacks_fails_the_call_not_the_connection(self) -> None:
        # A frame in a codec the server cannot read cannot be answered (its
        # header is in it): the server closes the connection.  Its hello
        # lists its codecs, so the client fails that call and sends nothing.
        from txgeerpc.codec import CodecRegistry, GobCodec, JSONCodec
        from txgeerpc.errors import UnsupportedCodec

        codecs = CodecRegistry()
        codecs.register(JSONCodec(), "json")
        codecs.register(GobCodec(), "gob")
        client = self.client(self.serve(codecs=codecs), codec="json", framed=True)
        self.assertEqual(client._protocol._server_codecs, {"application/gob", "application/json"})
        refused = client.call("Arith.Echo", "x", codec="msgpack")
        later = client.call("Arith.Echo", "after")
        self.network.flush()
        self.assertEqual(self.failureResultOf(refused, UnsupportedCodec).value.name, MSGPACK)
        self.assertEqual(self.successResultOf(later), "after")

    def test_a_call_in_another_codec_before_the_hello_waits_for_it(self) -> None:
        from twisted.internet.testing import StringTransport

        from txgeerpc._client_protocol import ClientProtocol
        from txgeerpc._wire import EMPTY_STRUCT

        json_codec = default_registry.get("json")
        protocol = ClientProtocol(
            json_codec,
            Option(codec_type=json_codec.name, extension=1, framed=True),
            self.clock,
            LIMIT,
            lookup=_lookup,
            resolve=default_registry.get,
        )
        transport = StringTransport()
        protocol.makeConnection(transport)
        transport.clear()  # the Option
        waiting = protocol.call_in_codec("msgpack", "Arith.Echo", b"\x01")
        cancelled = protocol.call_in_codec("msgpack", "Arith.Echo", b"\x02")
        cancelled.cancel()
        self.failureResultOf(cancelled)
        self.assertEqual(transport.value(), b"")  # nothing until the hello
        meta = {"txgeerpc-framed": "1", "txgeerpc-compression": "gzip"}
        protocol.dataReceived(
            json_codec.new_encoder().encode(Header(HELLO, 0, "", 0, meta), EMPTY_STRUCT)
        )
        sent = transport.value()
        framed = sent[sent.index(b"}\n{}\n") + 5 :]  # after the switch message
        self.assertEqual(framed[0], 3)  # msgpack
        decoder = FramedDecoder(_lookup, LIMIT)
        decoder.feed(framed)
        header = decoder.decode_header(decoder.next_message())
        self.assertEqual(decoder.decode_body(decoder.next_message()), b"\x01")
        reply = FramedEncoder(_lookup, "application/json").encode(
            Header("Arith.Echo", header[1], ""), b"\x01", codec=3
        )
        self.assertIsNone(decoder.next_message())  # the cancelled call was not sent
        protocol.dataReceived(reply)
        self.assertEqual(self.successResultOf(waiting), b"\x01")

    def test_unaccepted_compression_fails_the_call_only(self) -> None:
        address = self.serve(compressions=["gzip"])
        header = b'{"ServiceMethod":"Arith.Echo","Seq":1,"Error":""}'
        encoder = FramedEncoder(_lookup, "application/json")
        payload = (
            _switch()
            + encode_frame(2, LZ4, header, compress(LZ4, b'"x"'))
            + encoder.encode(Header("Foo.Sum", 2, ""), {"Num1": 1, "Num2": 1})
        )
        meta = {**HELLO_META, "txgeerpc-compression": "gzip"}
        from txgeerpc._wire import EMPTY_STRUCT

        hello = (
            default_registry.get("json")
            .new_encoder()
            .encode(Header(HELLO, 0, "", 0, meta), EMPTY_STRUCT)
        )
        replies = _replies(self.raw(address, payload).received, hello)
        self.assertEqual(
            [(h[1], h[2], b) for h, b in replies],
            [(1, "framed: compression lz4 is not accepted", {}), (2, "", 2)],
        )

    def test_oversized_body_decoded_as_body_too_large(self) -> None:
        decoder = FramedDecoder(_lookup, 10)
        decoder.feed(PREFIX.pack(2, 0, 2, 11) + b"{}" + b"1" * 11)
        decoder.next_message()
        with self.assertRaises(BodyTooLarge):
            decoder.decode_body(decoder.next_message())


# -- next_pair's fast path against the general path ---------------------------

SMALL_LIMIT = 1 << 15  # bodies over it are skipped; JSON bodies up to 1024 are parsed eagerly


def _json_header(seq: int) -> bytes:
    return b'{"ServiceMethod":"A.B","Seq":%d,"Error":""}' % seq


def _json_frames() -> list[bytes]:
    """JSON frames of every shape next_pair must take or leave to the general
    path: small and large bodies, non-ASCII text (which a latin-1 reading
    would garble), lengths whose prefix bytes are not ASCII, bodies that are
    not (exactly) one value, compression, bodies over the limit, headers
    that fail, and frames in another codec."""
    json_encoder = FramedEncoder(_lookup, "application/json")
    msgpack_encoder = FramedEncoder(_lookup, "application/msgpack")
    msgpack_header = _lookup("application/msgpack").new_encoder().encode_header
    header = _json_header(9)
    frames = [
        json_encoder.encode(Header("Arith.Multiply", 1, ""), {"Num1": 6, "Num2": 7}),
        json_encoder.encode(Header("A.B", 2, "bad"), {}),
        json_encoder.encode(Header("A.B", 3, "", 7, {"k": "v"}), {"Text": "é"}),
        json_encoder.encode(Header("A.Bé", 4, ""), {"Text": "é" * 70}),  # 144-byte body
        json_encoder.encode(Header("A.B", 5, ""), "y" * 1000),  # eager, at the edge
        json_encoder.encode(Header("A.B", 6, ""), "y" * 1023),  # 1025 bytes: parsed when asked
        json_encoder.encode(Header("A.B", 7, ""), ["é" * 300]),
        json_encoder.encode(Header("A.B", 8, ""), -0.5),
        encode_frame(2, NONE, header, b" 42"),
        encode_frame(2, NONE, header, b"42 "),
        encode_frame(2, NONE, header, b"4"),
        encode_frame(2, NONE, header, b"[1,"),
        encode_frame(2, NONE, header, b"tru"),
        encode_frame(2, NONE, header, b'"\xff\xfe"'),  # invalid UTF-8: U+FFFD, as Go
        encode_frame(2, NONE, header, b"NaN"),
        encode_frame(2, NONE, header, b"[" * 2000 + b"]" * 2000),  # too deep for any parser
        encode_frame(2, NONE, header, b"[" * 500 + b"]" * 500),
        encode_frame(2, NONE, header, b""),
        encode_frame(2, NONE, b'{"servicemethod":"A.B","seq":10}', b"1"),
        encode_frame(2, GZIP, header, compress(GZIP, b'"' + b"z" * 2000 + b'"')),
        encode_frame(2, GZIP, header, compress(GZIP, b"1")),
        PREFIX.pack(2, NONE, len(header), SMALL_LIMIT + 1) + header + b"7" * (SMALL_LIMIT + 1),
        msgpack_encoder.encode(Header("A.B", 11, ""), {"Num1": 1, "Text": "é"}),
        msgpack_encoder.encode(Header("A.B", 12, ""), [[[]] * 2000] * 10),  # over its budget
        encode_frame(3, NONE, msgpack_header(Header("A.B", 13, "")), b"\xc1"),  # not msgpack
    ]
    return frames


_FATAL_JSON_FRAMES = [
    encode_frame(2, NONE, _json_header(20) + b" ", b"1"),  # not exactly one value
    encode_frame(2, NONE, b'{"ServiceMethod":1}', b"1"),
    encode_frame(2, NONE, b"[1]", b"1"),
    encode_frame(2, NONE, b'{"ServiceMethod":"A.B","Seq":-1,"Error":""}', b"1"),
    encode_frame(2, NONE, b"{", b"1"),
    PREFIX.pack(2, NONE, SMALL_LIMIT + 1, 0),
    PREFIX.pack(9, NONE, 2, 1) + b"{}1",
]


def _gob_frames() -> list[bytes]:
    """A gob stream's frames (type definitions go with the first that needs
    them, so the stream's order is kept), and corrupt ones."""
    encoder = FramedEncoder(_lookup, "application/gob")
    frames = [
        encoder.encode(Header("Arith.Multiply", 1, ""), {"Num1": 6, "Num2": 7}),
        encoder.encode(Header("Arith.Multiply", 2, ""), {"Num1": 1, "Num2": 2}),
        encoder.encode(Header("A.B", 3, "bad"), {}),
        encoder.encode(Header("A.B", 4, ""), "é" * 300),
        encoder.encode(Header("A.B", 5, "", 7, {"k": "v"}), 5),
        encoder.encode(Header("A.B", 6, ""), [1, 2, 3]),
    ]
    return frames


def _gob_fatal_frames() -> list[bytes]:
    frame = FramedEncoder(_lookup, "application/gob").encode(Header("A.B", 1, ""), 5)
    # Steady-state header and body messages, from a second frame of the same stream.
    encoder = FramedEncoder(_lookup, "application/gob")
    encoder.encode(Header("A.B", 1, ""), 5)
    steady = encoder.encode(Header("A.B", 2, ""), 6)
    _, _, header_size, _ = PREFIX.unpack_from(steady)
    head, body = steady[10 : 10 + header_size], steady[10 + header_size :]
    return [
        frame + encode_frame(1, NONE, head + head, body),  # two headers in one region
        frame + encode_frame(1, NONE, head, body + body),  # two bodies in one region
        frame + encode_frame(1, NONE, head[:-1], head[-1:] + body),  # a header cut short
        frame + encode_frame(1, NONE, head, b""),
        frame + encode_frame(1, NONE, b"\x01\x00", body),  # type id 0
    ]


def _general_pair(decoder: FramedDecoder) -> tuple[Header, object] | None:
    """A pair the general way: through next_message."""
    header = decoder.next_message()
    if header is None:
        return None
    return decoder.decode_header(header), decoder.next_message()


def _outcome(decoder: FramedDecoder, chunks: list[bytes], fast: bool) -> list[Any]:
    """What a decoder makes of a stream fed in ``chunks``: each frame's header,
    its body's value (or error) and budget left, the error ending the stream,
    the per-call codecs, what stays buffered."""
    out: list[Any] = []
    take = decoder.next_pair if fast else lambda: _general_pair(decoder)
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            while (pair := take()) is not None:
                header, body = pair
                try:
                    value = decoder.decode_body(body)
                except Exception as error:
                    out.append((header, type(error), str(error)))
                else:
                    out.append((header, value, decoder.budget_left()))
    except Exception as error:
        out.append(("stream", type(error), str(error)))
    out.append((dict(decoder.codec_of_seq), decoder.buffered()))
    return out


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


class FastPathTests(SynchronousTestCase):
    """FramedDecoder.next_pair takes the common frame itself; whatever it
    makes of a stream must be what the general path (next_message) makes."""

    def assertSameAsGeneral(self, data: bytes, cuts: list[int], default: int | None) -> None:
        chunks = _chunks(data, cuts)
        fast, general = FramedDecoder(_lookup, SMALL_LIMIT), FramedDecoder(_lookup, SMALL_LIMIT)
        fast.default = general.default = default
        expected = _outcome(general, chunks, fast=False)
        got = _outcome(fast, chunks, fast=True)
        if got != expected:  # the first difference (a diff of thousands of entries takes minutes)
            first = next(
                (
                    i
                    for i, pair in enumerate(zip(got, expected, strict=False))
                    if pair[0] != pair[1]
                ),
                min(len(got), len(expected)),
            )
            self.fail(f"entry {first}: {got[first : first + 1]} != {expected[first : first + 1]}")
        return expected  # type: ignore[return-value]

    @given(
        st.lists(st.integers(min_value=0, max_value=len(_json_frames()) - 1), max_size=12),
        st.lists(st.integers(min_value=0), max_size=6),
        st.sampled_from([None, 2]),
        st.sampled_from([None, *range(len(_FATAL_JSON_FRAMES))]),
    )
    def test_json_and_msgpack_frames(
        self, picks: list[int], cuts: list[int], default: int | None, fatal: int | None
    ) -> None:
        frames = _json_frames()
        data = b"".join(frames[i] for i in picks)
        if fatal is not None:
            data += _FATAL_JSON_FRAMES[fatal] + frames[0]
        self.assertSameAsGeneral(data, cuts, default)

    def test_every_json_frame_in_one_read_and_byte_by_byte(self) -> None:
        data = b"".join(_json_frames())
        for cuts in ([], list(range(len(data)))):
            outcome = self.assertSameAsGeneral(data, cuts, 2)
            values = [entry[1] for entry in outcome[:-1]]  # type: ignore[index]
            self.assertEqual(len(values), len(_json_frames()))
            self.assertEqual(values[0], {"Num1": 6, "Num2": 7})
            self.assertEqual(values[3], {"Text": "é" * 70})
            self.assertEqual(values[6], ["é" * 300])
            self.assertEqual(values[13], "\ufffd\ufffd")
            self.assertEqual(values[19], "z" * 2000)
            self.assertEqual(values[21], BodyTooLarge)
            self.assertEqual(values[22], {"Num1": 1, "Text": "é"})
            self.assertEqual(values[23], CodecError)  # over its budget: its call only
            self.assertEqual(values[24], CodecError)
            self.assertEqual(outcome[-1], ({11: 3, 12: 3, 13: 3}, 0))  # type: ignore[index]

    def test_every_fatal_json_frame(self) -> None:
        for fatal in _FATAL_JSON_FRAMES:
            outcome = self.assertSameAsGeneral(_json_frames()[0] + fatal, [], None)
            self.assertEqual(outcome[-2][0], "stream", fatal)  # type: ignore[index]

    @given(
        st.lists(st.integers(min_value=0), max_size=6),
        st.sampled_from([None, *range(5)]),
    )
    def test_gob_frames(self, cuts: list[int], fatal: int | None) -> None:
        data = b"".join(_gob_frames())
        if fatal is not None:
            data = _gob_fatal_frames()[fatal]
        outcome = self.assertSameAsGeneral(data, cuts, None)
        if fatal is None:
            self.assertEqual(
                [entry[1] for entry in outcome[:-1]],  # type: ignore[index]
                [{"Num1": 6, "Num2": 7}, {"Num1": 1, "Num2": 2}, {}, "é" * 300, 5, [1, 2, 3]],
            )
        else:
            self.assertEqual(outcome[-2][0], "stream")  # type: ignore[index]

    def test_a_buffer_compacted_between_frames(self) -> None:
        """Frames of one size in a buffer that is compacted as they are taken
        (over 64 KiB consumed and half of it): the text read before the
        compaction must not be read at the new offsets (where it would hold
        earlier, valid frames of the same shape)."""
        encoder = FramedEncoder(_lookup, "application/json")
        first = encoder.encode(Header("A.B", 1, ""), 1)  # the codec is seen
        data = b"".join(encoder.encode(Header("A.B", seq, ""), seq) for seq in range(10000, 13000))
        cuts = [len(first), len(first) + 25]  # a frame across reads: a bytearray
        outcome = self.assertSameAsGeneral(first + data, cuts, None)
        self.assertEqual([entry[1] for entry in outcome[1:-1]], list(range(10000, 13000)))

    def test_the_common_frames_take_the_fast_path(self) -> None:
        """The small call of each codec is paired without next_message (and
        so without a second decode of its header or a slice of JSON)."""
        for name in ("application/json", "application/msgpack", "application/gob"):
            encoder = FramedEncoder(_lookup, name)
            decoder = FramedDecoder(_lookup, LIMIT)
            decoder.feed(encoder.encode(Header("Arith.Multiply", 1, ""), {"Num1": 6, "Num2": 7}))
            self.assertIsNotNone(decoder.next_pair())  # the codec is seen, gob's types sent

            def general() -> object:
                raise AssertionError("the general path")

            decoder.next_message = general  # type: ignore[method-assign]
            decoder.feed(encoder.encode(Header("Arith.Multiply", 2, ""), {"Num1": 6, "Num2": 8}))
            pair = decoder.next_pair()
            assert pair is not None
            self.assertEqual(pair[0], Header("Arith.Multiply", 2, ""), name)
            self.assertEqual(decoder.decode_body(pair[1]), {"Num1": 6, "Num2": 8}, name)

    def test_message_pairs_hand_out_the_decoders_own_pairing(self) -> None:
        from txgeerpc._messages import MessagePairs

        decoder = FramedDecoder(_lookup, LIMIT)
        pairs = MessagePairs(decoder)
        self.assertEqual(pairs.next_pair, decoder.next_pair)
        decoder.feed(_json_frames()[0])
        pair = pairs.next_pair()
        assert pair is not None
        self.assertEqual(pair[0][:2], ("Arith.Multiply", 1))
        self.assertIsNone(pairs.pending_header)
        self.assertIsNone(pairs.next_pair())


class _GeneralMsgpackDecoder(MsgpackDecoder):
    """msgpack as it was decoded before its shortcuts: no header read in
    place, every header through decode_value + header_of."""

    header_in = None  # type: ignore[assignment]
    decode_whole = None  # type: ignore[assignment]

    def decode_header(self, message: object) -> Header:
        return header_of(decode_value(message)[0])  # type: ignore[arg-type]


class _GeneralMsgpackCodec(MsgpackCodec):
    def new_decoder(self, max_message_size: int) -> MsgpackDecoder:
        return _GeneralMsgpackDecoder(max_message_size)


def _general_lookup(name: str) -> Any:
    return _GeneralMsgpackCodec() if name == MSGPACK else _lookup(name)


def _msgpack_frames() -> list[bytes]:
    """msgpack frames: common ones, headers the shortcut must decline, bodies
    that fail their call (over the budget, not msgpack), compressed and
    oversized bodies."""
    encoder = FramedEncoder(_lookup, MSGPACK)
    head = MsgpackCodec().new_encoder().encode_header
    common = head(Header("Arith.Multiply", 300, ""))
    return [
        encoder.encode(Header("Arith.Multiply", 1, ""), {"Num1": 6, "Num2": 7}),
        encoder.encode(Header("Arith.Multiply", 2**64 - 1, ""), [b"\x00", 1.5, None]),
        encoder.encode(Header("A.B", 3, "bad"), {}),
        encoder.encode(Header("A.B", 4, "", 7, {"k": "v"}), "é"),
        encoder.encode(Header("A.é", 5, ""), 5),
        encoder.encode(Header("x" * 40, 6, ""), 6),
        encoder.encode(Header("A.B", 7, ""), [[[]] * 2000] * 10),  # over its budget
        encode_frame(3, NONE, common, b"\xc1"),  # not msgpack: its call fails
        encode_frame(3, NONE, common, b"\x01\x02"),  # two values
        encode_frame(3, NONE, common[:-1] + b"\xa1x", b"\x01"),  # Error "x": the general path
        encode_frame(3, GZIP, common, compress(GZIP, b"\x02")),
        PREFIX.pack(3, NONE, len(common), SMALL_LIMIT + 1) + common + b"\x01" * (SMALL_LIMIT + 1),
        encode_frame(3, NONE, common + b"\x00", b"\x01"),  # extra data: the stream ends
    ]


class MsgpackFastPathTests(SynchronousTestCase):
    """next_pair reads a msgpack frame's common header in place and decodes
    its body in one call: what it makes of any stream must be what the
    general path makes of it with msgpack's general decoding."""

    def assertSameAsGeneral(self, data: bytes, cuts: list[int]) -> list[Any]:
        chunks = _chunks(data, cuts)
        fast = FramedDecoder(_lookup, SMALL_LIMIT)
        general = FramedDecoder(_general_lookup, SMALL_LIMIT)
        expected = _outcome(general, chunks, fast=False)
        self.assertEqual(_outcome(fast, chunks, fast=True), expected)
        return expected

    def test_every_frame(self) -> None:
        frames = _msgpack_frames()
        for cuts in ([], list(range(0, 200, 3)), list(range(len(b"".join(frames))))):
            outcome = self.assertSameAsGeneral(b"".join(frames), cuts)
            self.assertEqual(
                [entry[1] for entry in outcome[:-2]],
                [{"Num1": 6, "Num2": 7}, [b"\x00", 1.5, None], {}, "é", 5, 6]
                + [CodecError] * 3
                + [1, 2, BodyTooLarge],
            )
            self.assertEqual(outcome[0][0], Header("Arith.Multiply", 1, ""))
            self.assertEqual(outcome[9][0], Header("Arith.Multiply", 300, "x"))
            self.assertEqual(outcome[-2][0], "stream")  # the header with extra data

    @given(
        st.lists(st.integers(min_value=0, max_value=len(_msgpack_frames()) - 1), max_size=8),
        st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=3),
        st.lists(st.integers(min_value=0), max_size=4),
    )
    def test_frames_with_bytes_changed(
        self, picks: list[int], changes: list[tuple[int, int]], cuts: list[int]
    ) -> None:
        frames = _msgpack_frames()
        data = bytearray(b"".join(frames[i] for i in picks))
        for at, byte in changes:  # past the first frame's prefix (else: no msgpack at all)
            if len(data) > PREFIX.size:
                data[PREFIX.size + at % (len(data) - PREFIX.size)] = byte
        self.assertSameAsGeneral(bytes(data), cuts)

    def test_the_common_frame_skips_the_codecs_general_decoding(self) -> None:
        encoder = FramedEncoder(_lookup, MSGPACK)
        decoder = FramedDecoder(_lookup, LIMIT)
        decoder.feed(encoder.encode(Header("Arith.Multiply", 1, ""), {"Num1": 6, "Num2": 7}))
        self.assertIsNotNone(decoder.next_pair())  # the codec is seen
        codec_decoder = decoder._sides[3].decoder

        def general(message: object) -> object:
            raise AssertionError("the general path")

        codec_decoder.decode_header = general
        codec_decoder.decode_body = general
        decoder.feed(encoder.encode(Header("Arith.Multiply", 2, ""), {"Num1": 6, "Num2": 8}))
        pair = decoder.next_pair()
        assert pair is not None
        self.assertEqual(pair[0], Header("Arith.Multiply", 2, ""))
        self.assertEqual(decoder.decode_body(pair[1]), {"Num1": 6, "Num2": 8})
        self.assertEqual(
            decoder.budget_left(), (1 << 20) - 72 * len(msgpack.packb({"Num1": 6, "Num2": 8}))
        )


class FramedEncoderTests(SynchronousTestCase):
    def test_frames_are_the_prefix_and_the_codecs_parts(self) -> None:
        """Byte for byte what the codec's encode_parts makes, behind the prefix."""
        messages = [
            (Header("Arith.Multiply", 1, ""), 42),
            (Header("A.B", 2, "bad"), {}),
            (Header("A.B", 3, "", 7, {"k": "v"}), {"Text": "é" * 300}),
        ]
        for name, number in (
            ("application/gob", 1),
            ("application/json", 2),
            ("application/msgpack", 3),
        ):
            framed = FramedEncoder(_lookup, name)
            reference = _lookup(name).new_encoder()
            for header, body in messages:
                self.assertEqual(
                    framed.encode(header, body),
                    encode_frame(number, NONE, *reference.encode_parts(header, body)),
                    name,
                )

    def test_compressed_frames(self) -> None:
        framed = FramedEncoder(_lookup, "application/json", GZIP, threshold=100)
        head, body = (
            _lookup("application/json").new_encoder().encode_parts(Header("A.B", 1, ""), "x" * 500)
        )
        self.assertEqual(
            framed.encode(Header("A.B", 1, ""), "x" * 500),
            encode_frame(2, GZIP, head, compress(GZIP, body)),
        )
        self.assertEqual(framed.encode(Header("A.B", 2, ""), 1)[:2], bytes((2, NONE)))

    def test_withdraw_takes_back_only_the_last_frames_gob_types(self) -> None:
        framed = FramedEncoder(_lookup, "application/json")
        gob = framed.encode(Header("A.B", 1, ""), {"Num1": 1}, codec=1)
        state = framed.withdraw(gob)
        self.assertEqual(state[:2], bytes((1, NONE)))  # gob's type definitions, kept
        self.assertGreater(len(state), 10)
        framed.encode(Header("A.B", 2, ""), {"Num1": 1}, codec=1)
        reply = framed.encode(Header("A.B", 3, ""), 1)  # JSON: no stream state
        self.assertEqual(framed.withdraw(reply), b"")
