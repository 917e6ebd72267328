"""
Strict JSON text <-> value, as Go's ``encoding/json`` sees JSON: no ``NaN`` or
``Infinity``, numbers within float64 range, nesting bounded by the
interpreter (too deep is an error, never a crash), lone surrogates written as
U+FFFD.  Both functions call the json module's C scanner and encoder
directly: they are on the per-message path.
"""

from __future__ import annotations

import base64
import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from ._budget import LIST_COST, MAP_COST, MAP_ENTRY_COST, SLOT_COST, memory_budget, over_budget
from ._convert import is_struct, struct_fields
from ._protobuf import is_message, message_to_plain


class JSONError(ValueError):
    """Text that is not strict JSON, or a value that cannot be written as JSON."""


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
# Number characters -> "0", anything else -> " ": a number that may be a new
# object (one digit alone is a shared small int) starts with " 00".
_NUMBER_BYTES = bytes(0x30 if byte in b"0123456789-+.eE" else 0x20 for byte in range(256))
_STR_COST = sys.getsizeof("")
_WIDE_STR_COST = sys.getsizeof("\U0001f600") - 4  # the header of a non-ASCII str
_NUMBER_COST = sys.getsizeof(2**62)
_NONEMPTY_MAP_COST = sys.getsizeof({"": 0}) - MAP_COST
UPPER_COST = 40
"""No JSON text parses to more than this many bytes of Python objects per
character (a list of ``{}``: 24; nesting, bounded by the recursion limit, up
to 37): a value of at most ``EXPANSION_FLOOR / (UPPER_COST - EXPANSION)``
characters (32 KiB) is always within its budget."""


def parse_cost(data: bytes, text: str) -> int:
    """An upper bound of the bytes of Python objects ``loads`` makes of one
    JSON value, ``data`` (``text`` decoded), from its structure, without
    parsing it."""
    bare, strings = _strip_strings(data)
    digits = bare.translate(_NUMBER_BYTES)
    numbers = digits.count(b" 00") + digits.startswith(b"00")
    count = bare.count
    return (
        2 * sys.getsizeof(text)  # the text, and at most as much in its strings
        + (MAP_COST + _NONEMPTY_MAP_COST) * count(b"{")
        - _NONEMPTY_MAP_COST * count(b"{}")
        + MAP_ENTRY_COST * count(b":")
        # A list grows by appends: CPython over-allocates an eighth plus up
        # to 9 slots (its +6, rounded up to a multiple of 4).
        + (LIST_COST + 10 * SLOT_COST) * count(b"[")
        - 10 * SLOT_COST * count(b"[]")  # an empty list has no slots
        + (9 * SLOT_COST * count(b",")) // 8
        + (_STR_COST if len(text) == len(data) else _WIDE_STR_COST) * strings
        + _NUMBER_COST * numbers
    )


def _strip_strings(data: bytes) -> tuple[bytes, int]:
    """``data`` with each string literal emptied (``""``), and how many there
    were.  Few, long strings (a 64 KiB text) are found with ``bytes.find``
    (memchr), many short ones with one regex pass; both cut the same strings
    from valid JSON."""
    quotes = data.count(b'"')
    if quotes * _FIND_STRINGS_BELOW >= len(data):
        return _STRING.subn(b'""', data)
    find = data.find
    pieces = []
    strings = pos = 0
    while True:
        start = find(b'"', pos)
        if start < 0:
            break
        end = start + 1
        while True:
            end = find(b'"', end)
            if end < 0:  # unterminated: the rest stays, as the regex leaves it
                pieces.append(data[pos:])
                return b"".join(pieces), strings
            backslashes = end - 1
            while data[backslashes] == 0x5C:  # '\\'
                backslashes -= 1
            if (end - 1 - backslashes) % 2 == 0:  # not escaped: the string ends here
                break
            end += 1
        pieces.append(data[pos:start])
        pieces.append(b'""')
        pos = end + 1
        strings += 1
    pieces.append(data[pos:])
    return b"".join(pieces), strings


_FIND_STRINGS_BELOW = 64
"""Bytes per quote above which strings are cut with ``bytes.find``."""


def budget_left(data: bytes, text: str) -> int:
    """What the conversion of the value ``data`` (``text`` decoded) parses
    to may still take of its memory budget (negative: the value itself is
    over it)."""
    size = len(data)
    if size <= 1024:
        return memory_budget(size) - UPPER_COST * size
    return memory_budget(size) - parse_cost(data, text)


def _reject_constant(name: str) -> Any:
    raise JSONError(f"invalid character {name[0]!r} looking for beginning of value")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JSONError(f"number {text} overflows float64")
    return value


scan_once = json.JSONDecoder(  # type: ignore[attr-defined]
    parse_constant=_reject_constant, parse_float=_finite_float
).scan_once
"""``scan_once(text, index) -> (value, end)``: strict JSON, raising StopIteration,
ValueError or RecursionError on text that is invalid or incomplete."""


def loads(data: bytes) -> Any:
    """Parse exactly one JSON value that fills ``data``.

    :raises JSONError: invalid or trailing text, non-finite
        numbers, nesting too deep.
    """
    return loads_within(data)[0]


def loads_within(data: bytes, budget: bool = False) -> tuple[Any, int]:
    """Parse exactly one JSON value that fills ``data``; with ``budget``,
    only if its objects fit the memory budget of a message of its size
    (:func:`txgeerpc._budget.memory_budget`), checked before parsing.

    :returns: (the value, what is left of the budget for its conversion).
    :raises JSONError: invalid or trailing text, non-finite
        numbers, nesting too deep, over the budget.
    """
    left = 0
    try:
        plain = plain_literal_at(data, 0, len(data), budget)
        if plain is not None:
            return plain
        text = data.decode("utf-8", "replace")  # Go decodes invalid UTF-8 as U+FFFD
        if budget:
            left = budget_left(data, text)
            if left < 0:
                raise JSONError(over_budget(memory_budget(len(data))))
        value, end = scan_once(text, 0)
    except StopIteration as stop:
        raise JSONError(f"invalid character at offset {stop.value}") from None
    except RecursionError:
        raise JSONError("nesting too deep") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, JSONError
        raise JSONError(str(error)) from None
    if end != len(text):
        raise JSONError(f"invalid character after top-level value at offset {end}")
    return value, left


def plain_literal_at(
    buf: bytes | bytearray, start: int, end: int, budget: bool = False
) -> tuple[str, int] | None:
    """:func:`loads_within` of ``buf[start:end]`` if it is a string literal
    of at least :data:`_PLAIN_FROM` bytes with nothing escaped in it (a
    quote, then no quote, backslash or control byte, then a quote), read in
    place; ``None`` for anything else (the general path decides).

    The fast path of a long string (a 64 KiB echo, a 1 KiB one): json's
    scanner would step through it character by character, and
    :func:`parse_cost` look at every byte; and the plain stream's splitter
    hands its buffer without copying the literal out of it.  UTF-8 keeps the
    bytes checked for themselves, so they are checked as they came (any
    text, not only ASCII).

    :raises JSONError: over the budget (the only error such a literal has).
    """
    if (
        end - start < _PLAIN_FROM
        or buf[start] != 0x22  # '"'
        or buf[end - 1] != 0x22
        or not plain_bytes(buf, start + 1, end - 1)
    ):
        return None
    return _plain_string(buf, start, end, budget)


def plain_bytes(buf: bytes | bytearray, start: int, end: int) -> bool:
    """Whether ``buf[start:end]`` holds no byte a JSON string escapes (a
    quote, a backslash, a control byte).  Up to :data:`_TRANSLATE_UP_TO`
    bytes, one ``bytes.translate`` pass deleting every other byte (its
    output is empty); longer runs, one ``find`` (memchr) pass per byte,
    which is as fast there and copies nothing."""
    if end - start <= _TRANSLATE_UP_TO:
        return not buf[start:end].translate(None, _KEPT_BYTES)
    find = buf.find
    for special in _ESCAPED_BYTES:
        if find(special, start, end) >= 0:
            return False
    return True


def _plain_string(buf: bytes | bytearray, start: int, end: int, budget: bool) -> tuple[str, int]:
    """The value of the literal :func:`plain_literal_at` passed: its bytes
    between the quotes decoded, charged what :func:`parse_cost` charges one
    string literal (its text, quotes included, twice, and one string)."""
    global _last_read
    with memoryview(buf) as view:
        value = str(view[start + 1 : end - 1], "utf-8", "replace")
    left = 0
    if budget:
        size = end - start
        chars = len(value)
        text_size = sys.getsizeof(value)  # the literal's text: its kind, two more characters
        text_size += 2 if value.isascii() else 2 * ((text_size - _WIDE_HEADER) // (chars + 1))
        left = memory_budget(size) - (
            2 * text_size + (_STR_COST if chars + 2 == size else _WIDE_STR_COST)
        )
        if left < 0:
            raise JSONError(over_budget(memory_budget(size)))
    if len(value) <= _REMEMBER_UP_TO:
        _last_read = value
    return value, left


def ascii_literal_left(size: int) -> int:
    """:func:`budget_left` of an ASCII string literal ``size`` bytes long
    (quotes included), escapes or not, from its size: what
    :func:`parse_cost` finds for one string (its text twice, and one
    string), without looking at its bytes."""
    return memory_budget(size) - (2 * (_STR_COST + size) + _STR_COST)


def _to_json(value: Any) -> Any:
    """``default`` hook of the encoder: only non-native values get here."""
    kind = type(value)
    if is_struct(kind):
        return {f.wire_name: getattr(value, f.name) for f in struct_fields(kind)}  # type: ignore[arg-type]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")  # Go's []byte in JSON
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    if is_message(value):  # a protobuf message: proto3's JSON mapping
        return message_to_plain(value)
    raise TypeError(f"{kind.__name__} is not JSON encodable")


def _make_encoder() -> Callable[[Any], str]:
    # JSONEncoder.encode builds a new C encoder on every call; build it once.
    # No circular-reference markers: a cycle ends in RecursionError, handled below.
    if c_make_encoder is None:  # pragma: no cover - CPython always has it
        return json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_to_json
        ).encode
    encode_chunks = c_make_encoder(
        None, _to_json, encode_basestring, None, ":", ",", False, False, False
    )
    join = "".join

    def encode(value: Any) -> str:
        return join(encode_chunks(value, 0))

    return encode


_encode = _make_encoder()
_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps(value: Any) -> str:
    """Compact JSON text for a value (structs as objects keyed by Go names).

    :raises JSONError: the value cannot be written (unsupported type, NaN or
        infinity, nesting too deep).
    """
    kind = type(value)
    if kind is str:
        return quote(value)
    try:
        if kind is int:
            return int.__repr__(value)  # ValueError past sys.get_int_max_str_digits()
        return _fix_surrogates(_encode(value))
    except (TypeError, ValueError, RecursionError) as error:
        raise JSONError(f"cannot encode {kind.__name__}: {error}") from None


def quote(text: str) -> str:
    """A JSON string literal (non-ASCII kept as is, like Go)."""
    if len(text) >= _QUOTE_PLAIN_FROM and (text is _last_read or _plain(text, 0, len(text))):
        return '"' + text + '"'
    return _fix_surrogates(encode_basestring(text))


def plain_utf8(text: str) -> bytes | None:
    """The UTF-8 bytes of ``text`` if its literal is ``'"' + text + '"'``
    (what :func:`quote` writes: nothing escaped, no lone surrogate), else
    ``None``.  For writing a long string as bytes without the copies of
    quoting it as text first: the encoding is the one copy, and the check
    runs on it (or not at all for the string just read, :data:`_last_read`)."""
    try:
        data = text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return None
    if text is _last_read or plain_bytes(data, 0, len(data)):
        return data
    return None


def _plain(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` is its own literal's content: nothing in
    it a JSON string escapes, and no lone surrogate (written as U+FFFD).
    Checked on its UTF-8 bytes (:func:`plain_bytes`), long ASCII text on
    itself (``str.find`` is memchr there), instead of the encoder's two
    loops over every character."""
    if end - start > _TRANSLATE_UP_TO and text.isascii():
        find = text.find
        for special in _ESCAPED:
            if find(special, start, end) >= 0:
                return False
        return True
    try:
        data = text[start:end].encode()
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return plain_bytes(data, 0, len(data))


_PLAIN_FROM = 1025
"""String literals from this many bytes are read by :func:`plain_literal_at`
(up to 1 KiB, :func:`budget_left` costs nothing and json's scanner is as fast)."""
_QUOTE_PLAIN_FROM = 64
"""Strings from this long are checked for :func:`_plain` first (shorter ones
are written by the encoder as fast)."""
_TRANSLATE_UP_TO = 8192
""":func:`plain_bytes` checks up to this many bytes in one ``translate`` pass."""
_ESCAPED = ('"', "\\", *map(chr, range(32)))
"""What a JSON string escapes (in ASCII text)."""
_ESCAPED_BYTES = tuple(special.encode() for special in _ESCAPED)
_KEPT_BYTES = bytes(sorted(set(range(256)) - set(b"".join(_ESCAPED_BYTES))))
"""Every byte a JSON string keeps as it is (UTF-8's included)."""
_WIDE_HEADER = sys.getsizeof("\xe9") - 2
"""A non-ASCII str's size less its characters and terminator (of its kind)."""
_last_read = ""
"""The last long string :func:`_plain_string` read: known to need no escape
(nor a lone surrogate: it was decoded from UTF-8), so :func:`quote` writes it
back without checking it again when a handler returns it as it came (an
echo, a value passed through): a string is immutable, and this reference
keeps its identity from being reused by another."""
_REMEMBER_UP_TO = 1 << 20
"""Longer strings are not kept in :data:`_last_read` (the memory it holds on to)."""


def _fix_surrogates(text: str) -> str:
    # A lone surrogate (a peer may send "\ud800") cannot be UTF-8: Go writes U+FFFD.
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub("\ufffd", text)


_HTML = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def go_quote(text: str) -> str:
    """A string literal exactly as Go's ``json.Encoder`` writes it (HTML-escaped)."""
    return quote(text).translate(_HTML)
