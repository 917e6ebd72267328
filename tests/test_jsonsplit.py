"""JSONValueSplitter: cutting a byte stream into top-level JSON values."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from txgeerpc._jsonsplit import JSONValueSplitter
from txgeerpc.errors import CodecError, MessageTooLarge, ProtocolError


def drain(splitter: JSONValueSplitter) -> list[bytes]:
    values = []
    while (value := splitter.next_value()) is not None:
        values.append(value)
    return values


def split_whole(data: bytes, max_size: int = 1 << 20) -> list[bytes]:
    splitter = JSONValueSplitter(max_size)
    splitter.feed(data)
    return drain(splitter)


def split_bytewise(data: bytes, max_size: int = 1 << 20) -> list[bytes]:
    splitter = JSONValueSplitter(max_size)
    values = []
    for index in range(len(data)):
        splitter.feed(data[index : index + 1])
        values.extend(drain(splitter))
    return values


class ValueBoundaryTests(SynchronousTestCase):
    def test_consecutive_objects_without_separator(self) -> None:
        self.assertEqual(split_whole(b'{"a":1}{"b":2}'), [b'{"a":1}', b'{"b":2}'])

    def test_whitespace_between_values_is_skipped(self) -> None:
        data = b' \t\r\n{"a":1}\n\n  [1, 2]\r\n"s"\ttrue false null 12 '
        self.assertEqual(
            split_whole(data),
            [b'{"a":1}', b"[1, 2]", b'"s"', b"true", b"false", b"null", b"12"],
        )

    def test_whitespace_inside_a_value_is_kept(self) -> None:
        data = b'{\n  "a" : [ 1 ,\t2 ]\n}\n'
        self.assertEqual(split_whole(data), [data[:-1]])

    def test_brackets_inside_strings_do_not_count(self) -> None:
        data = b'{"a":"}]{[","b":["]"]}{"c":0}'
        self.assertEqual(split_whole(data), [b'{"a":"}]{[","b":["]"]}', b'{"c":0}'])

    def test_escaped_quote_does_not_end_a_string(self) -> None:
        self.assertEqual(split_whole(b'{"a":"x\\"}"}[]'), [b'{"a":"x\\"}"}', b"[]"])

    def test_escaped_backslash_before_quote_ends_the_string(self) -> None:
        self.assertEqual(split_whole(b'"a\\\\" "b"'), [b'"a\\\\"', b'"b"'])

    def test_backslash_at_segment_end_then_quote(self) -> None:
        # The escaped quote arrives in the next segment: the string is still open.
        splitter = JSONValueSplitter(100)
        splitter.feed(b'"ab\\')
        self.assertIsNone(splitter.next_value())
        splitter.feed(b'"')
        self.assertIsNone(splitter.next_value())
        splitter.feed(b'"')
        self.assertEqual(splitter.next_value(), b'"ab\\""')

    def test_escaped_backslash_split_before_closing_quote(self) -> None:
        splitter = JSONValueSplitter(100)
        splitter.feed(b'["a\\')
        self.assertIsNone(splitter.next_value())
        splitter.feed(b"\\")
        self.assertIsNone(splitter.next_value())
        splitter.feed(b'"]')
        self.assertEqual(splitter.next_value(), b'["a\\\\"]')

    def test_nested_mixed_containers(self) -> None:
        data = b'[{"a":[1,{"b":[[],{}]}]},[[[]]]] {}'
        self.assertEqual(split_whole(data), [b'[{"a":[1,{"b":[[],{}]}]},[[[]]]]', b"{}"])

    def test_multibyte_utf8_split_across_segments(self) -> None:
        data = '{"k":"é€😀"}'.encode()
        self.assertEqual(split_bytewise(data), [data])

    def test_byte_by_byte_equals_whole(self) -> None:
        data = b'{"a":[1,2,{"b":"\\"}"}]} 1.5e3 -7 "x\\\\" true [null,false] {"c":{}}\n'
        self.assertEqual(split_bytewise(data), split_whole(data))
        self.assertEqual(len(split_whole(data)), 7)


class NumberTests(SynchronousTestCase):
    def test_top_level_number_waits_for_following_byte(self) -> None:
        splitter = JSONValueSplitter(100)
        splitter.feed(b"123")
        self.assertIsNone(splitter.next_value())
        splitter.feed(b"4")
        self.assertIsNone(splitter.next_value())
        splitter.feed(b"\n")
        self.assertEqual(splitter.next_value(), b"1234")

    def test_number_ended_by_structural_byte(self) -> None:
        self.assertEqual(split_whole(b'-1.5e+3{"a":1}'), [b"-1.5e+3", b'{"a":1}'])
        self.assertEqual(split_whole(b'0"s"'), [b"0", b'"s"'])

    def test_number_pieces(self) -> None:
        self.assertEqual(split_bytewise(b"-0.25E-7 42\n"), [b"-0.25E-7", b"42"])

    def test_numbers_inside_containers_need_no_lookahead(self) -> None:
        splitter = JSONValueSplitter(100)
        splitter.feed(b"[12]")
        self.assertEqual(splitter.next_value(), b"[12]")


class LiteralTests(SynchronousTestCase):
    def test_literals_split_across_segments(self) -> None:
        self.assertEqual(split_bytewise(b"true false null"), [b"true", b"false", b"null"])

    def test_partial_literal_waits(self) -> None:
        splitter = JSONValueSplitter(100)
        splitter.feed(b"nul")
        self.assertIsNone(splitter.next_value())
        splitter.feed(b"l")
        self.assertEqual(splitter.next_value(), b"null")

    def test_wrong_literal_is_a_codec_error(self) -> None:
        for data in (b"trux", b"fals3", b"nulL", b"tRue"):
            splitter = JSONValueSplitter(100)
            splitter.feed(data)
            self.assertRaises(CodecError, splitter.next_value)


class InvalidStartTests(SynchronousTestCase):
    def test_bytes_that_cannot_start_a_value(self) -> None:
        for data in (b"}", b"]", b",", b":", b"x", b"\x00", b"\xff", b"NaN", b"+1", b"\x0b{}"):
            splitter = JSONValueSplitter(100)
            splitter.feed(data)
            with self.assertRaises(CodecError, msg=repr(data)):
                splitter.next_value()

    def test_garbage_after_a_value_is_rejected_on_the_next_call(self) -> None:
        splitter = JSONValueSplitter(100)
        splitter.feed(b'{"a":1} GET /')
        self.assertEqual(splitter.next_value(), b'{"a":1}')
        self.assertRaises(CodecError, splitter.next_value)

    def test_codec_error_is_not_a_protocol_error(self) -> None:
        # A CodecError fails one call; the protocol decides when the stream
        # cannot go on (an undecodable header, bytes that start no value).
        self.assertFalse(issubclass(CodecError, ProtocolError))
        self.assertTrue(issubclass(MessageTooLarge, ProtocolError))


class SizeLimitTests(SynchronousTestCase):
    def test_value_of_exactly_max_size_is_accepted(self) -> None:
        value = b'{"a":"' + b"x" * 20 + b'"}'
        self.assertEqual(split_whole(value + b"\n", max_size=len(value)), [value])
        self.assertEqual(split_bytewise(value + b"\n", max_size=len(value)), [value])

    def test_complete_value_over_max_size_is_refused(self) -> None:
        value = b'{"a":"' + b"x" * 20 + b'"}'
        splitter = JSONValueSplitter(len(value) - 1)
        splitter.feed(value)
        with self.assertRaises(MessageTooLarge) as caught:
            splitter.next_value()
        self.assertEqual(caught.exception.limit, len(value) - 1)
        self.assertGreater(caught.exception.size, len(value) - 1)

    def test_incomplete_value_over_max_size_is_refused_before_it_ends(self) -> None:
        splitter = JSONValueSplitter(10)
        splitter.feed(b"[1,2,3")
        self.assertIsNone(splitter.next_value())
        splitter.feed(b",4,5,6")  # 12 bytes so far, still no end in sight
        self.assertRaises(MessageTooLarge, splitter.next_value)

    def test_long_top_level_number_is_refused(self) -> None:
        splitter = JSONValueSplitter(8)
        splitter.feed(b"1234567890")
        self.assertRaises(MessageTooLarge, splitter.next_value)

    def test_long_string_fed_in_pieces_is_refused(self) -> None:
        splitter = JSONValueSplitter(50)
        splitter.feed(b'"')
        with self.assertRaises(MessageTooLarge):
            for _ in range(100):
                splitter.feed(b"abcd")
                self.assertIsNone(splitter.next_value())
                self.assertLessEqual(len(splitter.buffered()), 50)

    def test_whitespace_does_not_count_against_the_limit(self) -> None:
        splitter = JSONValueSplitter(4)
        for _ in range(10):
            splitter.feed(b" \n\t\r" * 4)
            self.assertIsNone(splitter.next_value())
        self.assertEqual(splitter.buffered(), b"")
        splitter.feed(b"[11]")
        self.assertEqual(splitter.next_value(), b"[11]")


class BufferedTests(SynchronousTestCase):
    def test_buffered_holds_unreturned_bytes(self) -> None:
        splitter = JSONValueSplitter(100)
        splitter.feed(b'{"a":1}\n{"b":')
        self.assertEqual(splitter.buffered(), b'{"a":1}\n{"b":')
        self.assertEqual(splitter.next_value(), b'{"a":1}')
        self.assertEqual(splitter.buffered(), b'\n{"b":')
        self.assertIsNone(splitter.next_value())
        self.assertEqual(splitter.buffered(), b'{"b":')

    def test_buffered_keeps_bytes_after_the_last_value(self) -> None:
        splitter = JSONValueSplitter(100)
        splitter.feed(b'{"a":1}\n\x09\x0a\x0d\x20\xff')
        self.assertEqual(splitter.next_value(), b'{"a":1}')
        self.assertEqual(splitter.buffered(), b"\n\x09\x0a\x0d\x20\xff")

    def test_offsets_survive_compaction(self) -> None:
        # More than 64 KiB of consumed values, then a value straddling feeds.
        small = b'{"k":"' + b"v" * 90 + b'"}\n'
        count = (70_000 // len(small)) + 1
        splitter = JSONValueSplitter(1000)
        splitter.feed(small * count + b'{"last":[1,')
        values = drain(splitter)
        self.assertEqual(values, [small[:-1]] * count)
        self.assertEqual(splitter.buffered(), b'{"last":[1,')
        splitter.feed(b'2]} {"x":"y"}')
        self.assertEqual(drain(splitter), [b'{"last":[1,2]}', b'{"x":"y"}'])
        self.assertEqual(splitter.buffered(), b"")

    def test_large_value_in_small_segments(self) -> None:
        value = json.dumps({"items": [{"n": n, "s": "x" * (n % 7)} for n in range(3000)]})
        data = value.encode() + b"\n"
        splitter = JSONValueSplitter(len(data))
        values = []
        for start in range(0, len(data), 3):
            splitter.feed(data[start : start + 3])
            values.extend(drain(splitter))
        self.assertEqual(values, [value.encode()])


class NextParsedTests(SynchronousTestCase):
    """The C-scanner fast path must not cut a number that is still arriving."""

    def parsed(self, *chunks: bytes) -> list[object]:
        from txgeerpc._jsonsplit import InvalidJSON

        splitter = JSONValueSplitter(1000)
        out: list[object] = []
        for chunk in chunks:
            splitter.feed(chunk)
            while (item := splitter.next_parsed()) is not None:
                out.append("invalid" if isinstance(item, InvalidJSON) else item[0])
        return out

    def test_number_split_inside_fraction_or_exponent(self) -> None:
        for head, tail in ((b"-0.", b"5\n"), (b"12e", b"3 "), (b"1.5E+", b"2\n"), (b"7", b"7\n")):
            with self.subTest(head=head):
                whole = head + tail
                self.assertEqual(self.parsed(head, tail), self.parsed(whole))
                self.assertEqual(len(self.parsed(head, tail)), 1)

    def test_non_ascii_and_invalid_values(self) -> None:
        self.assertEqual(self.parsed('"é" {"a" 1} [1]'.encode(), b"\n"), ["é", "invalid", [1]])
