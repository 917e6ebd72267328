"""The JSON codec extension against vector 02 (docs/protocol.md 4.2, 4.4)."""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc._wire import EMPTY_STRUCT, JSON, Header
from txgeerpc.codec import JSONCodec, default_registry
from txgeerpc.errors import CodecError, MessageTooLarge, ProtocolError

from . import examples
from ._helpers import vector

OPTION_LENGTH = 102


@dataclasses.dataclass
class Args:
    Num1: int
    Num2: int


@dataclasses.dataclass
class Renamed:
    first: int = dataclasses.field(metadata={"go_name": "Num1"})
    data: bytes = dataclasses.field(default=b"", metadata={"go_name": "Data"})


# What vector 02 records, call by call.
REQUESTS = [
    (Header("Foo.Sum", 1, ""), {"Num1": 1, "Num2": 2}),
    (Header("Arith.Multiply", 2, ""), {"Num1": 3, "Num2": 4}),
    (Header("Arith.Divide", 3, ""), {"Num1": 7, "Num2": 0}),
    (Header("Foo.Nope", 4, ""), {"Num1": 5, "Num2": 6}),
    (Header("Foo.Sum", 5, ""), {"Num1": 8, "Num2": 9}),
]
REPLIES: list[tuple[Header, Any]] = [
    (Header("Foo.Sum", 1, ""), 3),
    (Header("Arith.Multiply", 2, ""), 12),
    (Header("Arith.Divide", 3, "divide by zero"), EMPTY_STRUCT),
    (Header("Foo.Nope", 4, "rpc server: can't find method Nope"), EMPTY_STRUCT),
    (Header("", 0, "rpc server: service/method request ill-formed: "), EMPTY_STRUCT),
    (Header("Foo.Sum", 5, ""), 17),
]
PLAIN_REPLIES = [(header, {} if body is EMPTY_STRUCT else body) for header, body in REPLIES]


def requests_stream() -> bytes:
    return vector("02-json-ext-tcp.c2s.bin")[OPTION_LENGTH:]


def decode_stream(pieces: list[bytes], max_size: int = 1 << 20) -> list[tuple[Header, Any]]:
    decoder = JSONCodec().new_decoder(max_size)
    messages = []
    for piece in pieces:
        decoder.feed(piece)
        while (message := decoder.next_message()) is not None:
            messages.append(message)
    if len(messages) % 2:
        raise AssertionError(f"odd number of messages: {messages!r}")
    return [
        (decoder.decode_header(messages[i]), decoder.decode_body(messages[i + 1]))
        for i in range(0, len(messages), 2)
    ]


def encode(header: Header, body: Any) -> bytes:
    return JSONCodec().new_encoder().encode(header, body)


def decode_header(raw: bytes) -> Header:
    return JSONCodec().new_decoder(1 << 20).decode_header(raw)


def decode_body(raw: bytes) -> Any:
    return JSONCodec().new_decoder(1 << 20).decode_body(raw)


class VectorTests(SynchronousTestCase):
    def test_option_length(self) -> None:
        data = vector("02-json-ext-tcp.c2s.bin")
        self.assertEqual(data[OPTION_LENGTH - 2 : OPTION_LENGTH], b"}\n")

    def test_decode_requests_whole(self) -> None:
        self.assertEqual(decode_stream([requests_stream()]), REQUESTS)

    def test_decode_requests_byte_by_byte(self) -> None:
        data = requests_stream()
        self.assertEqual(decode_stream([data[i : i + 1] for i in range(len(data))]), REQUESTS)

    def test_decode_requests_as_recorded_writes(self) -> None:
        # The client's writes: offsets 102, 169, 243, 315, 383 in the c2s stream.
        data = vector("02-json-ext-tcp.c2s.bin")
        cuts = [102, 169, 243, 315, 383, len(data)]
        pieces = [data[a:b] for a, b in itertools.pairwise(cuts)]
        self.assertEqual(decode_stream(pieces), REQUESTS)

    @given(st.data())
    @examples(1 / 3)
    def test_decode_requests_random_splits(self, data: st.DataObject) -> None:
        stream = requests_stream()
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
        bounds = [0, *cuts, len(stream)]
        pieces = [stream[a:b] for a, b in itertools.pairwise(bounds)]
        self.assertEqual(decode_stream(pieces), REQUESTS)

    def test_encode_replies_exactly(self) -> None:
        encoded = b"".join(encode(header, body) for header, body in REPLIES)
        self.assertEqual(encoded, vector("02-json-ext-tcp.s2c.bin"))

    def test_encode_first_reply(self) -> None:
        self.assertEqual(
            encode(Header("Foo.Sum", 1, ""), 3),
            b'{"ServiceMethod":"Foo.Sum","Seq":1,"Error":""}\n3\n',
        )

    def test_encode_requests_exactly(self) -> None:
        encoded = b"".join(
            encode(header, Args(body["Num1"], body["Num2"])) for header, body in REQUESTS
        )
        self.assertEqual(encoded, requests_stream())

    def test_encode_requests_from_dicts(self) -> None:
        encoded = b"".join(encode(header, body) for header, body in REQUESTS)
        self.assertEqual(encoded, requests_stream())

    def test_decode_replies(self) -> None:
        data = vector("02-json-ext-tcp.s2c.bin")
        self.assertEqual(decode_stream([data]), PLAIN_REPLIES)
        self.assertEqual(decode_stream([data[i : i + 1] for i in range(len(data))]), PLAIN_REPLIES)

    def test_codec_is_registered_as_application_json(self) -> None:
        self.assertEqual(JSONCodec().name, JSON)
        self.assertIsInstance(default_registry.get(JSON), JSONCodec)
        self.assertIsInstance(default_registry.get("json"), JSONCodec)


class EncoderTests(SynchronousTestCase):
    def test_empty_struct_is_empty_object(self) -> None:
        self.assertEqual(encode(Header("A.B", 9, "boom"), EMPTY_STRUCT).split(b"\n")[1], b"{}")

    def test_error_always_present(self) -> None:
        header = encode(Header("A.B", 1), None).split(b"\n")[0]
        self.assertEqual(header, b'{"ServiceMethod":"A.B","Seq":1,"Error":""}')

    def test_two_newline_terminated_documents(self) -> None:
        raw = encode(Header("A.B", 2, ""), {"x": [1, 2], "y": "z"})
        self.assertEqual(raw, b'{"ServiceMethod":"A.B","Seq":2,"Error":""}\n{"x":[1,2],"y":"z"}\n')

    def test_large_seq(self) -> None:
        raw = encode(Header("A.B", 2**64 - 1, ""), 0)
        self.assertIn(b'"Seq":18446744073709551615,', raw)
        self.assertEqual(decode_stream([raw])[0][0].seq, 2**64 - 1)

    def test_scalars(self) -> None:
        for body, text in ((True, b"true"), (None, b"null"), (1.5, b"1.5"), ("hi", b'"hi"')):
            with self.subTest(body=body):
                self.assertEqual(encode(Header("A.B", 1), body).split(b"\n")[1], text)

    def test_strings_escaped_in_header_and_body(self) -> None:
        raw = encode(Header('A."B"', 1, 'line\nbreak\\"'), 'q"\n')
        self.assertEqual(decode_stream([raw]), [(Header('A."B"', 1, 'line\nbreak\\"'), 'q"\n')])
        self.assertEqual(raw.count(b"\n"), 2)

    def test_non_ascii_written_as_utf8(self) -> None:
        raw = encode(Header("A.B", 1, "é"), "€")
        self.assertIn('"Error":"é"'.encode(), raw)
        self.assertTrue(raw.endswith('"€"\n'.encode()))

    def test_struct_with_go_names_and_bytes(self) -> None:
        raw = encode(Header("A.B", 1), Renamed(5, b"\x00\xff"))
        self.assertEqual(raw.split(b"\n")[1], b'{"Num1":5,"Data":"AP8="}')

    def test_int_dict_keys_become_strings(self) -> None:
        raw = encode(Header("A.B", 1), {1: "a", -2: "b"})
        self.assertEqual(json.loads(raw.split(b"\n")[1]), {"1": "a", "-2": "b"})

    def test_nan_refused(self) -> None:
        for body in (float("nan"), [float("inf")], {"x": float("-inf")}):
            with self.subTest(body=body):
                self.assertRaises(CodecError, encode, Header("A.B", 1), body)

    def test_unencodable_object_refused(self) -> None:
        self.assertRaises(CodecError, encode, Header("A.B", 1), object())
        self.assertRaises(CodecError, encode, Header("A.B", 1), {"x": object()})

    def test_lone_surrogate_echo_is_not_a_crash(self) -> None:
        # A peer can send "\ud800" (valid JSON escape).  Go decodes it as U+FFFD;
        # echoing it back must either produce valid UTF-8 or fail with CodecError,
        # never UnicodeEncodeError.
        header = decode_header(b'{"ServiceMethod":"\\ud800","Seq":1,"Error":""}')
        body = decode_body(b'"\\udfff"')
        for reply_header, reply_body in ((header, {}), (Header("A.B", 1), body)):
            try:
                raw = encode(reply_header, reply_body)
            except CodecError:
                continue
            raw.decode("utf-8")


class HeaderPrefixTests(SynchronousTestCase):
    """A header's text up to its Seq is kept per method name (bounded)."""

    def test_many_names_each_encoded_right_and_the_cache_bounded(self) -> None:
        from txgeerpc.codec import _json

        encoder = JSONCodec().new_encoder()
        for index in range(_json._MAX_PREFIXES + 500):
            name = f'S"{index}\u00e9.M'
            header, _, _ = encoder.encode(Header(name, index, "bad\n"), 1).partition(b"\n")
            self.assertEqual(
                json.loads(header), {"ServiceMethod": name, "Seq": index, "Error": "bad\n"}
            )
        self.assertLessEqual(len(_json._PREFIXES), _json._MAX_PREFIXES)
        again = encoder.encode(Header('S"3\u00e9.M', 4, ""), 1)
        expected = '{"ServiceMethod":"S\\"3\u00e9.M","Seq":4,"Error":""}\n1\n'
        self.assertEqual(again, expected.encode())


class HeaderDecodingTests(SynchronousTestCase):
    def test_case_insensitive_keys(self) -> None:
        self.assertEqual(
            decode_header(b'{"servicemethod":"A.B","SEQ":4,"error":"e"}'), Header("A.B", 4, "e")
        )

    def test_missing_fields_are_zero(self) -> None:
        self.assertEqual(decode_header(b"{}"), Header("", 0, ""))
        self.assertEqual(decode_header(b'{"Seq":3}'), Header("", 3, ""))

    def test_null_fields_are_zero(self) -> None:
        raw = b'{"ServiceMethod":null,"Seq":null,"Error":null}'
        self.assertEqual(decode_header(raw), Header("", 0, ""))

    def test_unknown_fields_ignored(self) -> None:
        raw = b'{"ServiceMethod":"A.B","Seq":1,"Error":"","Extra":[1,2]}'
        self.assertEqual(decode_header(raw), Header("A.B", 1, ""))

    def test_seq_range(self) -> None:
        top = b'{"ServiceMethod":"A.B","Seq":18446744073709551615,"Error":""}'
        self.assertEqual(decode_header(top).seq, 2**64 - 1)
        for text in (b"18446744073709551616", b"-1", b"1.0", b"1e3", b"true", b'"1"'):
            with self.subTest(text=text):
                raw = b'{"ServiceMethod":"A.B","Seq":' + text + b',"Error":""}'
                self.assertRaises(CodecError, decode_header, raw)
                raw = b'{"seq":' + text + b"}"
                self.assertRaises(CodecError, decode_header, raw)

    def test_string_fields_must_be_strings(self) -> None:
        for raw in (
            b'{"ServiceMethod":1,"Seq":1,"Error":""}',
            b'{"ServiceMethod":"A.B","Seq":1,"Error":false}',
            b'{"ServiceMethod":["A.B"]}',
        ):
            with self.subTest(raw=raw):
                self.assertRaises(CodecError, decode_header, raw)

    def test_header_must_be_an_object(self) -> None:
        for raw in (b"[]", b"1", b'"A.B"', b"null"):
            with self.subTest(raw=raw):
                self.assertRaises(CodecError, decode_header, raw)

    def test_invalid_json(self) -> None:
        for raw in (b"{", b'{"Seq":}', b"\xff"):
            with self.subTest(raw=raw):
                self.assertRaises(CodecError, decode_header, raw)
                self.assertRaises(CodecError, decode_body, raw)

    def test_invalid_utf8_in_strings_becomes_replacement_character(self) -> None:
        # As Go's encoding/json does.
        self.assertEqual(decode_body(b'{"a":"x\xffy"}'), {"a": "x\ufffdy"})
        self.assertEqual(decode_header(b'{"ServiceMethod":"A.\xc3"}').service_method, "A.\ufffd")

    def test_deeply_nested_header_is_a_codec_error(self) -> None:
        depth = 100_000
        raw = b'{"Extra":' + b"[" * depth + b"]" * depth + b"}"
        self.assertRaises(CodecError, decode_header, raw)


class BodyDecodingTests(SynchronousTestCase):
    def test_plain_values(self) -> None:
        self.assertEqual(
            decode_body(b'{"Num1":1,"Num2":[true,null,1.5,"x"]}'),
            {
                "Num1": 1,
                "Num2": [True, None, 1.5, "x"],
            },
        )

    def test_deeply_nested_body_is_a_codec_error(self) -> None:
        depth = 100_000
        self.assertRaises(CodecError, decode_body, b"[" * depth + b"]" * depth)
        self.assertRaises(CodecError, decode_body, b'{"a":' * depth + b"1" + b"}" * depth)

    def test_non_json_constants_rejected(self) -> None:
        # Not JSON: Go fails with "invalid character 'N' looking for beginning of value".
        for raw in (b"[NaN]", b'{"a":Infinity}', b"[-Infinity]"):
            with self.subTest(raw=raw):
                self.assertRaises(CodecError, decode_body, raw)

    def test_number_out_of_float64_range_rejected(self) -> None:
        # Go: json: cannot unmarshal number 1e400 into Go value of type float64.
        for raw in (b"1e400", b"[-1e400]"):
            with self.subTest(raw=raw):
                self.assertRaises(CodecError, decode_body, raw)


class FramingTests(SynchronousTestCase):
    def test_documents_split_by_structure_not_newlines(self) -> None:
        raw = (
            b'{"ServiceMethod":"A.B","Seq":1,"Error":""}{"x":\n 1\n}'
            b'  {"ServiceMethod":"A.C",\n"Seq":2,"Error":""}\r\n7 '
        )
        self.assertEqual(
            decode_stream([raw]), [(Header("A.B", 1, ""), {"x": 1}), (Header("A.C", 2, ""), 7)]
        )

    def test_scalar_body_needs_next_byte(self) -> None:
        decoder = JSONCodec().new_decoder(100)
        decoder.feed(b'{"ServiceMethod":"A.B","Seq":1,"Error":""}\n17')
        self.assertIsNotNone(decoder.next_message())
        self.assertIsNone(decoder.next_message())
        decoder.feed(b"\n")
        self.assertEqual(decoder.decode_body(decoder.next_message()), 17)

    def test_oversized_message_refused(self) -> None:
        decoder = JSONCodec().new_decoder(30)
        decoder.feed(b'{"ServiceMethod":"Foo.Sum","Seq":1,"Error":""}\n')
        with self.assertRaises(MessageTooLarge) as caught:
            decoder.next_message()
        self.assertIsInstance(caught.exception, ProtocolError)

    def test_garbage_between_messages_refused(self) -> None:
        decoder = JSONCodec().new_decoder(100)
        decoder.feed(b'{"ServiceMethod":"A.B","Seq":1,"Error":""}\n,{}')
        decoder.next_message()
        self.assertRaises(CodecError, decoder.next_message)
