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

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import _jsonvalue
from txgeerpc._jsonsplit import JSONValueSplitter
from txgeerpc._jsonvalue import _STRING, JSONError, _strip_strings, loads_within, quote

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
