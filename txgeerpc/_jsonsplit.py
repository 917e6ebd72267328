"""
Sans-IO splitting of a byte stream into complete top-level JSON values.

Finds where one JSON value ends without parsing it (validation is left to
``json.loads`` on the exact slice) and without depending on newlines or on how
the stream was segmented.  Scanning resumes where it stopped, so a large value
arriving in many small segments costs linear time.
"""

from __future__ import annotations

import re
from typing import Any

from ._budget import EXPANSION, EXPANSION_FLOOR
from ._jsonvalue import (
    UPPER_COST,
    JSONError,
    ascii_literal_left,
    budget_left,
    loads_within,
    plain_literal_at,
    scan_once,
)
from .errors import CodecError, MessageTooLarge

_WHITESPACE = b" \t\r\n"
_STRUCTURAL = re.compile(rb'["{}\[\]]')
_NUMBER_END = re.compile(rb"[^0-9eE+\-.]")
_LITERALS = {ord("t"): b"true", ord("f"): b"false", ord("n"): b"null"}
_OPEN = frozenset(b"{[")
_CLOSE = frozenset(b"}]")
_COMPACT_AT = 1 << 16
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_SKIP_WHITESPACE = re.compile(r"[ \t\r\n]*").match
_WHITESPACE_TEXT = " \t\r\n"
_SKIP_WHITESPACE_BYTES = re.compile(rb"[ \t\r\n]*").match
_FAST_WINDOW = EXPANSION_FLOOR // (UPPER_COST - EXPANSION)
"""Pending text up to this long is parsed at once by json's scanner (whatever
it holds is within its memory budget); longer text is scanned for the end of
its first value, whose cost is checked before it is parsed."""
_HEAD_WINDOW = 1024
"""Of longer pending text, the values that end in its first this many bytes
(a header before a large body) are still parsed at once: what a value cut
by the window's end costs the scanner is bounded by it."""
_SCAN_STRINGS_UP_TO = 4096
"""A string not closed within this many characters is left to the
structural scan (see :meth:`JSONValueSplitter.next_parsed`)."""

_NONE, _CONTAINER, _STRING, _NUMBER, _LITERAL = range(5)

# Brackets only: "{[" -> "(", "}]" -> ")", every other byte deleted.
_BRACKETS = bytes.maketrans(b"{[}]", b"(())")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"{[}]"))
_SKIM_AT = 256  # a run of bytes without strings this long is skimmed in C
_SKIM_PASSES = 8


def _dip(run: bytes) -> tuple[int, int] | None:
    """(how far the nesting dips below where ``run`` starts, where it ends
    relative to that) for a run of JSON without strings, in C-speed passes;
    ``None`` if it is nested too deeply to tell in a few passes."""
    brackets = run.translate(_BRACKETS, _NOT_BRACKETS)
    for _ in range(_SKIM_PASSES):
        reduced = brackets.replace(b"()", b"")
        if len(reduced) == len(brackets):
            closes = reduced.count(b")")  # ")))(((": the matched pairs are gone
            return closes, len(reduced) - 2 * closes
        brackets = reduced
    return None


class JSONValueSplitter:
    """Cut a stream into top-level JSON values.

    :param max_size: the largest value accepted, in bytes; a value that grows
        past it raises :class:`~txgeerpc.errors.MessageTooLarge` before more of
        it is buffered.
    """

    __slots__ = (
        "_buf",
        "_depth",
        "_in_string",
        "_kind",
        "_left",
        "_max",
        "_pos",
        "_scan",
        "_start",
        "_text",
        "_text_base",
    )

    def __init__(self, max_size: int) -> None:
        self._max = max_size
        self._buf = bytearray()
        self._pos = 0  # first byte not yet handed out
        self._kind = _NONE
        self._start = 0
        self._scan = 0
        self._depth = 0
        self._in_string = False
        # ASCII text of _buf[_text_base:] for next_parsed; "" after a non-ASCII chunk.
        self._text: str | None = None
        self._text_base = 0
        self._left = 0

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        self._buf += data
        self._text = None

    def next_parsed(self) -> tuple[Any] | InvalidJSON | None:
        """Like :meth:`next_value`, but parse the value too.

        :returns: ``(value,)`` for a complete value, :class:`InvalidJSON` for a
            complete but invalid one (the stream stays usable), or ``None`` if
            more bytes are needed.
        :raises CodecError: the bytes cannot start a JSON value.
        :raises MessageTooLarge: the value is larger than ``max_size``.
        """
        if self._kind == _NONE:
            # Fast path: let json's C scanner find the end while it parses.
            text = self._text
            if text is None:
                text = self._decode_pending()
            if text:
                base = self._text_base
                start = self._pos - base
                length = len(text)
                # Values are mostly apart by one newline: skipped without the
                # regular expression (this runs for every header and body).
                if start < length and text[start] in _WHITESPACE_TEXT:
                    start += 1
                    if start < length and text[start] in _WHITESPACE_TEXT:
                        start = _SKIP_WHITESPACE(text, start).end()  # type: ignore[union-attr]
                if start == length:
                    pos = self._pos = base + start
                    if pos == len(self._buf):
                        self._compact(force=True)
                        return None
                    self._text = None  # whitespace to the head window's end: scan on
                elif (
                    text[start] != '"' or text.find('"', start + 1, start + _SCAN_STRINGS_UP_TO) > 0
                ):
                    # (A string not closed in its first _SCAN_STRINGS_UP_TO characters is
                    # left to the structural scan, which finds its end with memchr:
                    # json's scanner would step through it, to fail if it is
                    # incomplete, and reads a long one slower than loads_within.)
                    try:
                        value, end = scan_once(text, start)
                    except (StopIteration, ValueError, RecursionError):
                        pass  # incomplete or invalid: the structural scan below decides
                    else:
                        kind = type(value)
                        # A number is complete only when a byte that cannot continue it
                        # follows ("-0." may still become "-0.5").
                        if (kind is not int and kind is not float) or (
                            end < length and text[end] not in _NUMBER_CHARS
                        ):
                            size = end - start
                            if size > self._max:
                                raise MessageTooLarge(size, self._max)
                            pos = self._pos = base + end
                            # Small values: what is left is worked out when asked.
                            if size <= 1024:
                                self._left = -size
                            elif kind is str:  # one literal: its cost is its size's
                                self._left = ascii_literal_left(size)
                            else:  # ASCII text: its offsets are the bytes'
                                with memoryview(self._buf) as view:  # one copy, not two
                                    data = bytes(view[pos - size : pos])
                                self._left = budget_left(data, text[start:end])
                            return (value,)
        end = self._next_end()
        if end < 0:
            return None
        self._text = None  # it may end before this value did (a head window)
        buf = self._buf
        start = self._start
        try:
            # A long string with nothing escaped: read from the buffer in
            # place, not copied out of it first (a 64 KiB echo's body).
            plain = plain_literal_at(buf, start, end, budget=True)
            if plain is None:
                value, self._left = loads_within(bytes(buf[start:end]), budget=True)
            else:
                value, self._left = plain
        except JSONError as error:
            return InvalidJSON(str(error))
        finally:
            self._compact(force=False)
        return (value,)

    def _decode_pending(self) -> str:
        """The text of the pending bytes for :meth:`next_parsed`'s fast path,
        kept until the next feed or the next value the structural scan cuts."""
        pos = self._pos
        window = len(self._buf) - pos
        if window > _FAST_WINDOW:
            # Only the head of a long pending text (a header before a large
            # body) is decoded: the long value after it takes the structural
            # scan, and decoding all of it would be wasted (a copy per read).
            window = _HEAD_WINDOW
        # Decoded from the buffer in place (latin-1: a copy; a bytes slice
        # first would be two more).  Non-ASCII text would need a byte <->
        # character offset map; such chunks take the structural scan (until
        # the next feed).
        with memoryview(self._buf) as view:
            text = str(view[pos : pos + window], "latin-1")
        if not text.isascii():  # (str knows it without a scan)
            text = ""
        self._text = text
        self._text_base = pos
        return text

    def budget_left(self) -> int:
        """What the conversion of the value last returned by
        :meth:`next_parsed` may take of its memory budget (see
        :func:`txgeerpc._budget.memory_budget`): the budget less what the
        value itself took."""
        left = self._left
        if left < 0:  # -size of a small value: at most UPPER_COST per byte
            return EXPANSION_FLOOR + (UPPER_COST - EXPANSION) * left
        return left

    def buffered(self) -> bytes:
        """Every byte fed but not yet returned as a value."""
        return bytes(self._buf[self._pos :])

    def buffered_size(self) -> int:
        """How many bytes :meth:`buffered` holds (without copying them)."""
        return len(self._buf) - self._pos

    def next_value(self) -> bytes | None:
        """Return the raw bytes of the next complete value, or ``None`` if more
        bytes are needed.

        Whitespace between values is skipped.  A top-level number needs the
        byte after it to be known complete, as in any streaming JSON decoder.

        :raises CodecError: the bytes cannot start a JSON value.
        :raises MessageTooLarge: the value is larger than ``max_size``.
        """
        end = self._next_end()
        if end < 0:
            return None
        value = bytes(self._buf[self._start : end])
        self._compact(force=False)
        return value

    def _next_end(self) -> int:
        """Where the next complete value ends (it starts at ``_start``; the
        caller takes it, then compacts), or -1 if more bytes are needed."""
        buf = self._buf
        end_of_data = len(buf)
        if self._kind == _NONE:
            pos = self._pos
            if pos < end_of_data and buf[pos] in _WHITESPACE:
                pos = _SKIP_WHITESPACE_BYTES(buf, pos).end()  # type: ignore[union-attr]
            self._pos = pos
            if pos == end_of_data:
                self._compact(force=True)
                return -1
            first = buf[pos]
            self._start = pos
            self._scan = pos + 1
            if first in _OPEN:
                self._kind = _CONTAINER
                self._depth = 1
                self._in_string = False
            elif first == 0x22:  # '"'
                self._kind = _STRING
            elif first == 0x2D or 0x30 <= first <= 0x39:  # '-' or digit
                self._kind = _NUMBER
            elif first in _LITERALS:
                self._kind = _LITERAL
            else:
                raise CodecError(f"invalid character {chr(first)!r} looking for beginning of value")

        end = self._find_end(buf, end_of_data)
        if end < 0:
            if end_of_data - self._start > self._max:
                raise MessageTooLarge(end_of_data - self._start, self._max)
            return -1
        if end - self._start > self._max:
            raise MessageTooLarge(end - self._start, self._max)
        self._pos = end
        self._kind = _NONE
        return end

    def _find_end(self, buf: bytearray, end_of_data: int) -> int:
        kind = self._kind
        if kind == _CONTAINER:
            return self._scan_container(buf, end_of_data)
        if kind == _STRING:
            self._in_string = True
            self._depth = 0
            return self._scan_container(buf, end_of_data)
        if kind == _NUMBER:
            match = _NUMBER_END.search(buf, self._scan)
            if match is None:
                self._scan = end_of_data
                return -1
            return match.start()
        literal = _LITERALS[buf[self._start]]
        end = self._start + len(literal)
        if end_of_data < end:
            return -1
        if buf[self._start : end] != literal:
            raise CodecError(f"invalid literal {bytes(buf[self._start : end])!r}")
        return end

    def _scan_container(self, buf: bytearray, end_of_data: int) -> int:
        pos = self._scan
        depth = self._depth
        in_string = self._in_string
        structural = _STRUCTURAL.search
        find = buf.find
        closing = escape = -1  # the next '"' and '\\' in a string (once looked for)
        skim_to = pos  # the run before skim_to was looked at: no skimming it again
        try:
            while True:
                if not in_string and pos >= skim_to:
                    skim_to = pos + _SKIM_AT
                    if buf.find(b'"', pos, skim_to) < 0 and skim_to < end_of_data:
                        quote = buf.find(b'"', skim_to, end_of_data)
                        run_end = end_of_data if quote < 0 else quote
                        # A long run without strings: when its nesting cannot
                        # get back to zero in it, take it whole (the attack's
                        # 1 MB of "{}," costs C-speed passes, not a loop).
                        dip = _dip(bytes(buf[pos:run_end]))
                        if dip is not None and dip[0] < depth:
                            depth += dip[1]
                            if quote < 0:
                                pos = end_of_data
                                return -1
                            pos = quote + 1
                            in_string = True
                            continue
                        # Its end is in this run: halve it down to a short
                        # piece, which the loop below scans.
                        while run_end - pos >= 2 * _SKIM_AT:
                            half = (pos + run_end) // 2
                            dip = _dip(bytes(buf[pos:half]))
                            if dip is not None and dip[0] < depth:
                                depth += dip[1]
                                pos = half
                            else:
                                run_end = half
                        skim_to = run_end
                if in_string:
                    # memchr, not a regex: the next quote, and the next backslash
                    # before it; each is looked for again only once passed.
                    if closing < pos:
                        closing = find(b'"', pos)
                        if closing < 0:
                            closing = end_of_data  # none yet
                    if escape < pos:
                        escape = find(b"\\", pos, closing)
                        if escape < 0:
                            escape = closing  # none before the quote
                    if escape < closing:  # skip the escaped byte
                        if escape + 1 >= end_of_data:
                            pos = escape
                            return -1
                        pos = escape + 2
                        continue
                    if closing == end_of_data:
                        pos = end_of_data
                        return -1
                    in_string = False
                    pos = closing + 1
                    if depth == 0:  # a top-level string just closed
                        return pos
                    continue
                match = structural(buf, pos)
                if match is None:
                    pos = end_of_data
                    return -1
                at = match.start()
                char = buf[at]
                pos = at + 1
                if char == 0x22:
                    in_string = True
                elif char in _OPEN:
                    depth += 1
                else:
                    depth -= 1
                    if depth == 0:
                        return pos
        finally:
            self._scan = pos
            self._depth = depth
            self._in_string = in_string

    def _compact(self, force: bool) -> None:
        if self._pos and (force or self._pos >= _COMPACT_AT):
            del self._buf[: self._pos]
            self._pos = 0
            self._text = None


class InvalidJSON:
    """A complete value that is not valid JSON (``{"a" 1}``); ``error`` says why."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error
