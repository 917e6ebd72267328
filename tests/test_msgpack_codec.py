"""The msgpack codec: the plain stream, its limits and budget, and calls."""

from __future__ import annotations

import msgpack
from twisted.trial.unittest import SynchronousTestCase

from tests._helpers import checked_clock, example_server
from txgeerpc import Header, connect, default_registry
from txgeerpc.codec import MSGPACK, MsgpackCodec
from txgeerpc.codec._msgpack import decode_body_bytes, decode_header_bytes, message_cost
from txgeerpc.errors import CodecError, MessageTooLarge, ProtocolError
from txgeerpc.examples import Args
from txgeerpc.testing import MemoryNetwork


def pairs(data: bytes, piece: int, max_size: int = 1 << 20) -> list[object]:
    decoder = MsgpackCodec().new_decoder(max_size)
    out = []
    for start in range(0, len(data), piece):
        decoder.feed(data[start : start + piece])
        while (message := decoder.next_message()) is not None:
            out.append(message)
    decoder_state = decoder.buffered()
    assert decoder_state == 0, decoder_state
    return out


class StreamTests(SynchronousTestCase):
    def test_registered_under_its_name_and_alias(self) -> None:
        self.assertEqual(default_registry.get("msgpack").name, MSGPACK)
        self.assertEqual(MSGPACK, "application/msgpack")

    def test_headers_and_bodies_in_any_pieces(self) -> None:
        encoder = MsgpackCodec().new_encoder()
        header = Header("Arith.Echo", 7, "", 5_000_000, {"k": "v"})
        data = encoder.encode(header, "x" * 3000) + encoder.encode(
            Header("Records.Echo", 8, ""), {"Name": "n", "Data": b"\x00\x01"}
        )
        for piece in (1, 7, 100, len(data)):
            decoder = MsgpackCodec().new_decoder(1 << 20)
            messages = pairs(data, piece)
            self.assertEqual(len(messages), 4)
            self.assertEqual(decoder.decode_header(messages[0]), header)
            self.assertEqual(decoder.decode_body(messages[1]), "x" * 3000)
            self.assertEqual(decoder.decode_header(messages[2]), Header("Records.Echo", 8, ""))
            self.assertEqual(decoder.decode_body(messages[3]), {"Name": "n", "Data": b"\x00\x01"})

    def test_structs_travel_as_maps_of_wire_names(self) -> None:
        encoder = MsgpackCodec().new_encoder()
        body = encoder.encode_body(Args(6, 7))
        self.assertEqual(msgpack.unpackb(body), {"Num1": 6, "Num2": 7})

    def test_split_encoding_matches_encode(self) -> None:
        encoder = MsgpackCodec().new_encoder()
        header = Header("A.B", 1, "oops")
        self.assertEqual(
            encoder.encode(header, None), encoder.encode_header(header) + encoder.encode_body({})
        )
        self.assertEqual(decode_header_bytes(encoder.encode_header(header)), header)
        self.assertEqual(decode_body_bytes(encoder.encode_body([1, "a"]))[0], [1, "a"])

    def test_bad_header_is_a_codec_error(self) -> None:
        full = {"ServiceMethod": "A.B", "Seq": 1, "Error": ""}
        for value in (
            [1],
            {"Seq": -1},
            {"Seq": True},
            {"ServiceMethod": 3},
            {**full, "TxgeerpcMeta": 1},
            {**full, "TxgeerpcBudget": "1"},
        ):
            with self.assertRaises(CodecError):
                decode_header_bytes(msgpack.packb(value))

    def test_unencodable_body_is_a_codec_error(self) -> None:
        with self.assertRaises(CodecError):
            MsgpackCodec().new_encoder().encode(Header("A.B", 1), 2**70)


class LimitTests(SynchronousTestCase):
    def test_message_growing_past_the_limit_is_refused_before_it_ends(self) -> None:
        # A str32 announcing 4 GiB: nothing is built while it arrives, and
        # it is refused once more than the limit is buffered.
        decoder = MsgpackCodec().new_decoder(1000)
        decoder.feed(b"\xdb\xff\xff\xff\xff" + b"x" * 990)
        self.assertIsNone(decoder.next_message())
        decoder.feed(b"x" * 10)
        with self.assertRaises(MessageTooLarge):
            decoder.next_message()

    def test_complete_message_over_the_limit_is_refused(self) -> None:
        decoder = MsgpackCodec().new_decoder(1000)
        decoder.feed(msgpack.packb("x" * 1200))
        with self.assertRaises(MessageTooLarge):
            decoder.next_message()

    def test_malformed_stream_is_a_protocol_error(self) -> None:
        decoder = MsgpackCodec().new_decoder(1000)
        decoder.feed(b"\xc1")  # never used in msgpack
        with self.assertRaises(ProtocolError):
            decoder.next_message()

    def test_many_empty_maps_are_over_their_budget_before_they_are_built(self) -> None:
        data = b"\xdd" + (60_000).to_bytes(4, "big") + b"\x80" * 60_000
        self.assertGreater(message_cost(data), 8 * len(data) + (1 << 20))
        with self.assertRaises(CodecError) as caught:
            decode_body_bytes(data)
        self.assertIn("expands", str(caught.exception))

    def test_cost_bounds_what_is_built(self) -> None:
        import tracemalloc

        for data in (
            msgpack.packb([{"a": [1.5, "é" * 3, b"xy"]}] * 3000),
            msgpack.packb([[]] * 20_000),
            msgpack.packb({str(i): i * 1000 for i in range(5000)}),
        ):
            msgpack.unpackb(data)
            tracemalloc.start()
            try:
                value = msgpack.unpackb(data)
                used = tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
            del value
            self.assertLessEqual(used, message_cost(data) + 4096)


class CallTests(SynchronousTestCase):
    def test_calls_over_msgpack(self) -> None:
        clock = checked_clock(self)
        network = MemoryNetwork(clock)
        port = network.listen(example_server(clock).port_factory())
        connecting = connect(network.reactor, f"tcp@{port.address}", codec="msgpack")
        network.flush()
        client = self.successResultOf(connecting)
        product = client.call("Arith.Multiply", Args(6, 7))
        keys = client.call("Records.Keys", {"b": 1, "a": 2})
        echoed = client.call("Arith.Echo", "é" * 20_000)
        failed = client.call("Arith.Divide", Args(1, 0))
        network.flush()
        self.assertEqual(self.successResultOf(product), 42)
        self.assertEqual(self.successResultOf(keys), ["a", "b"])
        self.assertEqual(self.successResultOf(echoed), "é" * 20_000)
        self.assertIn("divide by zero", str(self.failureResultOf(failed).value))
        client.close()
        network.flush()
        network.close()
