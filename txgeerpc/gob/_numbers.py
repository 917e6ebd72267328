"""
gob's integer and float encodings (the ``encoding/gob`` package documentation,
"Encoding details"; docs/protocol.md 4.3).

Unsigned: below 128 one byte; otherwise a byte holding the negated count of
the big-endian bytes that follow.  Signed: zig-zag (``2n`` or ``2(-n-1)+1``),
then unsigned.  Floats: the IEEE-754 bits, byte-reversed, as unsigned.
"""

from __future__ import annotations

import struct

from ..errors import CodecError

Buffer = bytes | bytearray
"""What the readers read from: a message, or a value being joined from several."""

_pack_double = struct.Struct("<d").pack
_unpack_double = struct.Struct("<d").unpack


class Truncated(CodecError):
    """The message ended in the middle of a value."""

    def __init__(self) -> None:
        super().__init__("gob: unexpected end of message")


def uint_bytes(value: int) -> bytes:
    """The gob encoding of an unsigned integer (``0 <= value < 2**64``)."""
    if value < 128:
        return SMALL[value]
    body = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes((256 - len(body),)) + body


SMALL = [bytes((n,)) for n in range(128)]
"""The one-byte encodings of 0..127."""


def write_uint(out: bytearray, value: int) -> None:
    if value < 128:
        out.append(value)
    else:
        body = value.to_bytes((value.bit_length() + 7) // 8, "big")
        out.append(256 - len(body))
        out += body


def write_int(out: bytearray, value: int) -> None:
    write_uint(out, value << 1 if value >= 0 else ((-value - 1) << 1) | 1)


def float_bits(value: float) -> int:
    """The unsigned integer a float64 travels as."""
    return int.from_bytes(_pack_double(value), "big")


def write_float(out: bytearray, value: float) -> None:
    write_uint(out, int.from_bytes(_pack_double(value), "big"))


def read_uint(data: Buffer, pos: int) -> tuple[int, int]:
    """(value, next position).

    :raises CodecError: more than 8 bytes announced, or the data ends early.
    """
    try:
        first = data[pos]
    except IndexError:
        raise Truncated() from None
    if first < 128:
        return first, pos + 1
    count = 256 - first
    if count > 8:
        raise CodecError("gob: encoded unsigned integer out of range")
    end = pos + 1 + count
    if end > len(data):
        raise Truncated()
    return int.from_bytes(data[pos + 1 : end], "big"), end


_ONE_BYTE_INTS = tuple(-(n >> 1) - 1 if n & 1 else n >> 1 for n in range(128))
"""The values of the one-byte signed encodings, made once: a one-byte int
decodes to a shared object (Python caches only -5..256), so a value's Python
objects that are not shared all come from at least two bytes of message."""


def read_int(data: Buffer, pos: int) -> tuple[int, int]:
    try:
        first = data[pos]
    except IndexError:
        raise Truncated() from None
    if first < 128:
        return _ONE_BYTE_INTS[first], pos + 1
    count = 256 - first
    if count > 8:
        raise CodecError("gob: encoded unsigned integer out of range")
    end = pos + 1 + count
    if end > len(data):
        raise Truncated()
    value = int.from_bytes(data[pos + 1 : end], "big")
    if value & 1:
        return -(value >> 1) - 1, end
    return value >> 1, end


def read_float(data: Buffer, pos: int) -> tuple[float, int]:
    bits, pos = read_uint(data, pos)
    if bits < 128:
        return _ONE_BYTE_FLOATS[bits], pos
    return _unpack_double(bits.to_bytes(8, "big"))[0], pos


_ONE_BYTE_FLOATS = tuple(_unpack_double(bits.to_bytes(8, "big"))[0] for bits in range(128))
"""The floats of one-byte encodings (0.0 and tiny denormals), shared as
:data:`_ONE_BYTE_INTS` are."""


def frame(payload: bytes | bytearray) -> bytes:
    """A whole message: its byte count, then the payload."""
    return uint_bytes(len(payload)) + payload
