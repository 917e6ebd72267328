"""
The msgpack codec (``application/msgpack``, a txgeerpc codec: Go GeeRPC has
none, so only txgeerpc peers name it in their Option).

Each header and each body is one msgpack object; msgpack is self-delimiting,
so the plain GeeRPC stream needs nothing around them.  The header is a map
with Go's field names, as in the JSON codec (``ServiceMethod``, ``Seq``,
``Error``, and the extension's ``TxgeerpcBudget`` / ``TxgeerpcMeta`` when
set); error replies carry an empty map.  Structs travel as maps keyed by
their wire names, bytes as msgpack ``bin``.

Decoding is bounded like the other codecs' (docs/protocol.md 13.10): a
streaming unpacker only *skips* each object to find where it ends (no object
is built; an announced length over the message limit is refused at once),
then the complete message's objects are costed from its bytes before
:func:`msgpack.unpackb` builds them, against
:func:`txgeerpc._budget.memory_budget` of its size.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from typing import Any

import msgpack
from zope.interface import implementer

from .._budget import (
    EXPANSION,
    EXPANSION_FLOOR,
    LIST_COST,
    MAP_COST,
    MAP_ENTRY_COST,
    SLOT_COST,
    memory_budget,
    over_budget,
)
from .._jsonvalue import _to_json
from .._wire import BUDGET_FIELD, META_FIELD, EmptyStruct, Header, extension_fields, new_header
from ..errors import CodecError, MessageTooLarge, ProtocolError
from ..interfaces import ICodec, IMessageDecoder, IMessageEncoder

MSGPACK = "application/msgpack"

_MAX_SEQ = 2**64 - 1
_COMPACT_AT = 1 << 16

UPPER_COST = 80
"""No msgpack byte decodes to more than this many bytes of Python objects
(an empty map, ``0x80``: a dict and its slot, 72): a message of at most
``EXPANSION_FLOOR / (UPPER_COST - EXPANSION)`` bytes (14 KiB) is always
within its budget; a longer one is costed from its structure first."""
_SMALL = EXPANSION_FLOOR // (UPPER_COST - EXPANSION)

_STR_COST = sys.getsizeof("")
_WIDE_STR_COST = sys.getsizeof("\U0001f600") - 4
_BYTES_COST = sys.getsizeof(b"")
_NUMBER_COST = sys.getsizeof(2**64)
_FLOAT_COST = sys.getsizeof(1.0)
_EXT_COST = 64 + _BYTES_COST  # an ExtType (or Timestamp) and its data


def _to_plain(value: Any) -> Any:
    """``default`` hook of the packer: structs as maps, sets as lists."""
    return _to_json(value)


def message_cost(data: bytes) -> int:
    """An upper bound of the bytes of Python objects :func:`msgpack.unpackb`
    makes of the one complete object ``data``, from its structure, without
    building it.

    :raises CodecError: ``data`` is not one well-formed msgpack object.
    """
    pos = cost = 0
    pending = 1  # objects still to read
    size = len(data)
    try:
        while pending:
            pending -= 1
            byte = data[pos]
            if byte <= 0x7F or byte >= 0xE0:  # fixint
                pos += 1
                cost += _NUMBER_COST
                continue
            if byte <= 0x8F:  # fixmap
                count, pos = byte & 0x0F, pos + 1
                cost += MAP_COST + MAP_ENTRY_COST * count
                pending += 2 * count
                continue
            if byte <= 0x9F:  # fixarray
                count, pos = byte & 0x0F, pos + 1
                cost += LIST_COST + SLOT_COST * count
                pending += count
                continue
            if byte <= 0xBF:  # fixstr
                length, pos = byte & 0x1F, pos + 1
                cost += _str_cost(data, pos, length)
                pos += length
                continue
            if byte in (0xC0, 0xC2, 0xC3):  # nil, false, true: shared objects
                pos += 1
                continue
            if 0xC4 <= byte <= 0xC6:  # bin 8/16/32
                width = 1 << (byte - 0xC4)
                length = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
                pos += 1 + width + length
                cost += _BYTES_COST + length
                continue
            if 0xC7 <= byte <= 0xC9:  # ext 8/16/32
                width = 1 << (byte - 0xC7)
                length = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
                pos += 2 + width + length
                cost += _EXT_COST + length
                continue
            if byte in (0xCA, 0xCB):  # float 32/64
                pos += 5 if byte == 0xCA else 9
                cost += _FLOAT_COST
                continue
            if 0xCC <= byte <= 0xD3:  # (u)int 8/16/32/64
                pos += 1 + (1 << ((byte - 0xCC) & 3))
                cost += _NUMBER_COST
                continue
            if 0xD4 <= byte <= 0xD8:  # fixext 1/2/4/8/16
                length = 1 << (byte - 0xD4)
                pos += 2 + length
                cost += _EXT_COST + length
                continue
            if 0xD9 <= byte <= 0xDB:  # str 8/16/32
                width = 1 << (byte - 0xD9)
                length = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
                pos += 1 + width
                cost += _str_cost(data, pos, length)
                pos += length
                continue
            if byte in (0xDC, 0xDD):  # array 16/32
                width = 2 if byte == 0xDC else 4
                count = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
                pos += 1 + width
                cost += LIST_COST + SLOT_COST * count
                pending += count
                continue
            if byte in (0xDE, 0xDF):  # map 16/32
                width = 2 if byte == 0xDE else 4
                count = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
                pos += 1 + width
                cost += MAP_COST + MAP_ENTRY_COST * count
                pending += 2 * count
                continue
            raise CodecError(f"msgpack: invalid byte 0x{byte:02x}")
    except IndexError:
        raise CodecError("msgpack: unexpected end of message") from None
    if pos != size:
        raise CodecError("msgpack: extra data after the value")
    return cost


def _str_cost(data: bytes, pos: int, length: int) -> int:
    # A str of n UTF-8 bytes: n bytes if ASCII, else at most 4 per byte
    # (ASCII characters widened to UCS-4 by one astral character).
    if data[pos : pos + length].isascii():
        return _STR_COST + length
    return _WIDE_STR_COST + 4 * length


def decode_value(data: bytes) -> tuple[Any, int]:
    """One complete msgpack object -> (its value, what is left of its memory
    budget for the conversion to a declared type), costed before it is built.

    :raises CodecError: malformed, or over its memory budget.
    """
    size = len(data)
    if size <= _SMALL:  # memory_budget(size) - UPPER_COST * size, without its calls
        left = EXPANSION_FLOOR - (UPPER_COST - EXPANSION) * size
    else:
        budget = memory_budget(size)
        left = budget - message_cost(data)
        if left < 0:
            raise CodecError(f"msgpack: {over_budget(budget)}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False), left
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as error:
        raise CodecError(f"msgpack: {error}") from None
    except RecursionError:
        raise CodecError("msgpack: nesting too deep") from None


_NO_ERROR = b"\xa5Error\xa0"
_FIXINT_END = struct.Struct(">B7s").unpack_from
_UINT_ENDS: tuple[Callable[[bytes | bytearray, int], tuple[int, int, bytes]] | None, ...] = (
    None,
    None,
    struct.Struct(">BB7s").unpack_from,
    struct.Struct(">BH7s").unpack_from,
    None,
    struct.Struct(">BI7s").unpack_from,
    None,
    None,
    None,
    struct.Struct(">BQ7s").unpack_from,
)
"""By width: the end of a common header whose Seq is a uint 8/16/32/64 of
(width - 1) bytes: its first byte, the Seq, the last 7 bytes."""
_UINT_MARKS = (0, 0, 0xCC, 0xCD, 0, 0xCE, 0, 0, 0, 0xCF)
"""By width: the first byte of a uint of (width - 1) bytes."""
_NOTHING_KEPT = b"\xc1"  # never used in msgpack: no header starts with it


def common_prefix(method: str) -> bytes:
    """The bytes of a common header up to its Seq: ``{"ServiceMethod":
    method, "Seq": `` as the encoder writes them (then the Seq, then
    ``"Error": ""``)."""
    packed: bytes = msgpack.packb(method, use_bin_type=True)
    return b"\x83\xadServiceMethod" + packed + b"\xa3Seq"


def header_of(value: Any) -> Header:
    """A Header from a decoded header map.

    :raises CodecError: not a map, or fields of the wrong types.
    """
    if type(value) is not dict:
        raise CodecError(f"msgpack: header must be a map, got {type(value).__name__}")
    service_method = value.get("ServiceMethod", "")
    seq = value.get("Seq", 0)
    error = value.get("Error", "")
    if type(service_method) is not str or type(error) is not str:
        raise CodecError("msgpack: header ServiceMethod and Error must be strings")
    if type(seq) is not int or not 0 <= seq <= _MAX_SEQ:
        raise CodecError(f"msgpack: header Seq must be a uint64, got {seq!r}")
    if len(value) > 3:
        return Header(service_method, seq, error, *extension_fields(value, "msgpack"))
    return new_header((service_method, seq, error, 0, None))


def decode_header_bytes(data: bytes) -> Header:
    """The Header in one complete msgpack header (for framed mode).

    :raises CodecError: it is not a valid header.
    """
    return header_of(decode_value(data)[0])


def decode_body_bytes(data: bytes) -> tuple[Any, int]:
    """One complete msgpack body -> (plain value, budget left for its
    conversion), for framed mode.

    :raises CodecError: malformed, or over its memory budget.
    """
    return decode_value(data)


@implementer(IMessageDecoder)
class MsgpackDecoder:
    """Splits a msgpack stream into objects; decodes headers and bodies."""

    decodes_whole_messages = True
    """:meth:`decode_header` and :meth:`decode_body` take one complete
    message's bytes (framed mode hands them over without the stream)."""

    def __init__(self, max_message_size: int) -> None:
        self._max = max_message_size
        # Finds where each object ends (skip: nothing is built); lengths over
        # the limit are refused as soon as they are announced.
        self._skipper = msgpack.Unpacker(
            max_buffer_size=0,
            max_str_len=max_message_size,
            max_bin_len=max_message_size,
            max_array_len=max_message_size,
            max_map_len=max_message_size,
            max_ext_len=max_message_size,
        )
        self._buf = bytearray()
        self._pos = 0  # first byte not yet returned
        self._left = 0
        # The method whose common header came last, and that header's bytes
        # up to its Seq (see header_in).
        self._method = ""
        self._prefix = _NOTHING_KEPT

    def feed(self, data: bytes) -> None:
        self._buf += data
        self._skipper.feed(data)

    def next_message(self) -> bytes | None:
        buf = self._buf
        start = self._pos
        if start == len(buf):
            return None
        try:
            self._skipper.skip()
        except msgpack.OutOfData:
            if len(buf) - start > self._max:
                raise MessageTooLarge(len(buf) - start, self._max) from None
            return None
        except ValueError as error:  # a length over the limit, a bad byte, too deep
            raise ProtocolError(f"msgpack: {error}") from None
        end = start + self._skipper.tell() - self._consumed
        self._consumed = self._skipper.tell()
        if end - start > self._max:
            raise MessageTooLarge(end - start, self._max)
        message = bytes(buf[start:end])
        if end >= _COMPACT_AT or end == len(buf):
            del buf[:end]
            end = 0
        self._pos = end
        return message

    _consumed = 0  # stream offset (the skipper's tell) of self._pos

    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def header_in(self, data: bytes | bytearray, start: int, end: int) -> Header | None:
        """The header in ``data[start:end]`` if it is the common header of
        the method whose header came last -- exactly the bytes
        :func:`common_prefix` makes for it, a Seq (an unsigned integer), an
        empty Error -- else ``None``: :meth:`decode_header` decides, with
        its errors.  For framed mode (the header read in place) and
        :meth:`decode_header`.

        It exists because it runs for every message: two byte comparisons
        and the Seq, instead of a dict built to read three fields from.
        Those bytes decode to this value and no other (tests pin it to the
        general path); it reads nothing outside the region, never raises.
        """
        prefix = self._prefix
        at = start + len(prefix)
        width = end - len(_NO_ERROR) - at  # the Seq's bytes
        if width <= 0 or not data.startswith(prefix, start):
            return None
        # The Seq and the last 7 bytes, read to the region's end exactly.
        if width == 1:
            seq, tail = _FIXINT_END(data, at)
            if seq > 0x7F or tail != _NO_ERROR:  # a positive fixint, then "Error": ""
                return None
        elif width < 10 and (uint := _UINT_ENDS[width]) is not None:
            mark, seq, tail = uint(data, at)
            if mark != _UINT_MARKS[width] or tail != _NO_ERROR:
                return None
        else:
            return None
        return new_header((self._method, seq, "", 0, None))

    decode_whole = staticmethod(decode_value)
    """One complete body's bytes -> (its value, its budget left), as
    :meth:`decode_body` then :meth:`budget_left` give them (for framed mode:
    one call)."""

    def decode_header(self, message: object) -> Header:
        data: bytes = message  # type: ignore[assignment]
        header = self.header_in(data, 0, len(data))
        if header is None:
            header = header_of(decode_value(data)[0])
            if header[2] == "" and not header[3] and header[4] is None:
                # The next header of this method is read by header_in.
                self._method = header[0]
                self._prefix = common_prefix(header[0])
        return header

    def decode_body(self, message: object) -> Any:
        value, self._left = decode_value(message)  # type: ignore[arg-type]
        return value

    def budget_left(self) -> int:
        """What the conversion of the body last decoded may take of its budget."""
        return self._left


@implementer(IMessageEncoder)
class MsgpackEncoder:
    """Encodes header + body as two msgpack objects."""

    def __init__(self) -> None:
        self._pack: Callable[[Any], bytes] = msgpack.Packer(
            default=_to_plain, use_bin_type=True, autoreset=True
        ).pack
        # The common header's bytes up to its Seq, for the method last
        # written with one (see encode_header).
        self._method: str | None = None
        self._prefix = b""

    def encode_header(self, header: Header) -> bytes:
        """The header alone (for framed mode).

        The common header (no Error, budget or metadata) of the method last
        written is its bytes up to the Seq, kept, then the Seq and the empty
        Error: it runs for every message, and saves a dict and its packing.
        The bytes are the general path's (they are its pieces, packed by the
        same packer); anything the packer refuses goes the general way, for
        its error.
        """
        if self._method == header[0] and header[2] == "" and not header[3] and not header[4]:
            try:
                return self._prefix + self._pack(header[1]) + _NO_ERROR
            except (TypeError, ValueError, OverflowError):
                pass  # the general path raises its error
        return self._encode_header(header)

    def _encode_header(self, header: Header) -> bytes:
        fields: dict[str, Any] = {
            "ServiceMethod": header[0],
            "Seq": header[1],
            "Error": header[2],
        }
        if header[3]:
            fields[BUDGET_FIELD] = header[3]
        if header[4]:
            fields[META_FIELD] = header[4]
        try:
            data = self._pack(fields)
        except (TypeError, ValueError, OverflowError) as error:
            raise CodecError(f"msgpack: {error}") from None
        if len(fields) == 3 and header[2] == "" and type(header[0]) is str:
            self._method = header[0]
            self._prefix = common_prefix(header[0])
        return data

    def encode_body(self, body: Any, body_type: Any = None) -> bytes:
        """The body alone (for framed mode); ``body_type`` is not needed."""
        if body is None or isinstance(body, EmptyStruct):
            body = {}
        try:
            return self._pack(body)
        except (TypeError, ValueError, OverflowError, RecursionError) as error:
            raise CodecError(f"msgpack: cannot encode {type(body).__name__}: {error}") from None

    def encode(self, header: Header, body: Any, body_type: Any = None) -> bytes:
        return self.encode_header(header) + self.encode_body(body, body_type)

    def encode_parts(self, header: Header, body: Any, body_type: Any = None) -> tuple[bytes, bytes]:
        """The header and the body apart (for framed mode).

        The common header (as in :meth:`encode_header`) and a body that is
        not empty are packed here, without the two calls: this runs for
        every frame.  Anything the packer refuses goes the general way, for
        its error.
        """
        if (
            self._method == header[0]
            and header[2] == ""
            and not header[3]
            and not header[4]
            and body is not None
            and not isinstance(body, EmptyStruct)
        ):
            pack = self._pack
            try:
                return self._prefix + pack(header[1]) + _NO_ERROR, pack(body)
            except (TypeError, ValueError, OverflowError, RecursionError):
                pass  # the general path raises its error
        return self.encode_header(header), self.encode_body(body, body_type)

    def withdraw(self, data: bytes) -> bytes:
        return b""  # msgpack messages carry no stream state


@implementer(ICodec)
class MsgpackCodec:
    """``application/msgpack``: one msgpack object per header and per body."""

    name = MSGPACK

    def new_decoder(self, max_message_size: int) -> MsgpackDecoder:
        return MsgpackDecoder(max_message_size)

    def new_encoder(self) -> MsgpackEncoder:
        return MsgpackEncoder()


__all__ = [
    "MSGPACK",
    "MsgpackCodec",
    "MsgpackDecoder",
    "MsgpackEncoder",
    "decode_body_bytes",
    "decode_header_bytes",
]
