"""Property tests: splitter, Option decoder and JSON codec under random input and
random segmentation; round trips of supported value shapes."""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any, Optional

import attrs
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc._convert import converter_for
from txgeerpc._jsonsplit import JSONValueSplitter
from txgeerpc._option import parse_option
from txgeerpc._wire import MAGIC_NUMBER, Header, Option
from txgeerpc.codec import JSONCodec
from txgeerpc.errors import CodecError, MessageTooLarge, ProtocolError

from . import examples
from ._helpers import decode_all

FAST = examples(0.5)

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)

# -- strategies -----------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | FLOATS
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
WHITESPACE = b" \t\r\n"

TOKENS = [
    b"{", b"}", b"[", b"]", b'"', b"\\", b'\\"', b":", b",", b" ", b"\n", b"\r", b"\t",
    b"0", b"1", b"-", b".", b"e", b"E", b"+", b"true", b"tru", b"false", b"null", b"nul",
    b"\x00", b"\x09", b"\xff", b"\xc3\xa9", b"\xe2\x82", b"NaN", b"Infinity", b"1e400",
    b"\\u00e9", b"\\ud800", b"x", b"GET / HTTP/1.1\r\n", b'"MagicNumber"', b"3927900",
    b'"CodecType"', b'"application/json"', b'"ServiceMethod"', b'"Seq"', b'"Error"',
    b'"HandleTimeout"', b'"Foo.Sum"', b"18446744073709551616",
]  # fmt: skip
SOUP = st.one_of(
    st.binary(max_size=80),
    st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join),
)


def render(value: Any, draw: Any) -> bytes:
    indent = draw(st.sampled_from([None, None, 0, 1, "\t"]))
    separators = draw(st.sampled_from([None, (",", ":"), (" ,  ", " :\t")]))
    ensure_ascii = draw(st.booleans())
    text = json.dumps(value, indent=indent, separators=separators, ensure_ascii=ensure_ascii)
    return text.encode("utf-8")


def is_number(raw: bytes) -> bool:
    return raw[:1] in b"-0123456789" and raw[:1] != b""


@st.composite
def json_streams(draw: Any) -> tuple[list[Any], list[bytes], bytes]:
    """(values, exact bytes of each value, stream with whitespace between)."""
    values = draw(st.lists(JSON_VALUES, max_size=6))
    raws = [render(value, draw) for value in values]
    parts = [draw(st.binary(max_size=3).map(lambda b: bytes(WHITESPACE[x % 4] for x in b)))]
    for raw in raws:
        parts.append(raw)
        # A top-level number ends only at the next byte: always separate those.
        least = 1 if is_number(raw) else 0
        gap = draw(
            st.lists(st.sampled_from([b" ", b"\t", b"\r", b"\n"]), min_size=least, max_size=3)
        )
        parts.append(b"".join(gap))
    return values, raws, b"".join(parts)


def segments(data: bytes, draw: Any) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def run_splitter(
    pieces: list[bytes], max_size: int, test: SynchronousTestCase | None = None
) -> tuple[list[bytes], ProtocolError | CodecError | None]:
    """Feed pieces, draining after each; values produced and the error, if any.

    When ``test`` is given, checks after every drain that no more than
    ``max_size`` bytes are held for an incomplete value."""
    splitter = JSONValueSplitter(max_size)
    values: list[bytes] = []
    try:
        for piece in pieces:
            splitter.feed(piece)
            while (value := splitter.next_value()) is not None:
                values.append(value)
            if test is not None:
                test.assertLessEqual(len(splitter.buffered()), max_size)
    except (ProtocolError, CodecError) as error:
        return values, error
    return values, None


# -- supported value shapes ------------------------------------------------------


@dataclasses.dataclass
class Leaf:
    Name: str
    Blob: bytes
    Ratio: float
    Flag: bool


@attrs.frozen
class Record:
    Id: int
    Child: Leaf
    Leaves: list[Leaf]
    Index: dict[int, str]
    Labels: dict[str, list[int]]
    Maybe: Optional[Leaf]  # noqa: UP045 - Optional[...] on purpose
    Pair: tuple[int, str]
    Many: tuple[float, ...]
    renamed: int = attrs.field(metadata={"go_name": "GoName"})


@dataclasses.dataclass
class Tree:
    Value: int
    Children: list[Tree]
    Next: Tree | None = None


LEAVES = st.builds(
    Leaf, Name=st.text(max_size=6), Blob=st.binary(max_size=6), Ratio=FLOATS, Flag=st.booleans()
)
RECORDS = st.builds(
    Record,
    Id=INT64,
    Child=LEAVES,
    Leaves=st.lists(LEAVES, max_size=3),
    Index=st.dictionaries(INT64, st.text(max_size=4), max_size=3),
    Labels=st.dictionaries(st.text(max_size=4), st.lists(INT64, max_size=3), max_size=3),
    Maybe=st.none() | LEAVES,
    Pair=st.tuples(INT64, st.text(max_size=4)),
    Many=st.lists(FLOATS, max_size=3).map(tuple),
    renamed=INT64,
)
TREES = st.deferred(
    lambda: st.builds(
        Tree,
        Value=INT64,
        Children=st.lists(TREES, max_size=2),
        Next=st.none() | TREES,
    )
)
SHAPES: st.SearchStrategy[tuple[Any, Any]] = st.one_of(
    INT64.map(lambda v: (int, v)),
    FLOATS.map(lambda v: (float, v)),
    st.text(max_size=10).map(lambda v: (str, v)),
    st.booleans().map(lambda v: (bool, v)),
    st.binary(max_size=10).map(lambda v: (bytes, v)),
    st.lists(INT64, max_size=4).map(lambda v: (list[int], v)),
    st.dictionaries(INT64, st.binary(max_size=4), max_size=3).map(lambda v: (dict[int, bytes], v)),
    (st.none() | INT64).map(lambda v: (Optional[int], v)),  # noqa: UP045
    st.tuples(st.text(max_size=3), FLOATS).map(lambda v: (tuple[str, float], v)),
    LEAVES.map(lambda v: (Leaf, v)),
    RECORDS.map(lambda v: (Record, v)),
    TREES.map(lambda v: (Tree, v)),
    st.lists(RECORDS, max_size=2).map(lambda v: (list[Record], v)),
)


# -- tests -----------------------------------------------------------------------


class SplitterProperties(SynchronousTestCase):
    @given(st.data())
    @FAST
    def test_valid_stream_split_anywhere_yields_the_same_values(self, data: Any) -> None:
        values, raws, stream = data.draw(json_streams())
        whole, error = run_splitter([stream], 1 << 20)
        self.assertIsNone(error)
        self.assertEqual(whole, raws)
        self.assertEqual([json.loads(raw) for raw in whole], values)
        pieces = segments(stream, data.draw)
        split, error = run_splitter(pieces, 1 << 20)
        self.assertIsNone(error)
        self.assertEqual(split, raws)

    @given(st.data())
    @FAST
    def test_valid_stream_byte_by_byte(self, data: Any) -> None:
        _, raws, stream = data.draw(json_streams())
        split, error = run_splitter([stream[i : i + 1] for i in range(len(stream))], 1 << 20)
        self.assertIsNone(error)
        self.assertEqual(split, raws)

    @given(SOUP, st.data(), st.integers(1, 64))
    @FAST
    def test_random_bytes_raise_only_protocol_errors(
        self, stream: bytes, data: Any, max_size: int
    ) -> None:
        # Any exception other than ProtocolError or CodecError escapes
        # run_splitter and fails the test.
        whole, whole_error = run_splitter([stream], max_size)
        split, split_error = run_splitter(segments(stream, data.draw), max_size, self)
        # Segmentation changes neither the values nor whether the stream is refused.
        self.assertEqual(split, whole)
        self.assertEqual(split_error is None, whole_error is None)
        for value in whole:
            self.assertLessEqual(len(value), max_size)

    @given(st.data(), st.integers(1, 80))
    @FAST
    def test_max_size_bounds_what_is_buffered(self, data: Any, max_size: int) -> None:
        _, raws, stream = data.draw(json_streams())
        values, error = run_splitter(segments(stream, data.draw), max_size, self)
        too_large = [raw for raw in raws if len(raw) > max_size]
        if too_large:
            self.assertIsInstance(error, MessageTooLarge)
            # Everything before the first oversized value came out intact.
            self.assertEqual(values, raws[: raws.index(too_large[0])])
        else:
            self.assertIsNone(error)
            self.assertEqual(values, raws)
        for value in values:
            self.assertLessEqual(len(value), max_size)


KNOWN_KEYS = ("MagicNumber", "CodecType", "ConnectTimeout", "HandleTimeout")
UNKNOWN_KEYS = st.text(max_size=8).filter(
    lambda k: k.lower() not in {x.lower() for x in KNOWN_KEYS}
)


def random_case(name: str, draw: Any) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.swapcase() if flip else c for c, flip in zip(name, flips, strict=True))


@st.composite
def option_streams(draw: Any) -> tuple[Option, bytes, bytes]:
    """(expected Option, full stream, expected rest)."""
    option = Option(
        codec_type=draw(st.text(max_size=20)),
        connect_timeout_ns=draw(INT64),
        handle_timeout_ns=draw(INT64),
        magic_number=MAGIC_NUMBER,
    )
    fields: dict[str, Any] = {
        "MagicNumber": option.magic_number,
        "CodecType": option.codec_type,
        "ConnectTimeout": option.connect_timeout_ns,
        "HandleTimeout": option.handle_timeout_ns,
    }
    # Zero durations may be left out; keys in any case; extra keys anywhere.
    items = [
        (random_case(key, draw) if draw(st.booleans()) else key, value)
        for key, value in fields.items()
        if not (value == 0 and key.endswith("Timeout") and draw(st.booleans()))
    ]
    extras = draw(st.dictionaries(UNKNOWN_KEYS, JSON_VALUES, max_size=3))
    items.extend(extras.items())
    items = draw(st.permutations(items))
    body = render(dict(items), draw)
    lead = draw(st.sampled_from([b"", b" ", b"\n", b"\r\n\t "]))
    newline = draw(st.sampled_from([b"", b"\n", b"\r\n"]))
    tail = draw(SOUP)
    after = newline + tail
    if after == b"\r":
        # A lone "\r" right after the object may be the start of "\r\n": it is
        # held back until a later byte shows what follows, so none is returned yet.
        rest = b""
    elif after.startswith(b"\r\n"):
        rest = after[2:]
    elif after.startswith(b"\n"):
        rest = after[1:]
    else:
        rest = after
    return option, lead + body + after, rest


class OptionProperties(SynchronousTestCase):
    @given(st.data())
    @FAST
    def test_valid_option_split_anywhere(self, data: Any) -> None:
        option, stream, rest = data.draw(option_streams())
        self.assertEqual(decode_all([stream]), ([option], rest))
        pieces = segments(stream, data.draw)
        self.assertEqual(decode_all(pieces), ([option], rest))

    @given(st.data())
    @FAST
    def test_valid_option_byte_by_byte(self, data: Any) -> None:
        option, stream, rest = data.draw(option_streams())
        pieces = [stream[i : i + 1] for i in range(len(stream))]
        self.assertEqual(decode_all(pieces), ([option], rest))

    @given(SOUP, st.data(), st.sampled_from([b"", b"{", b'{"MagicNumber":3927900,', b"  "]))
    @FAST
    def test_random_bytes_raise_only_protocol_errors(
        self, soup: bytes, data: Any, prefix: bytes
    ) -> None:
        stream = prefix + soup
        max_size = data.draw(st.sampled_from([16, 64, 16 * 1024]))
        try:
            decode_all(segments(stream, data.draw), max_size)
        except ProtocolError:
            pass

    @given(st.text(), INT64, INT64)
    @FAST
    def test_to_json_parses_back(self, codec: str, connect: int, handle: int) -> None:
        option = Option(codec, connect, handle)
        raw = option.to_json()
        self.assertTrue(raw.endswith(b"}\n"))
        self.assertEqual(parse_option(raw[:-1]), option)
        self.assertEqual(decode_all([raw + b"\x09"]), ([option], b"\x09"))

    @given(INT64.filter(lambda n: n != MAGIC_NUMBER))
    @FAST
    def test_wrong_magic_always_refused(self, magic: int) -> None:
        with self.assertRaises(ProtocolError) as caught:
            decode_all([Option(magic_number=magic).to_json()])
        self.assertIn(f"invalid magic number {magic:x}", str(caught.exception))


HEADERS = st.builds(
    Header,
    st.text(max_size=12),
    st.integers(0, 2**64 - 1),
    st.text(max_size=12),
    st.just(0),
    st.none(),
)


def decode_messages(pieces: list[bytes], max_size: int) -> list[tuple[Header, Any]]:
    decoder = JSONCodec().new_decoder(max_size)
    decoded = []
    pending: Header | None = None
    for piece in pieces:
        decoder.feed(piece)
        while (message := decoder.next_message()) is not None:
            if pending is None:
                pending = decoder.decode_header(message)
            else:
                decoded.append((pending, decoder.decode_body(message)))
                pending = None
    return decoded


class JSONCodecProperties(SynchronousTestCase):
    @given(SOUP, st.data(), st.integers(1, 128))
    @FAST
    def test_random_bytes_raise_only_protocol_errors(
        self, stream: bytes, data: Any, max_size: int
    ) -> None:
        try:
            decode_messages(segments(stream, data.draw), max_size)
        except (ProtocolError, CodecError):
            pass

    @given(st.lists(st.tuples(HEADERS, JSON_VALUES), max_size=5), st.data())
    @FAST
    def test_encoded_stream_split_anywhere(self, messages: Any, data: Any) -> None:
        encoder = JSONCodec().new_encoder()
        stream = b"".join(encoder.encode(header, body) for header, body in messages)
        expected = [(header, body) for header, body in messages]
        self.assertEqual(decode_messages([stream], 1 << 20), expected)
        self.assertEqual(decode_messages(segments(stream, data.draw), 1 << 20), expected)

    @given(SHAPES, st.integers(0, 2**64 - 1))
    @FAST
    def test_supported_shapes_round_trip_through_the_codec(
        self, shape: tuple[Any, Any], seq: int
    ) -> None:
        annotation, value = shape
        header = Header("Svc.Method", seq, "")
        raw = JSONCodec().new_encoder().encode(header, value)
        decoded = decode_messages([raw], 1 << 20)
        self.assertEqual(len(decoded), 1)
        self.assertEqual(decoded[0][0], header)
        back = converter_for(annotation)(decoded[0][1])
        self.assertEqual(back, value)
        self.assertIs(type(back), type(value))


class ParsedFastPathTests(SynchronousTestCase):
    """``next_parsed`` (C scanner first) agrees with ``next_value`` + ``loads``."""

    @examples(0.5)
    @given(
        values=st.lists(
            st.recursive(
                st.none()
                | st.booleans()
                | st.integers()
                | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3)
                ),
                max_leaves=8,
            ),
            min_size=1,
            max_size=6,
        ),
        garbage=st.sampled_from([b"", b'{"a" 1}', b"[1,]", b'"\\x"']),
        data=st.data(),
    )
    def test_same_values_as_slow_path(
        self, values: list[object], garbage: bytes, data: st.DataObject
    ) -> None:
        import json

        from txgeerpc._jsonsplit import InvalidJSON, JSONValueSplitter
        from txgeerpc._jsonvalue import loads

        stream = b"".join(
            json.dumps(value, ensure_ascii=data.draw(st.booleans())).encode() + b"\n"
            for value in values
        )
        stream += garbage + b"\n" + b'"end"\n'
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
        fast = JSONValueSplitter(1 << 20)
        slow = JSONValueSplitter(1 << 20)
        got_fast: list[object] = []
        got_slow: list[object] = []
        previous = 0
        for cut in [*cuts, len(stream)]:
            fast.feed(stream[previous:cut])
            slow.feed(stream[previous:cut])
            previous = cut
            while (parsed := fast.next_parsed()) is not None:
                got_fast.append("invalid" if isinstance(parsed, InvalidJSON) else parsed[0])
            while (raw := slow.next_value()) is not None:
                try:
                    got_slow.append(loads(raw))
                except ValueError:
                    got_slow.append("invalid")
        self.assertEqual(got_fast, got_slow)
        self.assertEqual(got_fast[-1], "end")
