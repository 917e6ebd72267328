"""
txgeerpc.gob: the wire format against docs/protocol.md 4.3, the recorded Go
sessions, and bytes captured from Go's own encoding/gob.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import gob
from txgeerpc._convert import converter_for
from txgeerpc._wire import Header
from txgeerpc.codec import GobCodec
from txgeerpc.errors import BodyTooLarge, CodecError, MessageTooLarge, ProtocolError
from txgeerpc.examples import Args, Point, Record
from txgeerpc.gob import _decoder as gob_decoder
from txgeerpc.gob import _types as gob_types
from txgeerpc.gob._numbers import read_int, read_uint, write_float, write_int, write_uint

from ._helpers import gob_frames

# Captured from Go 1.27.3's encoding/gob (tests/interop/gobcapture/main.go
# prints them; test_interop_gob.py re-checks them against a live Go build).
GO_CAPTURES = {
    # Holder{Name: "h", I: Point{3, -4}}: Point's definition travels inside
    # the value message, which then continues in a second message.
    "iface_inline_def": "227f03010106486f6c64657201ff8000010201044e616d65010c0001014901100000"
    "0030ff80010168010a6d61696e2e506f696e74ff8103010105506f696e7401ff820001020101580104"
    "00010159010400000009ff8205010601070000",
    # Holder{Name: "n", I: Inner{Label: "in", J: Leaf{V: []int{1, 2}}}}: a
    # definition nested inside an interface inside an interface.
    "iface_nested_defs": "227f03010106486f6c64657201ff8000010201044e616d65010c000101490110000000"
    "34ff8001016e010a6d61696e2e496e6e6572ff8303010105496e6e657201ff8400010201054c616265"
    "6c010c0001014a01100000004aff84280102696e01096d61696e2e4c656166ff85030101044c656166"
    "01ff8600010101015601ff8800000013ff87020101055b5d696e7401ff88000104000009ff86050102"
    "0204000000",
    "iface_basic": "227f03010106486f6c64657201ff8000010201044e616d65010c000101490110000000"
    "13ff800206737472696e670c0600047465787400",
    "iface_nil": "227f03010106486f6c64657201ff8000010201044e616d65010c00010149011000000008"
    "ff8001036e696c00",
    # WithArray{A [3]int; P Point; Q *Point; M map[int]string}{}: the zero
    # array and the zero struct are sent, the nil pointer and empty map are not.
    "zero_fields": "33ff890301010957697468417272617901ff8a00010401014101ff8c0001015001ff8200"
    "01015101ff820001014d01ff8e00000016ff8b010101065b335d696e7401ff8c000104010600001fff"
    "8103010105506f696e7401ff8200010201015801040001015901040000001eff8d0401010e6d61705b"
    "696e745d737472696e6701ff8e000104010c00000aff8a0103000000010000",
    "array_ptr_map": "33ff890301010957697468417272617901ff8a00010401014101ff8c0001015001ff82"
    "0001015101ff820001014d01ff8e00000016ff8b010101065b335d696e7401ff8c000104010600001f"
    "ff8103010105506f696e7401ff8200010201015801040001015901040000001eff8d0401010e6d6170"
    "5b696e745d737472696e6701ff8e000104010c000015ff8a0103000a000100010001010e0573657665"
    "6e00",
    # []interface{}{1, "a", nil, 2.5, []string{"x"}}
    "top_slice_iface": "0cff8f020102ff9000011000003cff90000503696e740402000206737472696e670c"
    "030001610007666c6f61743634080400fe0440085b5d737472696e67ff91020102ff9200010c000007"
    "ff920400010178",
    # []interface{}{Point{1, 2}, 1, ..., 59}: Point's definition splits the
    # value before most of its 60 elements.
    "iface_slice_split": (
        "0cff8f020102ff9000011000002eff90003c0a6d61696e2e506f696e74ff8103010105506f696e7401ff"
        "820001020101580104000101590104000000fe01e0ff8205010201040003696e740402000203696e7404"
        "02000403696e740402000603696e740402000803696e740402000a03696e740402000c03696e74040200"
        "0e03696e740402001003696e740402001203696e740402001403696e740402001603696e740402001803"
        "696e740402001a03696e740402001c03696e740402001e03696e740402002003696e740402002203696e"
        "740402002403696e740402002603696e740402002803696e740402002a03696e740402002c03696e7404"
        "02002e03696e740402003003696e740402003203696e740402003403696e740402003603696e74040200"
        "3803696e740402003a03696e740402003c03696e740402003e03696e740402004003696e740402004203"
        "696e740402004403696e740402004603696e740402004803696e740402004a03696e740402004c03696e"
        "740402004e03696e740402005003696e740402005203696e740402005403696e740402005603696e7404"
        "02005803696e740402005a03696e740402005c03696e740402005e03696e740402006003696e74040200"
        "6203696e740402006403696e740402006603696e740402006803696e740402006a03696e740402006c03"
        "696e740402006e03696e740402007003696e740402007203696e740402007403696e7404020076"
    ),
    "uint_max": "0b0600f8ffffffffffffffff",
    "int_min": "0b0400f8ffffffffffffffff",
}

GO_CAPTURED_VALUES: dict[str, Any] = {
    "iface_inline_def": {"Name": "h", "I": {"X": 3, "Y": -4}},
    "iface_nested_defs": {"Name": "n", "I": {"Label": "in", "J": {"V": [1, 2]}}},
    "iface_basic": {"Name": "", "I": "text"},
    "iface_nil": {"Name": "nil", "I": None},
    "zero_fields": {"A": [0, 0, 0], "P": {"X": 0, "Y": 0}, "Q": None, "M": {}},
    "array_ptr_map": {
        "A": [0, 5, 0],
        "P": {"X": 0, "Y": 0},
        "Q": {"X": 0, "Y": 0},
        "M": {7: "seven"},
    },
    "top_slice_iface": [1, "a", None, 2.5, ["x"]],
    "iface_slice_split": [{"X": 1, "Y": 2}, *range(1, 60)],
    "uint_max": 2**64 - 1,
    "int_min": -(2**63),
}


def decode_stream(data: bytes, limit: int = 1 << 20) -> list[Any]:
    decoder = gob.Decoder(limit)
    decoder.feed(data)
    values = []
    while (value := decoder.next_value()) is not None:
        values.append(value[0])
    return values


def decode_bytewise(data: bytes, limit: int = 1 << 20) -> list[Any]:
    decoder = gob.Decoder(limit)
    values = []
    for index in range(len(data)):
        decoder.feed(data[index : index + 1])
        while (value := decoder.next_value()) is not None:
            values.append(value[0])
    return values


class NumberTests(SynchronousTestCase):
    """The integer and float encodings of docs/protocol.md 4.3."""

    def test_unsigned(self) -> None:
        for value, encoded in [(0, "00"), (7, "07"), (127, "7f"), (128, "ff80"), (256, "fe0100")]:
            out = bytearray()
            write_uint(out, value)
            self.assertEqual(out.hex(), encoded, value)
            self.assertEqual(read_uint(bytes(out), 0), (value, len(out)))
        out = bytearray()
        write_uint(out, 2**64 - 1)
        self.assertEqual(out.hex(), "f8" + "ff" * 8)

    def test_signed(self) -> None:
        for value, encoded in [
            (1, "02"),
            (3, "06"),
            (7, "0e"),
            (64, "ff80"),
            (-64, "7f"),
            (65, "ff82"),
            (-65, "ff81"),
            (-1, "01"),
        ]:
            out = bytearray()
            write_int(out, value)
            self.assertEqual(out.hex(), encoded, value)
            self.assertEqual(read_int(bytes(out), 0), (value, len(out)))

    def test_float_is_byte_reversed(self) -> None:
        out = bytearray()
        write_float(out, 1.5)
        self.assertEqual(out.hex(), "fef83f")  # Go: 05 08 00 fe f8 3f for a top-level 1.5

    def test_more_than_eight_bytes_is_an_error(self) -> None:
        with self.assertRaises(CodecError):
            read_uint(b"\xf7" + b"\x01" * 9, 0)


class GoCaptureTests(SynchronousTestCase):
    """Bytes from Go's encoder decode to what Go encoded, whole and byte by byte."""

    def test_captures(self) -> None:
        for name, text in GO_CAPTURES.items():
            data = bytes.fromhex(text)
            self.assertEqual(decode_stream(data), [GO_CAPTURED_VALUES[name]], name)
            self.assertEqual(decode_bytewise(data), [GO_CAPTURED_VALUES[name]], name)

    def test_record_decodes_into_the_dataclass(self) -> None:
        value = Record(
            Name="n",
            ID=2**64 - 1,
            Points=[Point(1, 2)],
            Counts={"a": 1},
            Child=Record(Name="c"),
            weight=3,
            Extra=[1, 2],
        )
        (plain,) = decode_stream(gob.Encoder().encode(value))
        self.assertEqual(plain["Weight"], 3)  # the Go name on the wire
        self.assertEqual(plain["Child"]["Child"], None)  # nil pointer
        self.assertEqual(plain["Child"]["Tags"], [])
        self.assertEqual(converter_for(Record)(plain), value)


class EncoderTests(SynchronousTestCase):
    def test_definitions_once_per_encoder(self) -> None:
        encoder = gob.Encoder()
        first = encoder.encode(Args(1, 2))
        second = encoder.encode(Args(3, 4))
        self.assertEqual(
            first.hex(" "),
            "23 7f 03 01 01 04 41 72 67 73 01 ff 80 00 01 02 01 04 4e 75 6d 31 01 04 00 "
            "01 04 4e 75 6d 32 01 04 00 00 00 07 ff 80 01 02 01 04 00",
        )
        self.assertEqual(second.hex(" "), "07 ff 80 01 06 01 08 00")
        self.assertEqual(gob.Encoder().encode(Args(3, 4))[-8:], second)

    def test_zero_fields_are_left_out(self) -> None:
        encoder = gob.Encoder()
        encoder.encode(Args())
        self.assertEqual(encoder.encode(Args(7, 0)).hex(" "), "05 ff 80 01 0e 00")
        self.assertEqual(encoder.encode(Args(0, 0)).hex(" "), "03 ff 80 00")

    def test_basic_top_level_values(self) -> None:
        encoder = gob.Encoder()
        self.assertEqual(encoder.encode(3).hex(" "), "03 04 00 06")
        self.assertEqual(encoder.encode("hi").hex(" "), "05 0c 00 02 68 69")
        self.assertEqual(encoder.encode(True).hex(" "), "03 02 00 01")
        self.assertEqual(encoder.encode(b"\x01\x02").hex(" "), "05 0a 00 02 01 02")
        self.assertEqual(encoder.encode(1.5).hex(" "), "05 08 00 fe f8 3f")
        self.assertEqual(encoder.encode(complex(1.5, -2)).hex(" "), "07 0e 00 fe f8 3f ff c0")
        self.assertEqual(encoder.encode(300, gob.Uint).hex(" "), "05 06 00 fe 01 2c")

    def test_wrong_types_name_the_field(self) -> None:
        with self.assertRaises(CodecError) as caught:
            gob.Encoder().encode(Args("x", 1))  # type: ignore[arg-type]
        self.assertEqual(str(caught.exception), "gob: Args.Num1: expected int, got str 'x'")
        with self.assertRaises(CodecError) as caught:
            gob.Encoder().encode(Record(Points=[Point(), Point(X=2**63)]))
        self.assertIn("Record.Points[1].Point.X", str(caught.exception))
        self.assertIn("overflows Go int", str(caught.exception))
        with self.assertRaises(CodecError) as caught:
            gob.Encoder().encode(-1, gob.Uint)
        self.assertIn("does not fit Go uint64", str(caught.exception))

    def test_a_failed_encode_changes_nothing(self) -> None:
        encoder = gob.Encoder()
        with self.assertRaises(CodecError):
            encoder.encode(Record(Points=[Point(X="bad")]))  # type: ignore[arg-type]
        stream = encoder.encode(Record(Name="ok", Points=[Point(1, 1)]))
        self.assertEqual(decode_stream(stream)[0]["Points"], [{"X": 1, "Y": 1}])
        self.assertEqual(stream, gob.Encoder().encode(Record(Name="ok", Points=[Point(1, 1)])))

    def test_unregistered_struct_in_interface(self) -> None:
        with self.assertRaises(CodecError) as caught:
            gob.Encoder().encode(Record(Extra=Point(1, 2)))
        self.assertIn("type not registered for interface", str(caught.exception))
        self.assertIn("register_name", str(caught.exception))

    def test_registered_struct_in_interface(self) -> None:
        @dataclass
        class Inner:
            Label: str = ""
            J: Any = None

        gob.register_name("tests.Inner", Inner)
        encoder = gob.Encoder()
        data = encoder.encode(Record(Extra=Inner("in", [1, 2])))
        (plain,) = decode_stream(data)
        self.assertEqual(plain["Extra"], Inner("in", [1, 2]))  # registered: back as the class

    def test_inferred_types(self) -> None:
        self.assertEqual(gob.infer_type({"Num1": 1}).name, "")  # exported keys: a struct
        self.assertEqual(gob.infer_type({"a": 1}).name, "map[string]int")
        self.assertEqual(gob.infer_type([1, 2.5]).name, "[]float64")
        self.assertEqual(gob.infer_type([1, "a"]).name, "[]interface {}")
        self.assertEqual(gob.infer_type(2**64 - 1).name, "uint")
        with self.assertRaises(gob.UnsupportedType):
            gob.infer_type(None)
        with self.assertRaises(gob.UnsupportedType):
            gob.infer_type(object())

    def test_dicts_and_explicit_types(self) -> None:
        encoder = gob.Encoder()
        stream = (
            encoder.encode({"Num1": 6, "Num2": 7})
            + encoder.encode({"a": 1}, dict[str, int])
            + encoder.encode(gob.GobValue(5, gob.Uint))
        )
        self.assertEqual(decode_stream(stream), [{"Num1": 6, "Num2": 7}, {"a": 1}, 5])
        self.assertEqual(encoder.encode(gob.GobValue(5, gob.Uint)).hex(" "), "03 06 00 05")

    def test_snake_case_field_travels_under_its_go_name(self) -> None:
        @dataclass
        class Tagged:
            request_id: int = field(default=0, metadata={"go_name": "RequestID"})
            note: Optional[str] = None  # noqa: UP045

        (plain,) = decode_stream(gob.Encoder().encode(Tagged(5, "x")))
        self.assertEqual(plain, {"RequestID": 5, "note": "x"})
        self.assertEqual(converter_for(Tagged)(plain), Tagged(5, "x"))

    def test_recursive_struct_and_self_reference(self) -> None:
        node = Record(Name="a", Child=Record(Name="b", Child=Record(Name="c")))
        (plain,) = decode_stream(gob.Encoder().encode(node))
        self.assertEqual(converter_for(Record)(plain), node)
        loop = Record(Name="loop")
        loop.Child = loop
        with self.assertRaises(CodecError) as caught:
            gob.Encoder().encode(loop)
        self.assertIn("nested too deeply", str(caught.exception))

    def test_lone_surrogates_become_replacement_characters(self) -> None:
        (plain,) = decode_stream(gob.Encoder().encode("a\ud800b"))
        self.assertEqual(plain, "a\ufffdb")

    def test_make_dataclass_fields_keep_order(self) -> None:
        cls = dataclasses.make_dataclass("Dyn", [("B", int, 0), ("A", str, "")])
        self.assertEqual(decode_stream(gob.Encoder().encode(cls(1, "x"))), [{"B": 1, "A": "x"}])


class DecoderErrorTests(SynchronousTestCase):
    def test_announced_size_over_the_limit_fails_before_the_body(self) -> None:
        decoder = gob.Decoder(max_message_size=100)
        decoder.feed(b"\xfe\x01\x00\x01")  # 256 bytes of a type definition announced
        with self.assertRaises(MessageTooLarge) as caught:
            decoder.next_message()
        self.assertEqual((caught.exception.size, caught.exception.limit), (256, 100))

    def test_giant_size_fails_before_anything_else(self) -> None:
        decoder = gob.Decoder(max_message_size=100)
        decoder.feed(b"\xf8\x7f\xff\xff\xff\xff\xff\xff\xff")  # 2**63 - 1 announced
        with self.assertRaises(MessageTooLarge) as caught:
            decoder.next_message()
        self.assertEqual(caught.exception.size, 2**63 - 1)

    def test_oversized_value_is_skipped_unbuffered_and_the_stream_goes_on(self) -> None:
        encoder = gob.Encoder()
        small = encoder.encode(Args(1, 2))  # defines Args
        big = encoder.encode(["x" * 150])  # []string: no interfaces, can be skipped
        after = encoder.encode(Args(3, 4))
        decoder = gob.Decoder(max_message_size=100)
        decoder.feed(small + big[:-100])
        self.assertEqual(decoder.next_value(), ({"Num1": 1, "Num2": 2},))
        oversized = decoder.next_message()  # []string defined, its value skipped
        with self.assertRaises(BodyTooLarge) as caught:
            decoder.decode(oversized)
        self.assertEqual((caught.exception.size, caught.exception.limit), (156, 100))
        self.assertEqual(decoder.buffered(), 0)  # nothing of it is kept
        self.assertIsNone(decoder.next_message())
        decoder.feed(big[-100:] + after)
        self.assertEqual(decoder.next_value(), ({"Num1": 3, "Num2": 4},))

    def test_duplicate_and_reserved_definitions_are_fatal(self) -> None:
        definition = gob.Encoder().encode(Args(1, 2))[:36]
        decoder = gob.Decoder(1000)
        decoder.feed(definition + definition)
        with self.assertRaises(ProtocolError) as caught:
            decoder.next_message()
        self.assertIn("duplicate type", str(caught.exception))
        reserved = bytes([definition[0], 0x27]) + definition[2:]  # id -20
        decoder = gob.Decoder(1000)
        decoder.feed(reserved)
        with self.assertRaises(ProtocolError):
            decoder.next_message()

    def test_a_bad_value_fails_alone(self) -> None:
        decoder = gob.Decoder(1000)
        # A value of a type never defined, then a good int.
        decoder.feed(b"\x03\xff\xa0\x00" + gob.Encoder().encode(5))
        bad = decoder.next_message()
        with self.assertRaises(CodecError) as caught:
            decoder.decode(bad)
        self.assertIn("unknown type id 80", str(caught.exception))
        self.assertEqual(decoder.next_value(), (5,))

    def test_counts_beyond_the_message_fail_without_allocating(self) -> None:
        encoder = gob.Encoder()
        good = encoder.encode([1, 2, 3])
        # Replace the element count (3) by 2**62 in the value message.
        definition, value = good[: good[0] + 1], good[good[0] + 1 :]
        huge = bytearray(value[1:-4])  # type id and singleton marker
        write_uint(huge, 2**62)
        huge += b"\x02\x04\x06"
        decoder = gob.Decoder(1000)
        decoder.feed(definition + bytes([len(huge)]) + huge)
        with self.assertRaises(CodecError) as caught:
            decoder.next_value()
        self.assertIn("exceeds the message", str(caught.exception))

    def test_garbage_is_a_codec_error(self) -> None:
        for garbage in [b"\x02\x04\x05", b"\x04\x04\x00\x06\x00", b"\x03\x0c\x00\x09", b"\x01\x00"]:
            decoder = gob.Decoder(1000)
            decoder.feed(garbage)
            with self.assertRaises((ProtocolError, CodecError), msg=garbage.hex()):
                decoder.next_value()

    def test_deep_nesting_is_a_codec_error(self) -> None:
        node = Node()
        for _ in range(5000):
            node = Node(Next=node)
        with self.assertRaises(CodecError):
            gob.Encoder().encode(node)
        stream = gob.Encoder().encode(Node(1))
        definition = stream[: stream[0] + 1]
        self.assertEqual(decode_stream(stream), [{"Value": 1, "Next": None}])
        # Node{Next: &Node{Next: ...}} 3000 deep: delta 2 to Next, then 0s to close.
        deep = b"\xff\x80" + b"\x02" * 3000 + b"\x00" * 3001
        decoder = gob.Decoder(1 << 20)
        decoder.feed(definition + _frame(deep))
        with self.assertRaises(CodecError) as caught:
            decoder.next_value()
        self.assertEqual(str(caught.exception), "gob: value nested more than 200 levels deep")

    def test_depth_limit_is_explicit_and_the_stream_goes_on(self) -> None:
        # 200 nested structs decode; 201 are refused (an explicit limit, not
        # RecursionError at about 900), and the next value decodes.
        stream = gob.Encoder().encode(Node(1))
        definition = stream[: stream[0] + 1]
        decoder = gob.Decoder(1 << 20)
        decoder.feed(definition)
        for levels in (200, 201, 200):
            decoder.feed(_frame(b"\xff\x80" + b"\x02" * (levels - 1) + b"\x00" * levels))
            if levels > gob_decoder.MAX_DEPTH:
                with self.assertRaises(CodecError) as caught:
                    decoder.next_value()
                self.assertIn("nested more than 200 levels deep", str(caught.exception))
                continue
            (value,) = decoder.next_value()  # type: ignore[misc]
            depth = 0
            while value is not None:
                value, depth = value["Next"], depth + 1
            self.assertEqual(depth, levels)


@dataclass
class Node:
    Value: int = 0
    Next: Optional[Node] = None  # noqa: UP045


def _frame(payload: bytes) -> bytes:
    out = bytearray()
    write_uint(out, len(payload))
    return bytes(out) + payload


class ReviewRegressionTests(SynchronousTestCase):
    """Bugs an independent review found, each pinned."""

    def test_a_repeated_inline_definition_ends_the_stream_at_once(self) -> None:
        # S{A interface{}} whose interface opens with an inline []int definition,
        # then the same definition again: Go says "duplicate type received".
        frames = gob_frames(bytes.fromhex(GO_CAPTURES["iface_inline_def"]))
        definition_frame = frames[1]  # Holder's value up to Point's inline definition
        point_definition = definition_frame[definition_frame.index(b"\xff\x81") :]
        repeated = frames[0] + definition_frame + _frame(point_definition) * 2000 + frames[2]
        decoder = gob.Decoder(1 << 20)
        decoder.feed(repeated)
        with self.assertRaises(ProtocolError) as caught:
            decoder.next_value()
        self.assertIn("duplicate type", str(caught.exception))

    def test_struct_values_cannot_expand_far_beyond_their_message(self) -> None:
        wide = dataclasses.make_dataclass("Wide", [(f"F{i}", int, 0) for i in range(1000)])
        encoder = gob.Encoder()
        data = encoder.encode([wide()] * 20000, list[wide])  # type: ignore[valid-type]
        decoder = gob.Decoder(1 << 20)
        decoder.feed(data)
        with self.assertRaises(CodecError) as caught:
            decoder.next_value()
        self.assertIn("expands", str(caught.exception))
        self.assertEqual(decode_stream(gob.Encoder().encode([wide()] * 3))[0][2]["F999"], 0)

    def test_a_type_is_defined_once_per_message(self) -> None:
        gob.register_name("review.B", ReviewB)
        gob.register_name("review.A", ReviewA)
        data = gob.Encoder().encode([ReviewB(1), ReviewA(2, ReviewB(3))], list[Any])
        self.assertEqual(data.count(b"\x07ReviewB"), 1)
        (plain,) = decode_stream(data)
        self.assertEqual(plain, [ReviewB(1), ReviewA(2, ReviewB(3))])

    def test_unhashable_map_keys_are_a_codec_error(self) -> None:
        encoder = gob.Encoder()
        data = encoder.encode({(1, 2): 3}, dict[tuple[int, int], int])
        self.assertEqual(decode_stream(data), [{(1, 2): 3}])  # arrays become tuples
        # Sent from a hashable class, received into an unhashable one.
        gob.register_name("review.P", FrozenPoint)
        gob.register_name("review.P", Point)
        with_struct_key = encoder.encode({FrozenPoint(1, 2): 3}, dict[Any, int])
        decoder = gob.Decoder(1 << 20)
        decoder.feed(data + with_struct_key)
        decoder.next_value()
        with self.assertRaises(CodecError) as caught:
            decoder.next_value()
        self.assertIn("unhashable", str(caught.exception))

    def test_empty_maps_are_sent_nil_maps_are_not(self) -> None:
        @dataclass
        class T:
            M: Optional[dict[str, int]] = None  # noqa: UP045

        # As Go: an empty map is sent (count 0), a nil one left out.
        self.assertTrue(gob.Encoder().encode(T({})).endswith(bytes.fromhex("05ff80010000")))
        self.assertTrue(gob.Encoder().encode(T(None)).endswith(bytes.fromhex("03ff8000")))

    def test_strings_that_are_not_utf8_survive(self) -> None:
        data = gob.Encoder().encode({"\udcff": 1, "\udcfe": 2}, dict[str, int])  # noqa: F601
        self.assertIn(b"\x01\xff", data)
        (plain,) = decode_stream(data)
        self.assertEqual(plain, {"\udcff": 1, "\udcfe": 2})  # noqa: F601
        self.assertEqual(gob.Encoder().encode(plain, dict[str, int]), data)

    def test_a_bad_definition_inside_a_value_ends_the_stream(self) -> None:
        decoder = gob.Decoder(1 << 20, max_types=1)
        decoder.feed(bytes.fromhex(GO_CAPTURES["iface_inline_def"]))
        with self.assertRaises(ProtocolError) as caught:
            decoder.next_value()
        self.assertNotIsInstance(caught.exception, CodecError)

    def test_wrong_zeros_in_fields_are_refused(self) -> None:
        for value in [Args(0.0, 1), Args(0j, 1)]:  # type: ignore[arg-type]
            with self.assertRaises(CodecError):
                gob.Encoder().encode(value)

    def test_pinned_types_inside_lists_and_dicts(self) -> None:
        encoder = gob.Encoder()
        stream = encoder.encode([gob.GobValue(7, gob.Uint)]) + encoder.encode(
            {"A": gob.GobValue(7, gob.Uint)}
        )
        self.assertEqual(decode_stream(stream), [[7], {"A": 7}])
        self.assertIn(b"[]uint", stream)

    def test_dicts_with_different_keys_share_one_struct(self) -> None:
        data = gob.Encoder().encode([{"A": 1}, {"B": "x"}, {"A": None}])
        self.assertEqual(
            decode_stream(data), [[{"A": 1, "B": ""}, {"A": 0, "B": "x"}, {"A": 0, "B": ""}]]
        )


@dataclass
class ReviewB:
    V: int = 0


@dataclass
class ReviewA:
    X: int = 0
    B: ReviewB = field(default_factory=ReviewB)


@dataclass(frozen=True)
class FrozenPoint:
    X: int = 0
    Y: int = 0


class SecondReviewRegressionTests(SynchronousTestCase):
    def test_wide_zero_structs_as_go_sends_them_decode(self) -> None:
        # Go decodes make([]W, 300) of a 100-field W; so must we.
        wide = dataclasses.make_dataclass("Wide100", [(f"F{i}", int, 0) for i in range(100)])
        data = gob.Encoder().encode([wide()] * 300, list[wide])  # type: ignore[valid-type]
        (plain,) = decode_stream(data)
        self.assertEqual((len(plain), plain[299]["F99"]), (300, 0))

    def test_interface_detection_is_linear_in_the_definitions(self) -> None:
        # One wide struct W shared by many types T{F W}: each type's check
        # reuses what is known about W (counted by the parents recorded).
        decoder = gob.Decoder(1 << 22)
        stream = bytearray(_struct_definition(64, [2] * 5000))
        for index in range(500):
            stream += _struct_definition(65 + index, [64])
        decoder.feed(bytes(stream))
        self.assertIsNone(decoder.next_message())
        self.assertEqual(decoder._with_interface, {8})
        self.assertEqual(len(decoder._parents[64]), 500)

    def test_interface_reached_through_a_later_definition(self) -> None:
        decoder = gob.Decoder(1 << 20)
        decoder.feed(_struct_definition(64, [65]) + _struct_definition(65, [8]))
        self.assertIsNone(decoder.next_message())
        self.assertEqual(decoder._with_interface, {8, 64, 65})

    def test_header_seq_out_of_range_is_a_codec_error(self) -> None:
        encoder = GobCodec().new_encoder()
        encoder.encode(Header("Foo.Sum", 1, ""), 3, int)
        for seq in (-1, -300, 2**64):
            with self.assertRaises(CodecError):
                encoder.encode(Header("Foo.Sum", seq, ""), 3, int)

    def test_nested_dicts_merge(self) -> None:
        data = gob.Encoder().encode([{"P": {"X": 1}}, {"P": {"Y": 2}}])
        self.assertEqual(decode_stream(data), [[{"P": {"X": 1, "Y": 0}}, {"P": {"X": 0, "Y": 2}}]])


def _struct_definition(type_id: int, field_ids: list[int]) -> bytes:
    out = bytearray()
    write_int(out, -type_id)
    out += b"\x03\x01\x01\x01T\x01"
    write_int(out, type_id)
    out += b"\x00\x01"
    write_uint(out, len(field_ids))
    for index, field_id in enumerate(field_ids):
        name = f"F{index}".encode()
        out += b"\x01" + bytes((len(name),)) + name + b"\x01"
        write_int(out, field_id)
        out += b"\x00"
    out += b"\x00\x00"
    return _frame(bytes(out))


class MappingShapeCacheTests(SynchronousTestCase):
    """A dict argument's struct is remembered by its keys and its values'
    types; what is encoded must not depend on what was encoded before."""

    def test_same_shape_same_struct(self) -> None:
        first = gob.infer_type({"Num1": 6, "Num2": 7})
        self.assertIs(gob.infer_type({"Num1": 1, "Num2": -2}), first)

    def test_an_int_past_int64_is_still_a_uint(self) -> None:
        small = gob.infer_type({"Big": 1})
        big = gob.infer_type({"Big": 2**63})
        self.assertIsNot(big, small)
        self.assertEqual([f[2] for f in big.fields], [gob.infer_type(2**63)])

    def test_other_value_types_other_structs(self) -> None:
        ints = gob.infer_type({"A": 1, "B": "x"})
        floats = gob.infer_type({"A": 1.5, "B": "x"})
        self.assertNotEqual([f[2] for f in ints.fields], [f[2] for f in floats.fields])
        missing = gob.infer_type({"A": None, "B": "x"})  # nil: left out of the shape
        self.assertEqual([f[0] for f in missing.fields], ["B"])

    def test_encoded_bytes_unchanged(self) -> None:
        values = [{"Num1": 6, "Num2": 7}, {"Num1": 2**63, "Num2": 7}, {"Num1": 6, "Num2": "x"}]
        for value in values * 2:
            warm = gob.Encoder().encode(value)  # the shape remembered (after the first)
            gob_types._flat_mappings.clear()
            self.assertEqual(warm, gob.Encoder().encode(value))
