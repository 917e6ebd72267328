"""
The protobuf codec (``application/protobuf``, a txgeerpc codec for txgeerpc
peers; the ``protobuf`` extra: ``pip install txgeerpc[protobuf]``).

Protobuf is not self-delimiting, so in the plain GeeRPC stream every header
and every body is preceded by its length as a protobuf varint (what
protobuf's own ``writeDelimitedTo`` / ``parseDelimitedFrom`` use).  The
header is a ``txgeerpc.Header`` message, the body a ``txgeerpc.Body`` (both
in ``_pbwire.proto``): a generated message travels as a
``google.protobuf.Any`` (its type's full name and its bytes, kept raw until
the declared class parses them: :class:`txgeerpc._protobuf.PackedMessage`),
any other value as one msgpack object (docs/protocol.md 13.12).

Limits are checked on the length prefix, before anything is read or kept: a
header longer than ``max_message_size`` is a :class:`MessageTooLarge`
(the stream cannot go on); a body longer than it is skipped as it arrives
and decodes to a :class:`CodecError` naming the limit (its call fails, the
connection goes on).  Parsing is charged against
:func:`txgeerpc._budget.memory_budget` before it happens
(:func:`txgeerpc._protobuf.parse_within`).
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from .._budget import memory_budget
from .._protobuf import (
    TYPE_URL_PREFIX,
    PackedMessage,
    is_message,
    is_message_class,
    message_converter,
    parse_message,
    require_protobuf,
)
from .._wire import EmptyStruct, Header
from ..errors import CodecError, MessageTooLarge, ProtocolError
from ..interfaces import ICodec, IMessageDecoder, IMessageEncoder
from ._msgpack import MsgpackEncoder, decode_value

PROTOBUF = "application/protobuf"

_MAX_PREFIX = 10  # a varint of 64 bits
_COMPACT_AT = 1 << 16
_BODY_MESSAGE = 0x0A  # Body field 1 (message), length-delimited
_BODY_PLAIN = 0x12  # Body field 2 (plain), length-delimited
_ANY_TYPE_URL = 0x0A
_ANY_VALUE = 0x12

_wire: Any = None


def _messages() -> Any:
    """The generated ``_pbwire_pb2`` module (imported on first use)."""
    global _wire
    if _wire is None:
        require_protobuf()
        from . import _pbwire_pb2

        _wire = _pbwire_pb2
    return _wire


def varint(value: int) -> bytes:
    """``value`` (unsigned) as a protobuf varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(data: bytes) -> bytes:
    return varint(len(data)) + data


# -- headers -----------------------------------------------------------------


def decode_header_bytes(data: bytes) -> Header:
    """The Header in one complete ``txgeerpc.Header`` message (no length
    prefix; for framed mode too).

    :raises CodecError: it is not a valid header.
    """
    try:
        message = parse_message(_messages().Header, data)
    except ValueError as error:
        raise CodecError(f"protobuf: bad header: {error}") from None
    meta = dict(message.metadata) if message.metadata else None
    return Header(message.service_method, message.seq, message.error, message.budget, meta)


def encode_header(header: Header) -> bytes:
    """One ``txgeerpc.Header`` message (no length prefix).

    :raises CodecError: a field does not fit (a Seq past 64 bits...).
    """
    message = _messages().Header()
    try:
        message.service_method = header[0]
        message.seq = header[1]
        message.error = header[2]
        if header[3]:
            message.budget = header[3]
        if header[4]:
            message.metadata.update(header[4])
    except (TypeError, ValueError) as error:
        raise CodecError(f"protobuf: cannot encode the header: {error}") from None
    return message.SerializeToString()  # type: ignore[no-any-return]


# -- bodies ------------------------------------------------------------------


def decode_body_bytes(data: bytes) -> tuple[Any, int]:
    """One complete ``txgeerpc.Body`` (no length prefix; for framed mode
    too) -> (its value, what is left of its memory budget for conversion).
    A generated message comes back as a
    :class:`~txgeerpc._protobuf.PackedMessage` (parsed by the declared
    class's converter); a plain value as msgpack decodes it.

    :raises CodecError: malformed, or over its memory budget.
    """
    try:
        body = parse_message(_messages().Body, data)
    except ValueError as error:
        raise CodecError(f"protobuf: bad body: {error}") from None
    kind = body.WhichOneof("kind")
    if kind == "plain":
        return decode_value(body.plain)
    if kind == "message":
        url = body.message.type_url
        name = url[url.rfind("/") + 1 :]
        value = body.message.value
        # The bytes are kept (and copied once out of the parsed body).
        return PackedMessage(name, value), memory_budget(len(data)) - 2 * len(data)
    return None, memory_budget(len(data))  # an empty body: null


def encode_body(body: Any, body_type: Any = None, _plain: Any = None) -> bytes:
    """One ``txgeerpc.Body`` (no length prefix): a generated message as a
    ``google.protobuf.Any``; a dict declared as a message class
    (``body_type``) is first converted to it (``json_format.ParseDict``);
    anything else as one msgpack object (``None`` and error replies: ``{}``).

    :raises CodecError: the body cannot be encoded.
    """
    if body_type is not None and not is_message(body) and is_message_class(body_type):
        try:
            body = message_converter(body_type)(body)
        except TypeError as error:  # ConversionError
            raise CodecError(f"protobuf: {error}") from None
    if is_message(body):
        try:
            value = body.SerializeToString()
        except Exception as error:  # EncodeError: a required field of proto2 unset
            raise CodecError(f"protobuf: cannot encode {type(body).__name__}: {error}") from None
        url = (TYPE_URL_PREFIX + body.DESCRIPTOR.full_name).encode("utf-8")
        packed = (
            bytes((_ANY_TYPE_URL,)) + _delimited(url) + bytes((_ANY_VALUE,)) + _delimited(value)
        )
        return bytes((_BODY_MESSAGE,)) + _delimited(packed)
    if body is None or isinstance(body, EmptyStruct):
        body = {}
    encoder = _plain if _plain is not None else _PLAIN
    try:
        data = encoder.encode_body(body)
    except CodecError as error:
        raise CodecError(f"protobuf: {error}") from None
    return bytes((_BODY_PLAIN,)) + _delimited(data)


_PLAIN = MsgpackEncoder()


# -- the stream --------------------------------------------------------------


class _Skipped:
    """A body over the limit, skipped as it arrives: decoding it fails its call."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


@implementer(IMessageDecoder)
class ProtobufDecoder:
    """Splits a stream of length-prefixed messages (header, body, header...)."""

    decodes_whole_messages = True
    """:meth:`decode_header` and :meth:`decode_body` take one complete
    message's bytes, without its length (framed mode hands them over)."""

    def __init__(self, max_message_size: int) -> None:
        _messages()
        self._max = max_message_size
        self._buf = bytearray()
        self._pos = 0
        self._body_next = False  # messages alternate: header, body
        self._skip = 0  # bytes of a skipped body still to come
        self._left = 0

    def feed(self, data: bytes) -> None:
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            if dropped == len(data):
                return
            data = data[dropped:]
        self._buf += data

    def next_message(self) -> object | None:
        buf = self._buf
        start = self._pos
        size = len(buf)
        if start == size:
            return None
        length = shift = 0
        pos = start
        while True:
            if pos == size:
                if pos - start >= _MAX_PREFIX:
                    raise ProtocolError("protobuf: bad length prefix")
                return None
            byte = buf[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if pos - start >= _MAX_PREFIX:
                raise ProtocolError("protobuf: bad length prefix")
        is_body = self._body_next
        if length > self._max:
            if not is_body:
                raise MessageTooLarge(length, self._max)
            # Skip the body: drop what is here, and what is still to come.
            here = min(size - pos, length)
            self._skip = length - here
            self._advance(pos + here)
            self._body_next = False
            return _Skipped(length)
        end = pos + length
        if end > size:
            return None
        message = bytes(buf[pos:end])
        self._advance(end)
        self._body_next = not is_body
        return message

    def _advance(self, end: int) -> None:
        if end >= _COMPACT_AT or end == len(self._buf):
            del self._buf[:end]
            end = 0
        self._pos = end

    def buffered(self) -> int:
        return len(self._buf) - self._pos + (1 if self._skip else 0)

    def decode_header(self, message: object) -> Header:
        return decode_header_bytes(message)  # type: ignore[arg-type]

    def decode_body(self, message: object) -> Any:
        if type(message) is _Skipped:
            raise CodecError(
                f"protobuf: body of {message.size} bytes exceeds the maximum message size "
                f"of {self._max} bytes (skipped)"
            )
        value, self._left = decode_body_bytes(message)  # type: ignore[arg-type]
        return value

    def budget_left(self) -> int:
        """What the conversion of the body last decoded may take of its budget."""
        return self._left


@implementer(IMessageEncoder)
class ProtobufEncoder:
    """Encodes header + body, each preceded by its length (a varint)."""

    def __init__(self) -> None:
        _messages()
        self._plain = MsgpackEncoder()

    def encode_header(self, header: Header) -> bytes:
        """The header alone, without its length (for framed mode)."""
        return encode_header(header)

    def encode_body(self, body: Any, body_type: Any = None) -> bytes:
        """The body alone, without its length (for framed mode)."""
        return encode_body(body, body_type, self._plain)

    def encode_parts(self, header: Header, body: Any, body_type: Any = None) -> tuple[bytes, bytes]:
        """The header and the body apart, without their lengths (for framed mode)."""
        return encode_header(header), encode_body(body, body_type, self._plain)

    def encode(self, header: Header, body: Any, body_type: Any = None) -> bytes:
        head = encode_header(header)
        data = encode_body(body, body_type, self._plain)
        return b"".join((varint(len(head)), head, varint(len(data)), data))

    def withdraw(self, data: bytes) -> bytes:
        return b""  # protobuf messages carry no stream state


@implementer(ICodec)
class ProtobufCodec:
    """``application/protobuf``: length-prefixed protobuf headers and bodies."""

    name = PROTOBUF

    def new_decoder(self, max_message_size: int) -> ProtobufDecoder:
        return ProtobufDecoder(max_message_size)

    def new_encoder(self) -> ProtobufEncoder:
        return ProtobufEncoder()


__all__ = [
    "PROTOBUF",
    "ProtobufCodec",
    "ProtobufDecoder",
    "ProtobufEncoder",
    "decode_body_bytes",
    "decode_header_bytes",
    "encode_body",
    "encode_header",
    "varint",
]
