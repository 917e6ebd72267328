"""
Large JSON strings without a per-byte scan (issue 17 item 5): the splitter
finds a string's end with ``bytes.find``, the cost estimate cuts long strings
with it, and long plain ASCII strings are written and read without the
json module's per-character loops.  Each fast path must agree exactly with
the slow one it bypasses.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import _jsonsplit, _jsonvalue
from txgeerpc._jsonsplit import _HEAD_WINDOW, JSONValueSplitter
from txgeerpc._jsonvalue import _STRING, JSONError, _strip_strings, loads_within, quote, scan_once
from txgeerpc._wire import new_header
from txgeerpc.codec import JSONCodec, _json

# Text rich in what strings escape, so the fast paths' edges are hit often.
escapes = st.text(alphabet=st.sampled_from(['"', "\\", "\n", "\x00", "\x1f", "x", "é", "/"]))
long_texts = st.builds(
    lambda prefix, filler, suffix: prefix + "x" * filler + suffix,
    escapes,
    st.integers(4000, 9000),
    escapes,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | escapes | long_texts,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(escapes, children, max_size=3)
    ),
    max_leaves=6,
)


def split_in_pieces(data: bytes, size: int) -> list[bytes]:
    splitter = JSONValueSplitter(1 << 22)
    values = []
    for start in range(0, len(data), size):
        splitter.feed(data[start : start + size])
        while (value := splitter.next_value()) is not None:
            values.append(value)
    return values


class SplitterStringTests(SynchronousTestCase):
    @settings(max_examples=60, deadline=None)
    @given(st.lists(json_values, min_size=1, max_size=3), st.integers(1, 700))
    def test_values_in_any_pieces_split_as_json_writes_them(
        self, values: list[object], size: int
    ) -> None:
        texts = [json.dumps(value).encode() for value in values]
        # A space after each: a top-level number ends only at the byte after it.
        self.assertEqual(split_in_pieces(b" ".join(texts) + b" ", size), texts)

    def test_escapes_at_every_piece_boundary(self) -> None:
        # An escaped quote, an escaped backslash before the closing quote and
        # an escape-free run, cut at every place.
        text = b'["' + b"a" * 50 + b'\\"' + b"b" * 50 + b'\\\\"' + b',"\\\\\\""]'
        for size in range(1, 20):
            self.assertEqual(split_in_pieces(text + b"{}", size), [text, b"{}"])

    def test_many_escapes_without_a_closing_quote_wait(self) -> None:
        splitter = JSONValueSplitter(1 << 22)
        splitter.feed(b'"' + b"\\n" * 50_000)
        self.assertIsNone(splitter.next_value())
        splitter.feed(b'"1')
        self.assertEqual(splitter.next_value(), b'"' + b"\\n" * 50_000 + b'"')


class StripStringsTests(SynchronousTestCase):
    @settings(max_examples=100, deadline=None)
    @given(json_values)
    def test_find_cuts_the_same_strings_as_the_regex(self, value: object) -> None:
        for ensure_ascii in (True, False):
            data = json.dumps(value, ensure_ascii=ensure_ascii).encode()
            self.patch(_jsonvalue, "_FIND_STRINGS_BELOW", 0)  # always the find path
            self.assertEqual(_strip_strings(data), _STRING.subn(b'""', data))

    def test_unterminated_string_is_left_as_the_regex_leaves_it(self) -> None:
        data = b'["' + b"x" * 5000 + b'", "abc'
        self.assertEqual(_strip_strings(data), _STRING.subn(b'""', data))
        self.assertEqual(_strip_strings(data), (b'["", "abc', 1))


class PlainStringTests(SynchronousTestCase):
    @settings(max_examples=100, deadline=None)
    @given(long_texts)
    def test_quote_writes_what_the_encoder_writes(self, text: str) -> None:
        self.assertEqual(quote(text), _jsonvalue._fix_surrogates(encode_basestring(text)))

    @settings(max_examples=100, deadline=None)
    @given(long_texts)
    def test_loads_reads_what_the_scanner_reads(self, text: str) -> None:
        data = json.dumps(text, ensure_ascii=False).encode()
        self.assertEqual(loads_within(data, budget=True)[0], text)

    def test_raw_control_character_is_still_refused(self) -> None:
        with self.assertRaises(JSONError):
            loads_within(b'"' + b"x" * 5000 + b'\x01"')

    def test_unterminated_long_string_is_not_taken_for_one(self) -> None:
        with self.assertRaises(JSONError):
            loads_within(b'"' + b"x" * 5000)
        with self.assertRaises(JSONError):
            loads_within(b'"' + b"x" * 5000 + b'"x')


# Bytes a long literal may hold: what JSON escapes, text it keeps as is, and
# invalid UTF-8 (a stray byte, an encoded surrogate).
raw_pieces = st.sampled_from(
    [
        *(b'"', b"\\", b"\n", b"\x00", b"\x1f", b"\x7f", b"x", b"/"),
        *("é".encode(), "\u2028".encode(), "\U0001f600".encode()),
        *(b"\xff", b"\xed\xa0\x80"),
    ]
)
raw_literals = st.builds(
    lambda head, filler, tail, closed: (
        b'"' + b"".join(head) + b"x" * filler + b"".join(tail) + (b'"' if closed else b"")
    ),
    st.lists(raw_pieces, max_size=3),
    st.integers(4000, 6000),
    st.lists(raw_pieces, max_size=3),
    st.booleans(),
)


def read(data: bytes, fast: bool = True) -> object:
    """What ``loads_within(data, budget=True)`` returns, or its error's text;
    without ``fast``, through the general path (json's scanner and
    :func:`parse_cost`) whatever the literal's length."""
    saved = _jsonvalue._PLAIN_FROM
    _jsonvalue._PLAIN_FROM = saved if fast else 1 << 62
    try:
        return loads_within(data, budget=True)
    except JSONError as error:
        return str(error)
    finally:
        _jsonvalue._PLAIN_FROM = saved


class PlainLiteralTests(SynchronousTestCase):
    """A long string literal with nothing escaped is read by slicing its
    text (:func:`_jsonvalue._plain_string`): the same value, the same budget
    left and the same errors as json's scanner under :func:`parse_cost`."""

    @settings(max_examples=200, deadline=None)
    @given(raw_literals)
    def test_same_value_budget_and_errors_as_the_general_path(self, data: bytes) -> None:
        self.assertEqual(read(data), read(data, fast=False))

    def test_plain_literals_take_the_fast_path(self) -> None:
        # Else the test above would compare the general path with itself.
        def scan(text: str, index: int) -> None:
            raise AssertionError("scanned")

        literals = [
            b'"' + b"x" * 5000 + b'"',
            b'"' + "é\u2028\x7f".encode() * 2000 + b'"',
            b'"' + b"\xff" * 5000 + b'"',  # invalid UTF-8: U+FFFD, as Go reads it
        ]
        general = [read(data, fast=False) for data in literals]
        self.patch(_jsonvalue, "scan_once", scan)
        self.assertEqual([read(data) for data in literals], general)
        self.assertEqual(general[2][0], "\ufffd" * 5000)  # type: ignore[index]

    def test_escapes_and_control_bytes_are_left_to_the_scanner(self) -> None:
        for special in (b"\\n", b'\\"', b"\x00", b"\x1f", b"\n"):
            data = b'"' + b"x" * 5000 + special + b'"'
            self.assertEqual(read(data), read(data, fast=False))
        self.assertEqual(read(b'"' + b"x" * 5000 + b'\\n"')[0], "x" * 5000 + "\n")  # type: ignore[index]
        self.assertIn("control character", read(b'"' + b"x" * 5000 + b'\x01"'))  # type: ignore[arg-type]

    def test_over_budget_is_refused_alike(self) -> None:
        data = b'"' + b"x" * 5000 + b'"'
        self.patch(_jsonvalue, "memory_budget", lambda size: 10_000)
        self.assertEqual(read(data), read(data, fast=False))
        self.assertIn("over 10000 bytes of memory", read(data))  # type: ignore[arg-type]


class WrittenBackTests(SynchronousTestCase):
    """A long string just read is written back without being checked again
    (``_jsonvalue._last_read``): only that very string."""

    @settings(max_examples=100, deadline=None)
    @given(raw_literals)
    def test_what_was_read_is_written_as_the_encoder_writes_it(self, data: bytes) -> None:
        try:
            value = loads_within(data)[0]
        except JSONError:
            return
        self.assertEqual(quote(value), _jsonvalue._fix_surrogates(encode_basestring(value)))

    def test_only_the_string_read_skips_the_check(self) -> None:
        value = loads_within(b'"' + "é".encode() * 5000 + b'"')[0]
        self.assertIs(_jsonvalue._last_read, value)
        self.patch(_jsonvalue, "_plain", lambda text, start, end: self.fail("checked"))
        self.assertEqual(quote(value), '"' + "é" * 5000 + '"')
        self.patch(_jsonvalue, "_plain", lambda text, start, end: False)
        other = "é" * 4999 + "\n"  # as long, not the same string
        self.assertEqual(quote(other), '"' + "é" * 4999 + '\\n"')

    def test_long_strings_are_not_held(self) -> None:
        self.patch(_jsonvalue, "_REMEMBER_UP_TO", 4999)
        kept = loads_within(b'"' + b"x" * 4999 + b'"')[0]
        loads_within(b'"' + b"y" * 5000 + b'"')
        self.assertIs(_jsonvalue._last_read, kept)


class HeadWindowTests(SynchronousTestCase):
    """Of a long pending text only the first ``_HEAD_WINDOW`` bytes are
    decoded for the splitter's fast path (a header before a large body)."""

    def test_header_before_a_long_body(self) -> None:
        splitter = JSONValueSplitter(1 << 22)
        body = "x" * 65536
        splitter.feed(b'{"Seq":1}\n' + json.dumps(body).encode() + b'\n{"Seq":2}\n')
        self.assertEqual(splitter.next_parsed(), ({"Seq": 1},))
        self.assertLessEqual(len(splitter._text or ""), _HEAD_WINDOW)  # not the body
        self.assertEqual(splitter.next_parsed(), (body,))
        self.assertEqual(splitter.next_parsed(), ({"Seq": 2},))
        self.assertIsNone(splitter.next_parsed())

    def test_whitespace_to_the_windows_end(self) -> None:
        for before in (_HEAD_WINDOW - 3, _HEAD_WINDOW, 50_000):
            splitter = JSONValueSplitter(1 << 22)
            splitter.feed(b" " * before + b'{"a": "' + b"y" * 40_000 + b'"} 7 ')
            self.assertEqual(splitter.next_parsed(), ({"a": "y" * 40_000},))
            self.assertEqual(splitter.next_parsed(), (7,))
            self.assertIsNone(splitter.next_parsed())
            self.assertEqual(splitter.buffered_size(), 0)

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(json_values, min_size=1, max_size=4),
        st.lists(st.sampled_from([0, 1, 1000, _HEAD_WINDOW, 40_000]), min_size=4, max_size=4),
        st.sampled_from([1, 700, 4096, 65536]),
    )
    def test_values_parsed_in_any_pieces(
        self, values: list[object], gaps: list[int], size: int
    ) -> None:
        stream = b"".join(
            json.dumps(value).encode() + b" " * max(gap, 1)
            for value, gap in zip(values, gaps, strict=False)
        )
        splitter = JSONValueSplitter(1 << 22)
        out = []
        for start in range(0, len(stream), size):
            splitter.feed(stream[start : start + size])
            while (parsed := splitter.next_parsed()) is not None:
                out.append(parsed)
        self.assertEqual(out, [(json.loads(json.dumps(value)),) for value in values])

    def test_a_long_string_is_left_to_the_structural_scan(self) -> None:
        # json's scanner would step through it (all of it again on every read
        # while it is incomplete); memchr finds its end.
        scanned: list[str] = []

        def scan(text: str, index: int) -> Any:
            scanned.append(text[index])
            return scan_once(text, index)

        self.patch(_jsonsplit, "scan_once", scan)
        splitter = JSONValueSplitter(1 << 22)
        splitter.feed(b'{"Seq":1}\n"' + b"x" * 10_000)
        self.assertEqual(splitter.next_parsed(), ({"Seq": 1},))
        self.assertIsNone(splitter.next_parsed())
        splitter.feed(b'x"\n"short"\n')
        self.assertEqual(splitter.next_parsed(), ("x" * 10_001,))
        self.assertEqual(splitter.next_parsed(), ("short",))
        self.assertEqual(scanned, ["{", '"'])  # the header and the short string


# Sizes at the fast paths' edges: the read path's threshold (_PLAIN_FROM), and
# plain_bytes' switch from one translate pass to find passes (_TRANSLATE_UP_TO).
edge_fillers = st.sampled_from([1000, 1020, 1021, 1022, 1023, 1024, 1100]) | st.integers(8180, 8200)
# Invalid UTF-8 next to the quotes too: a lead byte without its continuation,
# a continuation without its lead.
edge_pieces = st.sampled_from([b"\xc3", b"\x80", b"\xe2\x82", b"\x1f", b'"', b"\\", b"\\n", b"x"])
edge_literals = st.builds(
    lambda head, filler, tail, closed: (
        b'"' + b"".join(head) + b"x" * filler + b"".join(tail) + (b'"' if closed else b"")
    ),
    st.lists(raw_pieces | edge_pieces, max_size=2),
    edge_fillers,
    st.lists(raw_pieces | edge_pieces, max_size=2),
    st.booleans(),
)


# Literals that are one string token whatever they hold (no lone quote or
# backslash): valid or not, the splitter cuts them whole.
one_literals = st.builds(
    lambda head, filler, tail: b'"' + b"".join(head) + b"x" * filler + b"".join(tail) + b'"',
    st.lists(raw_pieces | edge_pieces, max_size=2).filter(
        lambda pieces: b'"' not in pieces and b"\\" not in pieces
    ),
    edge_fillers | st.integers(3000, 5000),
    st.lists(raw_pieces | edge_pieces, max_size=2).filter(
        lambda pieces: b'"' not in pieces and b"\\" not in pieces
    ),
)


def parsed_in_pieces(data: bytes, size: int) -> list[object]:
    """What the splitter's ``next_parsed`` and ``budget_left`` give for
    ``data`` (then ``7``) fed ``size`` bytes at a time: (value, budget
    left), or the error's text."""
    splitter = JSONValueSplitter(1 << 22)
    out: list[object] = []
    stream = data + b"\n7 "
    for start in range(0, len(stream), size):
        splitter.feed(stream[start : start + size])
        while (parsed := splitter.next_parsed()) is not None:
            if isinstance(parsed, _jsonsplit.InvalidJSON):
                out.append(parsed.error)
            else:
                out.append((parsed[0], splitter.budget_left()))
    return out


class PlainEdgeTests(SynchronousTestCase):
    """The read path's fast path from 1 KiB (issue 17: 1 KiB strings were
    the slowest JSON rows) and its two ways of checking the bytes, pinned to
    the general path: json's scanner under :func:`parse_cost`."""

    @settings(max_examples=300, deadline=None)
    @given(edge_literals)
    def test_same_value_budget_and_errors_as_the_general_path(self, data: bytes) -> None:
        self.assertEqual(read(data), read(data, fast=False))

    @settings(max_examples=100, deadline=None)
    @given(one_literals, st.sampled_from([1, 333, 4096, 65536]))
    def test_the_splitter_reads_as_the_general_path(self, data: bytes, size: int) -> None:
        # In one read its json-scanner fast path (ASCII), in pieces or not
        # ASCII the structural scan, then plain_literal_at or loads_within.
        general = [read(data, fast=False), read(b"7", fast=False)]
        self.assertEqual(parsed_in_pieces(data, size), general)

    def test_edges_take_the_fast_path(self) -> None:
        def scan(text: str, index: int) -> None:
            raise AssertionError("scanned")

        literals = [b'"' + b"x" * filler + b'"' for filler in (1023, 8190, 8191, 70_000)]
        literals.append(b'"' + "é".encode() * 600 + b'"')
        general = [read(data, fast=False) for data in literals]
        self.patch(_jsonvalue, "scan_once", scan)
        self.assertEqual([read(data) for data in literals], general)

    def test_short_literals_take_the_general_path(self) -> None:
        # 1 KiB and less: json's scanner (and no byte checks).
        def checked(buf: bytes, start: int, end: int) -> bool:
            raise AssertionError("checked")

        self.patch(_jsonvalue, "plain_bytes", checked)
        self.assertEqual(read(b'"' + b"x" * 1022 + b'"')[0], "x" * 1022)  # type: ignore[index]

    def test_a_byte_escaped_at_either_end_is_left_to_the_scanner(self) -> None:
        for filler in (1023, 9000):
            for special in (b"\x00", b"\x1f", b"\n", b'\\"', b"\\\\"):
                for data in (
                    b'"' + special + b"x" * filler + b'"',
                    b'"' + b"x" * filler + special + b'"',
                ):
                    self.assertEqual(read(data), read(data, fast=False), data[:4] + data[-4:])

    def test_plain_bytes_is_no_escaped_byte(self) -> None:
        escaped = set(b'"\\') | set(range(32))
        for size in (0, 1, 64, _jsonvalue._TRANSLATE_UP_TO, _jsonvalue._TRANSLATE_UP_TO + 1):
            for special in range(256):
                for at in {0, size // 2, size - 1} if size else {0}:
                    run = bytearray(b"y" * size)
                    if size:
                        run[at] = special
                    buf = b"\x00\\" + bytes(run) + b'"\n'  # escaped bytes around the run
                    want = not escaped.intersection(run)
                    for kind in (bytes, bytearray):
                        self.assertEqual(
                            _jsonvalue.plain_bytes(kind(buf), 2, 2 + size), want, (size, special)
                        )


# Texts to write: what JSON escapes, non-ASCII, lone surrogates, at the
# write path's edges (_QUOTE_PLAIN_FROM, _TRANSLATE_UP_TO, _LONG_STRING).
write_pieces = st.sampled_from(['"', "\\", "\n", "\x00", "\x1f", "\x7f", "é", "\u2028", "\ud800"])
written_texts = st.builds(
    lambda head, filler, tail: "".join(head) + "x" * filler + "".join(tail),
    st.lists(write_pieces, max_size=2),
    st.sampled_from([0, 10, 62, 63, 64, 1020, 1024, 8190, 8192, 20_000]),
    st.lists(write_pieces, max_size=2),
)


class PlainWriteTests(SynchronousTestCase):
    """Strings written without the encoder's loops (:func:`quote` from 64
    characters, :func:`plain_utf8` and the JSON encoder's long string
    bodies), pinned to json's encoder."""

    @settings(max_examples=300, deadline=None)
    @given(written_texts)
    def test_quote_writes_what_the_encoder_writes(self, text: str) -> None:
        self.assertEqual(quote(text), _jsonvalue._fix_surrogates(encode_basestring(text)))

    @settings(max_examples=300, deadline=None)
    @given(written_texts)
    def test_plain_utf8_only_when_nothing_is_escaped(self, text: str) -> None:
        content = _jsonvalue.plain_utf8(text)
        literal = _jsonvalue._fix_surrogates(encode_basestring(text))
        if content is None:
            self.assertNotEqual(literal, '"' + text + '"')
        else:
            self.assertEqual(b'"' + content + b'"', literal.encode())

    @settings(max_examples=200, deadline=None)
    @given(written_texts, st.sampled_from(["", "boom"]), st.integers(0, 2**64 - 1))
    def test_messages_are_byte_exact(self, text: str, error: str, seq: int) -> None:
        encoder = JSONCodec().new_encoder()
        header = new_header(("Arith.Echo", seq, error, 0, None))
        fast = (encoder.encode(header, text), encoder.encode_parts(header, text))
        saved = _json._LONG_STRING
        _json._LONG_STRING = 1 << 62  # the general path: dumps
        try:  # (not self.patch: it would last until the last example is done)
            general = (encoder.encode(header, text), encoder.encode_parts(header, text))
        finally:
            _json._LONG_STRING = saved
        self.assertEqual(fast, general)

    def test_long_plain_bodies_take_the_fast_path(self) -> None:
        def dumps(value: object) -> str:
            raise AssertionError("dumped")

        encoder = JSONCodec().new_encoder()
        header = new_header(("Arith.Echo", 3, "", 0, None))
        self.patch(_json, "dumps", dumps)
        self.assertEqual(
            encoder.encode(header, "é" * 1024),
            b'{"ServiceMethod":"Arith.Echo","Seq":3,"Error":""}\n"' + "é".encode() * 1024 + b'"\n',
        )
        self.assertEqual(encoder.encode_parts(header, "x" * 2000)[1], b'"' + b"x" * 2000 + b'"')
        with self.assertRaises(AssertionError):  # escaped: the general path
            encoder.encode(header, "x" * 2000 + "\n")

    @settings(max_examples=100, deadline=None)
    @given(json_values, st.integers(0, 600), st.booleans())
    def test_the_splitters_budget_is_the_general_paths(
        self, value: object, padding: int, in_a_list: bool
    ) -> None:
        # A value the splitter's json-scanner fast path takes (ASCII, in one
        # read): a string's cost from its size, anything else's from parse_cost.
        document = [value, "p" * padding] if in_a_list else json.dumps(value) + "q" * padding
        data = json.dumps(document).encode()
        splitter = JSONValueSplitter(1 << 22)
        splitter.feed(data + b"\n")
        parsed = splitter.next_parsed()
        self.assertEqual(parsed, (json.loads(data),))
        text = data.decode()
        self.assertEqual(splitter.budget_left(), _jsonvalue.budget_left(data, text))
