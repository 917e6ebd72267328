"""
The gob codec (``application/gob``): what GeeRPC actually speaks.

Every header and every body is one gob value on one gob stream per direction:
``Header{ServiceMethod string; Seq uint64; Error string}``, then the body
(the argument, the reply, or ``struct{}`` on an error reply).  Headers take a
hand-written fast path; bodies go through :mod:`txgeerpc.gob`.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from .._wire import BUDGET_FIELD, GOB, META_FIELD, EmptyStruct, Header, extension_fields, new_header
from ..errors import BodyTooLarge, CodecError, MessageTooLarge
from ..gob import (
    EMPTY,
    INT,
    SMALL,
    STRING,
    STRING_ID,
    UINT,
    UINT_ID,
    Decoder,
    Encoder,
    MapOf,
    StructDef,
    StructOf,
    read_int,
    read_string,
    read_uint,
    uint_bytes,
    utf8,
    write_int,
)
from ..interfaces import ICodec, IMessageDecoder, IMessageEncoder

HEADER = StructOf("Header", None)
HEADER.fields = (
    ("ServiceMethod", "ServiceMethod", STRING),
    ("Seq", "Seq", UINT),
    ("Error", "Error", STRING),
)

EXTENDED_HEADER = StructOf("Header", None)
EXTENDED_HEADER.fields = (
    *HEADER.fields,
    (BUDGET_FIELD, BUDGET_FIELD, INT),
    (META_FIELD, META_FIELD, MapOf(STRING, STRING)),
)
"""The Header with the txgeerpc extension's fields (docs/protocol.md 13.9):
defined on a stream only when a message first carries one of them, and only
towards a peer that named the extension or that ignores unknown fields."""

_CANONICAL_HEADER = (("ServiceMethod", STRING_ID), ("Seq", UINT_ID), ("Error", STRING_ID))
_NO_TYPE = (None, type(None))


@implementer(IMessageDecoder)
class GobMessageDecoder:
    """Gob stream -> headers and bodies (bodies as plain values)."""

    def __init__(self, max_message_size: int) -> None:
        decoder = self._decoder = Decoder(max_message_size)
        self.feed = decoder.feed
        self.next_message = decoder.next_message
        self.buffered = decoder.buffered
        self.decode_body = decoder.decode
        # What the conversion of the body last decoded may take of its budget.
        self.budget_left = decoder.budget_left
        self._fast_headers: dict[int, bool] = {}

    def decode_header(self, message: object) -> Header:
        if type(message) is tuple:  # a raw message: (type id, data, position)
            type_id, data, pos = message
            fast = self._fast_headers.get(type_id)
            if fast is None:
                definition = self._decoder.definition(type_id)
                fast = self._fast_headers[type_id] = (
                    isinstance(definition, StructDef) and definition.fields == _CANONICAL_HEADER
                )
            if fast:
                header = _common_header(data, pos)
                if header is not None:
                    return header
                try:
                    return _parse_header(data, pos)
                except IndexError:
                    raise CodecError("gob: unexpected end of header") from None
        try:
            value = self._decoder.decode(message)
        except BodyTooLarge as error:  # a header must be read: the stream cannot go on
            raise MessageTooLarge(error.size, error.limit) from None
        return _header_of(value)


def _common_header(data: bytes, pos: int) -> Header | None:
    """The header of nearly every message: a ServiceMethod of under 128 bytes,
    a Seq, no Error, in canonical gob; ``None`` for anything else (which
    :func:`_parse_header` reads, with its checks and errors).  It exists
    because it is a few byte comparisons where the general loop costs three
    more function calls per message."""
    end = len(data)
    if data[pos] != 1 or pos + 2 >= end:
        return None
    length = data[pos + 1]
    seq_at = pos + 3 + length  # past the name and Seq's delta
    if length >= 128 or seq_at >= end or data[seq_at - 1] != 1:
        return None
    seq = data[seq_at]
    if seq < 128:
        stop = seq_at + 1
    else:
        stop = seq_at + 257 - seq  # the count byte and 256 - seq bytes
        if seq < 248 or stop >= end:
            return None
        seq = int.from_bytes(data[seq_at + 1 : stop], "big")
    if stop + 1 != end or data[stop] != 0:
        return None
    name = data[pos + 2 : seq_at - 1].decode("utf-8", "surrogateescape")
    return new_header((name, seq, "", 0, None))


def _parse_header(data: bytes, pos: int) -> Header:
    service_method = error = ""
    seq = 0
    field = -1
    while True:
        delta = data[pos]
        if delta >= 128:
            delta, pos = read_uint(data, pos)
        else:
            pos += 1
        if delta == 0:
            break
        field += delta
        if field == 0:
            service_method, pos = read_string(data, pos)
        elif field == 1:
            seq, pos = read_uint(data, pos)
        elif field == 2:
            error, pos = read_string(data, pos)
        else:
            raise CodecError(f"gob: header field number {field} out of range")
    if pos != len(data):
        raise CodecError("gob: extra data after the header")
    return new_header((service_method, seq, error, 0, None))


def _header_of(value: Any) -> Header:
    """A Header from a generically decoded value (a peer's own Header type:
    fields by name, missing ones zero, as Go matches them)."""
    if not isinstance(value, dict):
        raise CodecError(f"gob: header must be a struct, got {type(value).__name__}")
    service_method = value.get("ServiceMethod", "")
    seq = value.get("Seq", 0)
    error = value.get("Error", "")
    if not isinstance(service_method, str) or not isinstance(error, str):
        raise CodecError("gob: header ServiceMethod and Error must be strings")
    if type(seq) is not int or seq < 0:
        raise CodecError(f"gob: header Seq must be an unsigned integer, got {seq!r}")
    if len(value) > 3:
        return Header(service_method, seq, error, *extension_fields(value, "gob"))
    return new_header((service_method, seq, error, 0, None))


@implementer(IMessageEncoder)
class GobMessageEncoder:
    """Headers and bodies -> one gob stream."""

    def __init__(self) -> None:
        self._encoder = Encoder()
        self._header_id: bytes | None = None
        self._empty_value: bytes | None = None
        # ServiceMethod -> the header payload up to it (type id and field).
        self._prefixes: dict[str, bytes] = {}

    def encode(self, header: Header, body: Any, body_type: Any = None) -> bytes:
        if body is None or isinstance(body, EmptyStruct):
            body, body_type = {}, EMPTY
        elif body_type in _NO_TYPE or body_type is Any or body_type is object:
            body_type = None
        if header[3] or header[4] or self._header_id is None:
            return self._encode_generic(header, body, body_type)
        head = self._head(header)
        if body_type is EMPTY:
            return head + self._empty(body)
        return head + self._encoder.encode(body, body_type)

    def encode_parts(self, header: Header, body: Any, body_type: Any = None) -> tuple[bytes, bytes]:
        """The header's gob messages and the body's, apart (for framed mode):
        type definitions go with the message that first needs them."""
        if body is None or isinstance(body, EmptyStruct):
            body, body_type = {}, EMPTY
        elif body_type in _NO_TYPE or body_type is Any or body_type is object:
            body_type = None
        if header[3] or header[4] or self._header_id is None:
            data = self._encode_generic(header, body, body_type)
            cut = _first_value_end(data)
            return data[:cut], data[cut:]
        head = self._head(header)
        if body_type is EMPTY:
            return head, self._empty(body)
        return head, self._encoder.encode(body, body_type)

    def _encode_generic(self, header: Header, body: Any, body_type: Any) -> bytes:
        encoder = self._encoder
        if header[3] or header[4]:
            # The extension's fields: the generic path (calls that use them only).
            extended = {
                "ServiceMethod": header[0],
                "Seq": header[1],
                "Error": header[2],
                BUDGET_FIELD: header[3],
                META_FIELD: header[4] or {},
            }
            return encoder.encode_all(((extended, EXTENDED_HEADER), (body, body_type)))
        data = encoder.encode_all(
            (
                ({"ServiceMethod": header[0], "Seq": header[1], "Error": header[2]}, HEADER),
                (body, body_type),
            )
        )
        known = encoder.known_id(HEADER)
        assert known is not None
        id_bytes = bytearray()
        write_int(id_bytes, known)
        self._header_id = bytes(id_bytes)
        return data

    def _head(self, header: Header) -> bytes:
        """The header's message on the fast path (its type already sent)."""
        service_method, seq, error, _, _ = header
        prefix = self._prefixes.get(service_method)
        if prefix and service_method and not error and type(seq) is int and 0 < seq <= _MAX_SEQ:
            # Nearly every header: a cached method, a Seq, no Error.  Seq's
            # delta, byte count and bytes and the struct's end in one go
            # where the general lines below take six concatenations.
            if seq < 128:
                tail = _SEQ_TAILS[seq]
            else:
                size = (seq.bit_length() + 7) >> 3
                tail = ((_SEQ_MARKS[size] | seq) << 8).to_bytes(size + 3, "big")
            length = len(prefix) + len(tail)
            if length < 128:
                return SMALL[length] + prefix + tail
        if type(seq) is not int or not 0 <= seq <= _MAX_SEQ:
            raise CodecError(f"gob: Header.Seq {seq!r} does not fit uint64")
        prefix = self._prefixes.get(service_method)
        if prefix is None:
            prefix = self._header_id
            assert prefix is not None
            if service_method:
                name = utf8(service_method)
                prefix += b"\x01" + uint_bytes(len(name)) + name
            if len(self._prefixes) < 1024:
                self._prefixes[service_method] = prefix
        last = 0 if service_method else -1
        if seq:
            prefix += _DELTAS[1 - last] + (SMALL[seq] if seq < 128 else uint_bytes(seq))
            last = 1
        if error:
            text = utf8(error)
            prefix += _DELTAS[2 - last] + uint_bytes(len(text)) + text
        prefix += b"\x00"
        length = len(prefix)
        return (SMALL[length] if length < 128 else uint_bytes(length)) + prefix

    def _empty(self, body: Any) -> bytes:
        """The body of an error reply (``struct{}``), its type sent once."""
        empty = self._empty_value
        if empty is None:
            data = self._encoder.encode(body, EMPTY)
            empty_id = bytearray()
            write_int(empty_id, self._encoder.known_id(EMPTY) or 0)
            self._empty_value = bytes((len(empty_id) + 1,)) + empty_id + b"\x00"
            return data
        return empty

    def withdraw(self, data: bytes) -> bytes:
        # The type definitions (negative ids): later messages refer to them.
        kept, pos = [], 0
        while pos < len(data):
            length, start = read_uint(data, pos)
            type_id, _ = read_int(data, start)
            if type_id < 0:
                kept.append(data[pos : start + length])
            pos = start + length
        return b"".join(kept)


_MAX_SEQ = 2**64 - 1
_DELTAS = SMALL[:4]
_SEQ_TAILS = [bytes((1, seq, 0)) for seq in range(128)]
"""A header's end after a non-empty ServiceMethod: Seq's delta, a one-byte
Seq, the struct's end."""
_SEQ_MARKS = [0] + [(0x100 | (256 - size)) << (8 * size) for size in range(1, 9)]
"""Seq's delta (1) and byte count (256 - size) above a Seq of ``size`` bytes."""


def _first_value_end(data: bytes) -> int:
    """Where the first value message ends in a gob encoder's output (type
    definitions, negative ids, may precede it)."""
    pos = 0
    while pos < len(data):
        length, start = read_uint(data, pos)
        type_id, _ = read_int(data, start)
        pos = start + length
        if type_id >= 0:
            return pos
    raise CodecError("gob: no header in the encoded message")


@implementer(ICodec)
class GobCodec:
    """``application/gob``: Go's encoding/gob, one stream per direction."""

    name = GOB

    def new_decoder(self, max_message_size: int) -> GobMessageDecoder:
        return GobMessageDecoder(max_message_size)

    def new_encoder(self) -> GobMessageEncoder:
        return GobMessageEncoder()


__all__ = ["HEADER", "GobCodec", "GobMessageDecoder", "GobMessageEncoder"]
