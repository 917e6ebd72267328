"""
Decoding under a memory budget (issue 13, item 1) and conversion depth
(item 2): what a value's Python objects take is charged before they are made,
against a budget proportional to its message.
"""

from __future__ import annotations

import tracemalloc

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests._helpers import (
    JSON_OPTION,
    checked_clock,
    connected_server,
    example_server,
    json_request,
)
from txgeerpc._client_protocol import ClientProtocol
from txgeerpc._convert import MAX_DEPTH, ConversionError, converter_for
from txgeerpc._wire import Header, Option
from txgeerpc.codec import GobCodec
from txgeerpc.errors import CodecError, MessageTooLargeToSend
from txgeerpc.examples import Record
from txgeerpc.gob import Decoder, Encoder
from txgeerpc.gob._numbers import read_int, read_uint, uint_bytes
from txgeerpc.gob._types import INT, SliceOf, StructOf


def wide_slice_type(fields: int = 1000) -> SliceOf:
    """``[]Big``, ``Big`` a struct of ``fields`` int fields."""
    big = StructOf("Big", None)
    big.fields = tuple((f"F{i}", f"F{i}", INT) for i in range(fields))
    return SliceOf(big)


def with_elements(value: bytes, count: int, element: bytes = b"\x00") -> bytes:
    """A gob slice value message (of one element) made to hold ``count``
    copies of ``element``."""
    _, start = read_int(value, 0)
    return value[:start] + b"\x00" + uint_bytes(count) + element * count


def wide_struct_stream(count: int, fields: int = 1000, element: bytes = b"\x00") -> bytes:
    """A gob stream: the definition of ``[]Big`` (``Big``: ``fields`` int
    fields), then a slice of ``count`` elements, each ``element`` (by default
    a zero value: just the end of the struct)."""
    one = Encoder().encode([{}], wide_slice_type(fields))
    frames, pos = [], 0
    while pos < len(one):
        length, pos = read_uint(one, pos)
        frames.append(one[pos : pos + length])
        pos += length
    payload = with_elements(frames.pop(), count, element)
    return b"".join(uint_bytes(len(frame)) + frame for frame in [*frames, payload])


def decode_peak(data: bytes) -> tuple[object, int]:
    """(the value, or the CodecError), and the peak bytes allocated decoding it."""
    decoder = Decoder(8 << 20)
    decoder.feed(data)
    message = decoder.next_message()
    tracemalloc.start()
    try:
        try:
            result: object = decoder.decode(message)
        except CodecError as error:
            result = error
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


class GobBudgetTests(SynchronousTestCase):
    def test_zero_structs_refused_before_they_are_built(self) -> None:
        # The finding: 1 MB of zero-valued 1,000-field structs took ~800 MB.
        data = wide_struct_stream(1_000_000)
        result, peak = decode_peak(data)
        self.assertIsInstance(result, CodecError)
        self.assertIn("expands to far more than its message", str(result))
        self.assertLess(peak, 2 << 20)  # within the first few dozen elements

    def test_struct_per_element_charged_at_its_real_size(self) -> None:
        # Each element sets one field (3 bytes): the slice's pointers fit the
        # budget, but each dict of 1,000 fields is charged before it is made.
        data = wide_struct_stream(300_000, element=b"\x01\x02\x00")
        result, peak = decode_peak(data)
        self.assertIsInstance(result, CodecError)
        budget = Decoder(8 << 20).memory_budget(len(data))
        self.assertLess(peak, budget + (1 << 20))
        self.assertLess(peak, 10 * len(data))

    def test_values_within_the_budget_decode(self) -> None:
        result, _ = decode_peak(wide_struct_stream(20))
        assert isinstance(result, list)
        self.assertEqual(len(result), 20)
        self.assertEqual(result[0]["F999"], 0)
        numbers = list(range(-70_000, 70_000, 7))  # multi-byte ints, charged one by one
        decoder = Decoder(8 << 20)
        decoder.feed(Encoder().encode(numbers))
        self.assertEqual(decoder.next_value(), (numbers,))

    def test_budget_is_proportional_with_a_cap(self) -> None:
        decoder = Decoder(1 << 30)
        self.assertEqual(decoder.memory_budget(1000), 8 * 1000 + (1 << 20))
        self.assertEqual(decoder.memory_budget(1 << 29), 256 << 20)

    def test_one_byte_scalars_are_shared(self) -> None:
        decoder = Decoder(1 << 20)
        decoder.feed(Encoder().encode([-60] * 3) + Encoder().encode([0.0] * 3))
        (ints,) = decoder.next_value()  # type: ignore[misc]
        decoder = Decoder(1 << 20)
        decoder.feed(Encoder().encode([0.0] * 3))
        (floats,) = decoder.next_value()  # type: ignore[misc]
        self.assertIs(ints[0], ints[2])
        self.assertIs(floats[0], floats[2])


def nested_record(depth: int) -> dict[str, object]:
    value: dict[str, object] = {"Name": "leaf"}
    for _ in range(depth):
        value = {"Child": value}
    return value


class ConversionDepthTests(SynchronousTestCase):
    def test_deep_value_is_a_clean_error_not_a_recursion_error(self) -> None:
        # The finding: 900 levels (within the decoder's limit) hit RecursionError.
        error = self.assertRaises(ConversionError, converter_for(Record), nested_record(900))
        self.assertIn(f"nested more than {MAX_DEPTH} levels deep", str(error))

    def test_depth_within_the_limit_converts_and_the_counter_resets(self) -> None:
        for _ in range(2):
            record = converter_for(Record)(nested_record(MAX_DEPTH - 1))
            self.assertIsInstance(record.Child, Record)
        self.assertRaises(ConversionError, converter_for(Record), nested_record(MAX_DEPTH))
        self.assertIsInstance(converter_for(Record)(nested_record(3)), Record)


class OversizedRequestTests(SynchronousTestCase):
    """A request body over ``max_message_size`` gets an error reply naming the
    limit (issue 13, item 6)."""

    def setUp(self) -> None:
        self.server = example_server(checked_clock(self), max_message_size=1000)
        self.protocol, self.transport = connected_server(self, self.server)

    def test_gob_body_is_skipped_answered_and_the_connection_goes_on(self) -> None:
        encoder = GobCodec().new_encoder()
        decoder = GobCodec().new_decoder(1 << 20)
        first = encoder.encode(Header("Arith.Echo", 1, ""), "x" * 5000)
        second = encoder.encode(Header("Foo.Sum", 2, ""), {"Num1": 2, "Num2": 3})
        self.protocol.dataReceived(Option().to_json())
        for start in range(0, len(first), 512):  # the body arrives in pieces
            self.protocol.dataReceived(first[start : start + 512])
        self.protocol.dataReceived(second)
        decoder.feed(self.transport.value())
        replies = []
        while (message := decoder.next_message()) is not None:
            replies.append(message)
        header = decoder.decode_header(replies[0])
        self.assertEqual(
            header.error, "body of 5005 bytes exceeds the maximum message size of 1000 bytes"
        )
        self.assertEqual(decoder.decode_header(replies[2]).error, "")
        self.assertEqual(decoder.decode_body(replies[3]), 5)
        self.assertFalse(self.transport.disconnecting)

    def test_json_body_is_answered_before_the_close(self) -> None:
        self.protocol.dataReceived(JSON_OPTION)
        self.protocol.dataReceived(json_request("Arith.Echo", 7, b'"' + b"x" * 5000 + b'"'))
        header = self.transport.value().split(b"\n")[0]
        self.assertEqual(
            header,
            b'{"ServiceMethod":"Arith.Echo","Seq":7,"Error":"rpc server: request body exceeds '
            b'the maximum message size of 1000 bytes (closing the connection)"}',
        )
        self.assertTrue(self.transport.disconnecting)


class RefuseToSendTests(SynchronousTestCase):
    """The client does not send a request over its ``max_message_size`` (the
    server's limit by default): the call fails at once, the stream stays good."""

    def test_gob_argument_over_the_limit_is_not_sent(self) -> None:
        protocol = ClientProtocol(GobCodec(), Option(), checked_clock(self), 1000)
        transport = StringTransport()
        protocol.makeConnection(transport)
        transport.clear()
        failure = self.failureResultOf(
            protocol.call("Arith.Echo", ["x" * 2000]), MessageTooLargeToSend
        )
        self.assertEqual(failure.value.limit, 1000)
        self.assertEqual(protocol.pending, 0)
        sent = transport.value()
        self.assertLess(len(sent), 200)  # the type definitions only
        pending = protocol.call("Arith.Echo", ["ok"])  # refers to the []string sent above
        server = GobCodec().new_decoder(1 << 20)
        server.feed(sent + transport.value()[len(sent) :])
        header = server.decode_header(server.next_message())
        self.assertEqual((header.service_method, header.seq), ("Arith.Echo", 2))
        self.assertEqual(server.decode_body(server.next_message()), ["ok"])
        protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(pending)
