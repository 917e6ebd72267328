"""The protobuf codec: the length-prefixed stream, its limits and budget,
generated message classes as arguments and replies (from every codec), and
Describe's descriptors."""

from __future__ import annotations

import base64
import json

from google.protobuf import json_format
from twisted.trial.unittest import SynchronousTestCase

from examples.protobuf.stats_pb2 import Numbers, Summary
from examples.protobuf.stats_service import Stats
from tests._helpers import checked_clock, example_server
from txgeerpc import Header, connect, default_registry
from txgeerpc._convert import ConversionError, convert_within, converter_for
from txgeerpc._introspect import Introspection
from txgeerpc._protobuf import (
    DescribedMessages,
    PackedMessage,
    message_cost,
    parse_message,
    upper_factor,
)
from txgeerpc.codec import PROTOBUF, ProtobufCodec
from txgeerpc.codec._pbwire_pb2 import Body
from txgeerpc.codec._protobuf import (
    decode_body_bytes,
    decode_header_bytes,
    encode_body,
    encode_header,
    varint,
)
from txgeerpc.errors import CodecError, MessageTooLarge, ProtocolError
from txgeerpc.examples import Args
from txgeerpc.testing import MemoryNetwork


def messages(data: bytes, piece: int, max_size: int = 1 << 20) -> list[object]:
    decoder = ProtobufCodec().new_decoder(max_size)
    out = []
    for start in range(0, len(data), piece):
        decoder.feed(data[start : start + piece])
        while (message := decoder.next_message()) is not None:
            out.append(message)
    assert decoder.buffered() == 0, decoder.buffered()
    return out


class StreamTests(SynchronousTestCase):
    def test_registered_under_its_name_and_alias(self) -> None:
        self.assertEqual(default_registry.get("protobuf").name, PROTOBUF)
        self.assertEqual(PROTOBUF, "application/protobuf")

    def test_each_header_and_body_follows_its_length(self) -> None:
        encoder = ProtobufCodec().new_encoder()
        header = Header("Arith.Echo", 2**64 - 1, "", -5_000_000, {"k": "v"})
        data = encoder.encode(header, "x" * 3000)
        head = encode_header(header)
        body = encode_body("x" * 3000)
        self.assertEqual(data, varint(len(head)) + head + varint(len(body)) + body)
        self.assertEqual(varint(3000), b"\xb8\x17")

    def test_headers_and_bodies_in_any_pieces(self) -> None:
        encoder = ProtobufCodec().new_encoder()
        header = Header("Arith.Echo", 7, "", 5_000_000, {"k": "v"})
        data = encoder.encode(header, "é" * 3000) + encoder.encode(
            Header("Stats.Summarize", 8, ""), Numbers(label="w", values=[1, 2])
        )
        decoder = ProtobufCodec().new_decoder(1 << 20)
        for piece in (1, 7, 100, len(data)):
            found = messages(data, piece)
            self.assertEqual(len(found), 4)
            self.assertEqual(decoder.decode_header(found[0]), header)
            self.assertEqual(decoder.decode_body(found[1]), "é" * 3000)
            self.assertEqual(decoder.decode_header(found[2]), Header("Stats.Summarize", 8, ""))
            packed = decoder.decode_body(found[3])
            self.assertEqual(
                packed,
                PackedMessage(
                    "txgeerpc.examples.Numbers",
                    Numbers(label="w", values=[1, 2]).SerializeToString(),
                ),
            )

    def test_plain_values_keep_their_types(self) -> None:
        # None is {} (as in msgpack: Go has no null body).
        for value in (0, -(2**63), 2**64 - 1, 1.5, "s", b"\x00\xff", [1, "a"], {1: [b""]}):
            self.assertEqual(decode_body_bytes(encode_body(value))[0], value, value)
        self.assertEqual(decode_body_bytes(encode_body(Args(6, 7)))[0], {"Num1": 6, "Num2": 7})
        # Error replies carry {}, and an empty body is null.
        self.assertEqual(Body.FromString(encode_body(None)).plain, b"\x80")
        self.assertEqual(decode_body_bytes(b"")[0], None)

    def test_a_message_body_is_an_any_of_its_bytes(self) -> None:
        numbers = Numbers(label="w", values=[3, 1, 4])
        body = Body.FromString(encode_body(numbers))
        self.assertEqual(body.message.type_url, "type.googleapis.com/txgeerpc.examples.Numbers")
        self.assertEqual(body.message.value, numbers.SerializeToString())
        # A dict declared as a message class is converted first.
        self.assertEqual(
            encode_body({"label": "w", "values": [3, 1, 4]}, Numbers), encode_body(numbers)
        )

    def test_header_round_trip_and_zero_fields(self) -> None:
        for header in (Header("A.B", 1), Header("", 0), Header("A.B", 3, "oops", -1, None)):
            self.assertEqual(decode_header_bytes(encode_header(header)), header)

    def test_bad_input_is_a_one_line_error(self) -> None:
        for data, kind in ((b"\x0a\x05ab", "header"), (b"\xff", "header")):
            with self.assertRaises(CodecError) as caught:
                decode_header_bytes(data)
            self.assertIn(f"protobuf: bad {kind}", str(caught.exception))
            self.assertNotIn("\n", str(caught.exception))
        with self.assertRaises(CodecError) as caught:
            decode_body_bytes(b"\x12\x01\xc1")  # plain: a byte msgpack never uses
        self.assertNotIn("\n", str(caught.exception))
        with self.assertRaises(CodecError):
            encode_header(Header("A.B", 2**64))
        with self.assertRaises(CodecError):
            encode_body(2**70)
        with self.assertRaises(CodecError) as caught:
            encode_body({"values": ["x"]}, Numbers)
        self.assertIn("not a txgeerpc.examples.Numbers", str(caught.exception))


class LimitTests(SynchronousTestCase):
    def test_a_header_announcing_4_gib_is_refused_on_its_length(self) -> None:
        decoder = ProtobufCodec().new_decoder(1000)
        decoder.feed(varint(4 << 30))
        with self.assertRaises(MessageTooLarge) as caught:
            decoder.next_message()
        self.assertEqual((caught.exception.size, caught.exception.limit), (4 << 30, 1000))

    def test_a_body_over_the_limit_is_skipped_and_fails_its_call_only(self) -> None:
        encoder = ProtobufCodec().new_encoder()
        big = encoder.encode(Header("Arith.Echo", 1), "x" * 2000)
        small = encoder.encode(Header("Arith.Echo", 2), "ok")
        decoder = ProtobufCodec().new_decoder(1000)
        found = []
        for start in range(0, len(big + small), 300):
            decoder.feed((big + small)[start : start + 300])
            while (message := decoder.next_message()) is not None:
                found.append(message)
        self.assertEqual(len(found), 4)
        self.assertEqual(decoder.buffered(), 0)
        self.assertEqual(decoder.decode_header(found[0]), Header("Arith.Echo", 1))
        with self.assertRaises(CodecError) as caught:
            decoder.decode_body(found[1])
        self.assertIn("exceeds the maximum message size of 1000 bytes", str(caught.exception))
        self.assertEqual(decoder.decode_header(found[2]), Header("Arith.Echo", 2))
        self.assertEqual(decoder.decode_body(found[3]), "ok")

    def test_an_overlong_length_prefix_is_a_protocol_error(self) -> None:
        decoder = ProtobufCodec().new_decoder(1000)
        decoder.feed(b"\xff" * 9)
        self.assertIsNone(decoder.next_message())
        decoder.feed(b"\xff")
        with self.assertRaises(ProtocolError):
            decoder.next_message()

    def test_many_empty_messages_are_over_their_budget_before_they_are_parsed(self) -> None:
        # 300,000 empty Value entries of a map: 2 bytes each on the wire, far
        # more in protobuf's arena; costed from the bytes, refused unparsed.
        entry = b"\x2a\x00"  # Header.metadata (field 5): an empty map entry
        data = entry * 300_000
        self.assertGreater(message_cost(data, _header_descriptor()), 8 * len(data) + (1 << 20))
        with self.assertRaises(CodecError) as caught:
            decode_header_bytes(data)
        self.assertIn("expands", str(caught.exception))

    def test_large_strings_cost_their_length(self) -> None:
        numbers = Numbers(label="x" * 2_000_000, values=range(1000))
        data = numbers.SerializeToString()
        # Too large to take the shortcut; scanned: the label, 1000 values.
        self.assertGreater(upper_factor(Numbers.DESCRIPTOR) * len(data), 8 * len(data) + (1 << 20))
        cost = message_cost(data, Numbers.DESCRIPTOR)
        self.assertGreaterEqual(cost, len(data))
        self.assertLess(cost, 2 * len(data))
        self.assertEqual(parse_message(Numbers, data), numbers)

    def test_malformed_wire_data_is_refused(self) -> None:
        for data in (b"\x0a\x05ab", b"\x0b", b"\x12\x80"):
            with self.assertRaises(ValueError):
                message_cost(data, Numbers.DESCRIPTOR)


def _header_descriptor():  # type: ignore[no-untyped-def]
    from txgeerpc.codec._pbwire_pb2 import Header as HeaderMessage

    return HeaderMessage.DESCRIPTOR


class ConversionTests(SynchronousTestCase):
    def test_a_packed_message_is_parsed_by_the_declared_class(self) -> None:
        numbers = Numbers(label="w", values=[1])
        packed = PackedMessage("txgeerpc.examples.Numbers", numbers.SerializeToString())
        self.assertEqual(converter_for(Numbers)(packed), numbers)
        self.assertEqual(converter_for(Numbers)(None), Numbers())
        self.assertEqual(converter_for(Numbers)({"label": "w", "values": [1]}), numbers)

    def test_the_wrong_message_or_value_is_a_conversion_error(self) -> None:
        packed = PackedMessage("txgeerpc.examples.Summary", b"")
        for value in (
            packed,
            3,
            {"values": "x"},
            PackedMessage(Numbers.DESCRIPTOR.full_name, b"\xff"),
        ):
            with self.assertRaises(ConversionError) as caught:
                converter_for(Numbers)(value)
            self.assertNotIn("\n", str(caught.exception))

    def test_parsing_is_charged_against_the_budget(self) -> None:
        data = Numbers(label="x" * 100_000).SerializeToString()
        packed = PackedMessage("txgeerpc.examples.Numbers", data)
        _, left = convert_within(converter_for(Numbers), packed, 1 << 20)
        self.assertLessEqual(left, (1 << 20) - 100_000)
        with self.assertRaises(ConversionError) as caught:
            convert_within(converter_for(Numbers), packed, 50_000)
        self.assertIn("expands", str(caught.exception))


class CallTests(SynchronousTestCase):
    def _client(self, network: MemoryNetwork, address: str, codec: str):  # type: ignore[no-untyped-def]
        connecting = connect(network.reactor, f"tcp@{address}", codec=codec)
        network.flush()
        return self.successResultOf(connecting)

    def test_messages_and_plain_values_over_every_codec(self) -> None:
        clock = checked_clock(self)
        network = MemoryNetwork(clock)
        server = example_server(clock, max_message_size=100_000)
        server.register(Stats())
        port = network.listen(server.port_factory())
        numbers = Numbers(label="w", values=[3, 1, 4])
        summary = Summary(label="w", count=3, total=8, mean=8 / 3)
        for codec in ("protobuf", "json", "msgpack"):
            client = self._client(network, port.address, codec)
            typed = client.call("Stats.Summarize", numbers, result_type=Summary)
            from_dict = client.call("Stats.Summarize", {"label": "w", "values": [3, 1, 4]})
            product = client.call("Arith.Multiply", Args(6, 7))
            empty = client.call("Stats.Summarize", Numbers())
            network.flush()
            self.assertEqual(self.successResultOf(typed), summary, codec)
            reply = self.successResultOf(from_dict)
            if codec == "protobuf":
                self.assertEqual(converter_for(Summary)(reply), summary)
            else:  # proto3's JSON mapping
                self.assertEqual(reply, json_format.MessageToDict(summary))
            self.assertEqual(self.successResultOf(product), 42)
            self.assertIn("no numbers", str(self.failureResultOf(empty).value))
            client.close()
            network.flush()
        network.close()

    def test_an_oversized_body_fails_its_call_and_the_connection_goes_on(self) -> None:
        clock = checked_clock(self)
        network = MemoryNetwork(clock)
        port = network.listen(example_server(clock, max_message_size=10_000).port_factory())
        client = self._client(network, port.address, "protobuf")
        big = client.call("Arith.Echo", "x" * 20_000)
        network.flush()
        after = client.call("Arith.Echo", "ok")
        network.flush()
        self.assertIn("exceeds", str(self.failureResultOf(big).value))
        self.assertEqual(self.successResultOf(after), "ok")
        client.close()
        network.flush()
        network.close()


class DescribeTests(SynchronousTestCase):
    def test_describe_names_the_messages_and_hands_out_their_descriptors(self) -> None:
        clock = checked_clock(self)
        server = example_server(clock)
        server.register(Stats())
        description = json.loads(Introspection(server.services).Describe())
        method = description["Services"]["Stats"]["Summarize"]
        self.assertEqual(method["ArgumentMessage"], "txgeerpc.examples.Numbers")
        self.assertEqual(method["ReplyMessage"], "txgeerpc.examples.Summary")
        self.assertEqual(method["Argument"], "interface {}")
        self.assertNotIn("ArgumentMessage", description["Services"]["Arith"]["Multiply"])
        self.assertTrue(base64.b64decode(description["Protobuf"]))
        # Classes built from the descriptors convert JSON, and show replies.
        described = DescribedMessages(description)
        argument = described.argument("Stats.Summarize", {"label": "w", "values": [2]})
        self.assertEqual(
            argument.SerializeToString(), Numbers(label="w", values=[2]).SerializeToString()
        )
        self.assertEqual(described.argument("Arith.Multiply", {"Num1": 1}), {"Num1": 1})
        with self.assertRaises(ValueError) as caught:
            described.argument("Stats.Summarize", {"values": ["x"]})
        self.assertIn("not a txgeerpc.examples.Numbers", str(caught.exception))
        reply = PackedMessage("txgeerpc.examples.Summary", Summary(count=2).SerializeToString())
        self.assertEqual(described.shown(reply), {"count": 2})
        with self.assertRaises(ValueError):
            described.shown(PackedMessage("other.Type", b""))

    def test_servers_without_messages_describe_as_before(self) -> None:
        description = json.loads(
            Introspection(example_server(checked_clock(self)).services).Describe()
        )
        self.assertNotIn("Protobuf", description)
