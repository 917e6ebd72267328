"""
The JSON codec (an extension: GeeRPC declares ``application/json`` but never
implemented it; vector 02 records the shape).

Each header and each body is one JSON document followed by ``\\n``; headers
always carry ``ServiceMethod``, ``Seq`` and ``Error``; error replies carry
``{}``.  Decoding splits the stream by JSON structure, not by newlines.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from zope.interface import implementer

from .._jsonsplit import InvalidJSON, JSONValueSplitter
from .._jsonvalue import JSONError, dumps, loads, plain_utf8, quote
from .._wire import BUDGET_FIELD, JSON, META_FIELD, Header, extension_fields, new_header
from ..errors import CodecError
from ..interfaces import ICodec, IMessageDecoder, IMessageEncoder

_MAX_SEQ = 2**64 - 1


@implementer(IMessageDecoder)
class JSONDecoder:
    """Splits a JSON stream into documents; decodes headers and bodies."""

    feed: Callable[[bytes], None]
    next_message: Callable[[], tuple[Any] | InvalidJSON | None]
    buffered: Callable[[], int]
    budget_left: Callable[[], int]

    def __init__(self, max_message_size: int) -> None:
        splitter = JSONValueSplitter(max_message_size)
        # Bound methods of the splitter, not wrappers: this is the per-message path.
        # Messages come out parsed: (value,), or InvalidJSON for a well-delimited
        # value that is not valid JSON (which fails only its own call).
        self.feed = splitter.feed
        self.next_message = splitter.next_parsed
        self.buffered = splitter.buffered_size
        # What the conversion of the body last parsed may take of its budget.
        self.budget_left = splitter.budget_left

    def decode_header(self, message: object) -> Header:
        value = _load(message)
        if type(value) is not dict:
            raise CodecError(f"json: header must be an object, got {type(value).__name__}")
        try:
            service_method = value["ServiceMethod"]
            seq = value["Seq"]
            error = value["Error"]
        except KeyError:
            service_method, seq, error = _fold_header(value)
        if type(service_method) is not str:
            service_method = _field(service_method, str, "ServiceMethod", "")
        if type(seq) is not int or not 0 <= seq <= _MAX_SEQ:
            seq = _field(seq, int, "Seq", 0)
            if not 0 <= seq <= _MAX_SEQ:
                raise CodecError(f"json: Seq {seq} overflows uint64")
        if type(error) is not str:
            error = _field(error, str, "Error", "")
        if len(value) > 3:  # the txgeerpc extension's fields (docs/protocol.md 13.9)
            return Header(service_method, seq, error, *extension_fields(value, "json"))
        return new_header((service_method, seq, error, 0, None))

    def decode_body(self, message: object) -> Any:
        return _load(message)


def _load(message: object) -> Any:
    """The value of a message from :meth:`JSONDecoder.next_message` (or raw bytes)."""
    if type(message) is tuple:
        return message[0]
    if isinstance(message, InvalidJSON):
        raise CodecError(f"json: {message.error}")
    try:
        return loads(message)  # type: ignore[arg-type]
    except JSONError as error:
        raise CodecError(f"json: {error}") from None


def _fold_header(value: dict[str, Any]) -> tuple[Any, Any, Any]:
    # encoding/json matches field names case-insensitively; missing fields are zero.
    folded = {key.lower(): item for key, item in value.items()}
    return (
        folded.get("servicemethod", ""),
        folded.get("seq", 0),
        folded.get("error", ""),
    )


def _field(value: Any, kind: type, name: str, zero: Any) -> Any:
    if value is None:
        return zero
    if type(value) is not kind:
        raise CodecError(f"json: cannot unmarshal {json.dumps(value)} into Header.{name}")
    return value


@implementer(IMessageEncoder)
class JSONEncoder:
    """Encodes header + body as two newline-terminated JSON documents."""

    def encode(self, header: Header, body: Any, body_type: Any = None) -> bytes:
        if type(body) is str and len(body) >= _LONG_STRING:
            content = plain_utf8(body)
            if content is not None:
                return b"".join((_header_text(header, '}\n"').encode(), content, b'"\n'))
        try:
            body_text = dumps(body)
        except JSONError as error:
            raise CodecError(f"json: {error}") from None
        return (_header_text(header, "}\n") + body_text + "\n").encode()

    def encode_parts(self, header: Header, body: Any, body_type: Any = None) -> tuple[bytes, bytes]:
        """The header's document and the body's, apart and without their
        newlines (for framed mode)."""
        if type(body) is str and len(body) >= _LONG_STRING:
            content = plain_utf8(body)
            if content is not None:
                return _header_text(header, "}").encode(), b"".join((b'"', content, b'"'))
        try:
            body_text = dumps(body)
        except JSONError as error:
            raise CodecError(f"json: {error}") from None
        return _header_text(header, "}").encode(), body_text.encode()

    def withdraw(self, data: bytes) -> bytes:
        return b""  # JSON messages carry no stream state


_LONG_STRING = 1024
"""A string body from this long is written by :func:`_header_text` and
:func:`~txgeerpc._jsonvalue.plain_utf8` when it needs no escape: its bytes
copied twice (encoded, joined), not five times (quoted, joined to its
header and its newline as text, then encoded)."""


def _header_text(header: Header, end: str) -> str:
    """The header's document, then ``end``: what :meth:`JSONEncoder.encode`
    and :meth:`JSONEncoder.encode_parts` write before the body."""
    text = header[2]
    return (
        (_PREFIXES.get(header[0]) or _prefix(header[0]))
        + str(header[1])
        + (',"Error":' + quote(text) if text else _NO_ERROR)
        + (_extension_text(header) if header[3] or header[4] else "")
        + end
    )


_PREFIXES: dict[str, str] = {}
"""``{"ServiceMethod":"Arith.Multiply","Seq":`` by method name: a header's
text up to its Seq, the same for every call of a method, quoted once instead
of on every message (the per-message path)."""
_MAX_PREFIXES = 1024  # names are the peer's to choose: the cache is bounded
_NO_ERROR = ',"Error":""'


def _prefix(service_method: str) -> str:
    prefix = '{"ServiceMethod":' + quote(service_method) + ',"Seq":'
    if len(_PREFIXES) < _MAX_PREFIXES:
        _PREFIXES[service_method] = prefix
    return prefix


def _extension_text(header: Header) -> str:
    text = ""
    if header[3]:
        text += f',"{BUDGET_FIELD}":{header[3]:d}'
    if header[4]:
        text += f',"{META_FIELD}":' + dumps(header[4])
    return text


@implementer(ICodec)
class JSONCodec:
    """``application/json``: newline-terminated JSON documents (vector 02)."""

    name = JSON

    def new_decoder(self, max_message_size: int) -> JSONDecoder:
        return JSONDecoder(max_message_size)

    def new_encoder(self) -> JSONEncoder:
        return JSONEncoder()
