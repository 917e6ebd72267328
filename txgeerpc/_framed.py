"""
Framed mode (docs/protocol.md 13.11): the seed's fixed 10-byte prefix in front
of every message, negotiated between txgeerpc peers only.

Sans-IO.  :class:`FrameParser` cuts a stream into frames and checks each
prefix's lengths before it buffers a byte of the message; :class:`FramedDecoder`
and :class:`FramedEncoder` put frames behind the ordinary codec interfaces
(:class:`~txgeerpc.interfaces.IMessageDecoder`,
:class:`~txgeerpc.interfaces.IMessageEncoder`), so the protocols swap them in
for the plain ones once both sides agreed.  Compression is per message body,
and decompression is bounded by the maximum message size.

Prefix (big-endian)::

    byte 1     codec id        (CODEC_IDS)
    byte 2     compression id  (COMPRESSION_IDS)
    bytes 3-6  header length   (unsigned)
    bytes 7-10 body length     (unsigned)

then the header (never compressed), then the body.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from zope.interface import implementer

from ._budget import memory_budget
from ._jsonvalue import JSONError, loads_within, scan_once
from ._wire import GOB, JSON, Header
from .errors import BodyTooLarge, CodecError, MessageTooLarge, ProtocolError
from .interfaces import ICodec, IMessageDecoder, IMessageEncoder

PREFIX = struct.Struct(">BBII")
PREFIX_SIZE = PREFIX.size  # 10

MSGPACK = "application/msgpack"
PROTOBUF = "application/protobuf"

CODEC_IDS: dict[int, str] = {1: GOB, 2: JSON, 3: MSGPACK, 4: PROTOBUF}
"""Codec id (prefix byte 1) -> codec name, looked up in the codec registry."""
CODEC_NUMBERS = {name: number for number, name in CODEC_IDS.items()}

NONE, GZIP, ZSTD, LZ4 = 0, 1, 2, 3
COMPRESSION_IDS: dict[int, str] = {NONE: "none", GZIP: "gzip", ZSTD: "zstd", LZ4: "lz4"}
"""Compression id (prefix byte 2) -> name.  ``gzip`` is zlib's deflate stream
(RFC 1950), ``zstd`` a Zstandard frame, ``lz4`` an LZ4 frame."""
COMPRESSION_NUMBERS = {name: number for number, name in COMPRESSION_IDS.items()}

DEFAULT_COMPRESS_THRESHOLD = 1024
"""Bodies shorter than this many bytes are sent uncompressed."""

FRAMED_OPTION_KEY = "TxgeerpcFramed"
"""The Option key by which a client asks for framed mode (with ``"Txgeerpc":1``)."""
FRAMED = "_txgeerpc.Framed"
"""The ServiceMethod of the client's switch message (Seq 0, plain): every
byte after it is framed."""
META_FRAMED = "txgeerpc-framed"
"""Hello metadata: ``"1"`` when the server will switch to framed mode."""
META_COMPRESSION = "txgeerpc-compression"
"""Hello metadata: the compressions the server accepts (names, comma
separated); the switch message's: the one the client asks replies in."""

_WHITESPACE = b" \t\r\n"


class Unavailable(CodecError):
    """A compression whose package is not installed."""


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - an extra
        raise Unavailable(
            "zstd needs the zstandard package: pip install txgeerpc[compress]"
        ) from None
    return zstandard


def _lz4() -> Any:
    try:
        import lz4.frame  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - an extra
        raise Unavailable("lz4 needs the lz4 package: pip install txgeerpc[compress]") from None
    return lz4.frame


def available_compressions() -> tuple[str, ...]:
    """The compressions this process can use (gzip always; zstd and lz4 when
    their packages are installed), the default a server accepts."""
    names = ["gzip"]
    for name, load in (("zstd", _zstd), ("lz4", _lz4)):
        try:
            load()
        except Unavailable:  # pragma: no cover - an extra
            continue
        names.append(name)
    return tuple(names)


def check_compressions(names: Iterable[str]) -> tuple[str, ...]:
    """Validate a list of compression names (``none`` alone: accept none).

    :raises ValueError: an unknown name, or one whose package is missing.
    """
    chosen: list[str] = []
    for name in names:
        name = name.strip().lower()
        if not name or name == "none":
            continue
        if name not in COMPRESSION_NUMBERS:
            known = ", ".join(n for n in COMPRESSION_IDS.values() if n != "none")
            raise ValueError(f"unknown compression {name!r} (known: {known}, none)")
        if name == "zstd":
            _zstd()
        elif name == "lz4":
            _lz4()
        if name not in chosen:
            chosen.append(name)
    return tuple(chosen)


def compress(compression: int, data: bytes) -> bytes:
    """``data`` compressed with ``compression`` (an id)."""
    if compression == GZIP:
        return zlib.compress(data, 6)
    if compression == ZSTD:
        return bytes(_zstd().ZstdCompressor(level=3).compress(data))
    if compression == LZ4:
        return bytes(_lz4().compress(data, store_size=False))
    return data


_STEP = 1 << 16


class InflatedTooLarge(BodyTooLarge):
    """A compressed body that inflates past the maximum message size: refused
    at the limit + 1 byte, never inflated further."""

    def __init__(self, limit: int) -> None:
        CodecError.__init__(
            self,
            f"body inflates past the maximum message size of {limit} bytes "
            f"(refused at byte {limit + 1})",
        )
        self.size = limit + 1
        self.limit = limit


def decompress(compression: int, data: bytes, limit: int) -> bytes:
    """Inflate ``data``, producing at most ``limit`` bytes: decompression is
    incremental with a maximum output of ``limit + 1``, so memory stays under
    the limit (plus the input) however far the body would inflate.

    :raises InflatedTooLarge: the body inflates to more than ``limit`` bytes.
    :raises CodecError: the body is not valid for its compression, or the
        compression is unknown.
    """
    # Pieces of at most _STEP bytes into one buffer: a decompressor asked for
    # limit + 1 bytes at once may hold them twice (blocks, then their join).
    out = bytearray()
    try:
        if compression == GZIP:
            inflater = zlib.decompressobj()
            pending = data
            while True:
                out += inflater.decompress(pending, min(_STEP, limit + 1 - len(out)))
                if len(out) > limit:
                    raise InflatedTooLarge(limit)
                pending = inflater.unconsumed_tail
                if inflater.eof:
                    break
                if not pending:
                    out += inflater.flush(limit + 1 - len(out))
                    if len(out) > limit:
                        raise InflatedTooLarge(limit)
                    if not inflater.eof:
                        raise CodecError("gzip: truncated body")
                    break
            return bytes(out)
        if compression == ZSTD:
            reader = _zstd().ZstdDecompressor().stream_reader(data, read_across_frames=True)
            while True:
                piece = reader.read(min(_STEP, limit + 1 - len(out)))
                if not piece:
                    return bytes(out)
                out += piece
                if len(out) > limit:
                    raise InflatedTooLarge(limit)
        if compression == LZ4:
            inflater = _lz4().LZ4FrameDecompressor()
            pending = data
            while True:
                out += inflater.decompress(pending, max_length=min(_STEP, limit + 1 - len(out)))
                pending = b""
                if len(out) > limit:
                    raise InflatedTooLarge(limit)
                if inflater.eof:
                    return bytes(out)
                if inflater.needs_input:
                    raise CodecError("lz4: truncated body")
    except CodecError:
        raise
    except Exception as error:  # zlib.error, ZstdError, lz4's RuntimeError...
        raise CodecError(f"{COMPRESSION_IDS[compression]}: {error}") from None
    raise CodecError(f"unknown compression id {compression}")


class Frame:
    """One framed message: ids, the header's bytes and the body's bytes
    (``None`` when the body is over the limit and is being skipped, its size
    in ``body_size``)."""

    __slots__ = ("body", "body_size", "codec", "compression", "header")

    def __init__(
        self, codec: int, compression: int, header: bytes, body: bytes | None, body_size: int
    ) -> None:
        self.codec = codec
        self.compression = compression
        self.header = header
        self.body = body
        self.body_size = body_size

    def __repr__(self) -> str:
        return (
            f"Frame(codec={self.codec}, compression={self.compression}, "
            f"header={self.header!r}, body={self.body!r}, body_size={self.body_size})"
        )


def encode_frame(codec: int, compression: int, header: bytes, body: bytes) -> bytes:
    """The bytes of one frame."""
    return PREFIX.pack(codec, compression, len(header), len(body)) + header + body


class FrameParser:
    """Sans-IO: feed bytes, get complete frames.

    Both lengths are checked on the prefix, before a byte of the message is
    buffered: a header over ``max_message_size`` cannot be answered (its Seq
    is in it) and raises :class:`~txgeerpc.errors.MessageTooLarge`; a body
    over it is skipped as it arrives, never buffered, and its frame comes out
    at once with ``body=None`` so its call can be answered.

    :param max_message_size: the largest header or body accepted, in bytes.
    :param after_plain: the stream switched from the plain stream, whose last
        JSON document's newline may lead: whitespace before the first prefix
        is skipped (no codec id is a whitespace byte).
    """

    def __init__(self, max_message_size: int, after_plain: bool = False) -> None:
        self._limit = max_message_size
        # What was fed and not yet parsed: the bytes fed as they are while
        # they are whole frames (no copy), a bytearray once a frame spans feeds.
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._skip = 0  # body bytes still to throw away
        self._leading = after_plain

    def buffered(self) -> int:
        """Bytes fed and not yet taken as frames (skipped bytes are not held)."""
        return len(self._buf) - self._pos

    def skipping(self) -> int:
        """Bytes of an oversized body still to be thrown away."""
        return self._skip

    def feed(self, data: bytes) -> list[Frame]:
        """Parse more of the stream.

        :returns: the frames completed by ``data`` (the rest is kept).
        :raises ProtocolError: an unknown codec id.
        :raises MessageTooLarge: a header over the limit.
        """
        self.add(data)
        frames = []
        while (frame := self.next_frame()) is not None:
            frames.append(Frame(*frame))
        return frames

    def add(self, data: bytes) -> None:
        """Take more of the stream; :meth:`next_frame` parses it."""
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return
            data = data[self._skip :]
            self._skip = 0
        if self._leading:
            stripped = data.lstrip(_WHITESPACE)
            if not stripped:
                return
            data = stripped
            self._leading = False
        buf = self._buf
        if self._pos == len(buf):
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
        elif type(buf) is bytes:
            self._buf = bytearray(memoryview(buf)[self._pos :])
            self._buf += data
            self._pos = 0
        else:
            buf += data

    def next_frame(self) -> tuple[int, int, bytes, bytes | None, int] | None:
        """The next complete frame as ``(codec id, compression id, header,
        body or None when skipped, body size)``, or ``None`` until more
        bytes are added.  A body over the limit is dropped as it arrives.

        :raises ProtocolError: an unknown codec id.
        :raises MessageTooLarge: a header over the limit.
        """
        buf = self._buf
        pos = self._pos
        end = len(buf)
        if end - pos < PREFIX_SIZE:
            return None
        codec, compression, header_size, body_size = PREFIX.unpack_from(buf, pos)
        if codec not in CODEC_IDS:
            raise ProtocolError(f"framed: unknown codec id {codec}")
        limit = self._limit
        if header_size > limit:
            raise MessageTooLarge(header_size, limit)
        start = pos + PREFIX_SIZE
        header_end = start + header_size
        if body_size > limit:
            if header_end > end:
                return None
            header = bytes(buf[start:header_end])
            available = end - header_end
            if available >= body_size:
                self._advance(header_end + body_size)
            else:
                self._skip = body_size - available
                self._advance(end)
            return codec, compression, header, None, body_size
        body_end = header_end + body_size
        if body_end > end:
            return None
        frame = (
            codec,
            compression,
            bytes(buf[start:header_end]),
            bytes(buf[header_end:body_end]),
            body_size,
        )
        self._advance(body_end)
        return frame

    def _advance(self, pos: int) -> None:
        buf = self._buf
        if pos == len(buf):
            self._buf = b""
            pos = 0
        elif type(buf) is bytearray and pos > 65536 and pos > (len(buf) >> 1):
            del buf[:pos]
            pos = 0
        self._pos = pos


# -- codecs in frames ---------------------------------------------------------


def _gob_split(data: bytes) -> int:
    """Where the header ends in a gob encoder's output: after the first value
    message (type definitions, negative ids, may precede it)."""
    from .gob import read_int, read_uint

    pos = 0
    while pos < len(data):
        length, start = read_uint(data, pos)
        type_id, _ = read_int(data, start)
        pos = start + length
        if type_id >= 0:
            return pos
    raise CodecError("gob: no header in the encoded message")


def _json_split(data: bytes) -> tuple[bytes, bytes]:
    # The header is one compact object ending "}\n"; strings in it escape "\n".
    end = data.index(b"}\n") + 1
    return data[:end], data[end + 1 : -1]


class _Refused:
    """The body of a frame that cannot be decoded (too large, bad compression):
    decoding it raises the error, failing its call only."""

    __slots__ = ("error",)

    def __init__(self, error: CodecError) -> None:
        self.error = error


_JSON, _WHOLE, _STREAM = 0, 1, 2
"""How a codec's messages are decoded in frames: JSON (bytes, parsed within
their budget here), whole (the decoder's ``decode_header`` / ``decode_body``
take one complete message's bytes: msgpack, protobuf), or a stream (gob: its
type definitions span messages, so each direction keeps one decoder, fed the
header then the body of each frame)."""


class _Side:
    """One codec's state in one direction of a framed connection (gob keeps
    type definitions per stream, as in the plain stream)."""

    __slots__ = ("codec", "decoder", "encoder", "kind", "parts", "split")

    def __init__(self, codec: ICodec, max_message_size: int) -> None:
        self.codec = codec
        self.decoder: Any = codec.new_decoder(max_message_size)
        if codec.name == JSON:
            self.kind = _JSON
        elif getattr(self.decoder, "decodes_whole_messages", False):
            self.kind = _WHOLE
        else:
            self.kind = _STREAM
        self.encoder: Any = None
        self.parts: Any = None
        split: Callable[[bytes], int] | None = None
        if codec.name == GOB:
            split = _gob_split
        self.split = split

    def new_encoder(self) -> None:
        encoder = self.encoder = self.codec.new_encoder()
        self.parts = getattr(encoder, "encode_parts", None)


@implementer(IMessageDecoder)
class FramedDecoder:
    """Frames -> headers and bodies, each frame decoded with the codec its
    id names (looked up by name in ``lookup``: the codec registry).

    :meth:`next_message` returns each frame's header already decoded (a
    :class:`~txgeerpc._wire.Header`; :meth:`decode_header` hands it back),
    then its body, raw until :meth:`decode_body`.

    :param lookup: codec name -> codec (raises
        :class:`~txgeerpc.errors.UnsupportedCodec` for unknown names).
    :param max_message_size: the largest header or (inflated) body.
    :param compressions: compression ids accepted; others fail their call.
    :param after_plain: see :class:`FrameParser`.
    """

    def __init__(
        self,
        lookup: Callable[[str], ICodec],
        max_message_size: int,
        compressions: Iterable[int] = (GZIP, ZSTD, LZ4),
        after_plain: bool = False,
    ) -> None:
        self._lookup = lookup
        self._limit = max_message_size
        self._parser = FrameParser(max_message_size, after_plain)
        self._next_frame = self._parser.next_frame
        self._sides: dict[int, _Side] = {}
        self._accepted = frozenset(compressions) | {NONE}
        self._body: Any = None  # the body of the frame whose header was returned
        self._has_body = False
        self._left = 0
        self._side: _Side | None = None
        self.codec_of_seq: dict[int, int] = {}
        """Seq -> codec id of requests in another codec than ``default``
        (their replies go out in it); filled when ``default`` is set."""
        self.default: int | None = None
        self.feed = self._parser.add
        self.buffered = self._parser.buffered

    def _side_for(self, codec_id: int) -> _Side:
        side = self._sides.get(codec_id)
        if side is None:
            try:
                codec = self._lookup(CODEC_IDS[codec_id])
            except CodecError as error:
                raise ProtocolError(f"framed: {error}") from None
            side = self._sides[codec_id] = _Side(codec, self._limit)
        return side

    def next_message(self) -> object | None:
        if self._has_body:
            self._has_body = False
            body: object = self._body
            self._body = None
            return body
        next_frame = self._next_frame
        sides = self._sides
        # Frames are parsed here, as they are asked for: a bad prefix fails
        # once the frames before it are taken.
        while (frame := next_frame()) is not None:
            codec, compression, head, body, body_size = frame
            side = sides.get(codec) or self._side_for(codec)
            kind = side.kind
            if kind is _STREAM:
                decoder = side.decoder
                decoder.feed(head)
                message = decoder.next_message()
                if decoder.buffered():
                    raise ProtocolError("framed: the header region holds more than one message")
                if message is None:
                    if body_size == 0:
                        continue  # codec state only (gob type definitions)
                    raise ProtocolError("framed: the header region holds no message")
                header: Header = decoder.decode_header(message)
            elif kind is _JSON:
                header = self._json_header(side, head)
            else:
                header = side.decoder.decode_header(head)
            self._side = side
            if body is None or compression or kind is _STREAM:
                body = self._body_of(codec, compression, body, body_size, side)
            self._body = body
            self._has_body = True
            if codec != self.default and self.default is not None:
                self.codec_of_seq[header[1]] = codec  # a per-call codec
            return header
        return None

    @staticmethod
    def _json_header(side: _Side, head: bytes) -> Header:
        text = ""
        try:
            text = head.decode()
            value, end = scan_once(text, 0)
        except (StopIteration, ValueError, RecursionError):
            end = -1
        if end < 0 or end != len(text):  # not plain valid JSON: the codec's own errors
            return side.decoder.decode_header(head)  # type: ignore[no-any-return]
        return side.decoder.decode_header((value,))  # type: ignore[no-any-return]

    def _body_of(
        self, codec: int, compression: int, body: bytes | None, body_size: int, side: _Side
    ) -> object:
        if body is None:
            return _Refused(BodyTooLarge(body_size, self._limit))
        if compression:
            if compression not in self._accepted:
                name = COMPRESSION_IDS.get(compression, str(compression))
                return _Refused(CodecError(f"framed: compression {name} is not accepted"))
            try:
                body = decompress(compression, body, self._limit)
            except CodecError as error:
                return _Refused(error)
        if side.kind is not _STREAM:
            return body
        decoder = side.decoder
        decoder.feed(body)
        message = decoder.next_message()
        if message is None or decoder.buffered():
            raise ProtocolError("framed: the body region does not hold exactly one message")
        return message

    def decode_header(self, message: object) -> Header:
        """The header :meth:`next_message` returned (decoded there)."""
        return message  # type: ignore[return-value]

    def decode_body(self, message: object) -> Any:
        """The body of the frame whose header came last, decoded by its codec.

        :raises CodecError: it does not decode, or its frame was refused
            (over the limit, an unaccepted or bad compression).
        """
        side = self._side
        assert side is not None
        if isinstance(message, _Refused):
            raise message.error
        if side.kind is _JSON:  # parsed within its memory budget
            try:
                value, self._left = loads_within(message, budget=True)  # type: ignore[arg-type]
            except JSONError as error:
                raise CodecError(f"json: {error}") from None
            return value
        self._left = -1
        return side.decoder.decode_body(message)

    def budget_left(self) -> int:
        """What the conversion of the body last decoded may take of its budget."""
        if self._left >= 0:
            return self._left
        side = self._side
        left = getattr(side.decoder, "budget_left", None) if side is not None else None
        return left() if left is not None else memory_budget(self._limit)


@implementer(IMessageEncoder)
class FramedEncoder:
    """Headers and bodies -> frames.

    :param lookup: codec name -> codec.
    :param default: the connection's codec (the Option's).
    :param compression: the compression id used for bodies of at least
        ``threshold`` bytes (kept only when it makes them smaller).
    :param codec_of_seq: Seq -> codec id of a request in another codec (the
        server's decoder fills it; the reply goes out in that codec).
    """

    def __init__(
        self,
        lookup: Callable[[str], ICodec],
        default: str,
        compression: int = NONE,
        threshold: int = DEFAULT_COMPRESS_THRESHOLD,
        codec_of_seq: dict[int, int] | None = None,
    ) -> None:
        self._lookup = lookup
        self._default = CODEC_NUMBERS[default]
        self._sides: dict[int, _Side] = {}
        self._compression = compression
        self._threshold = threshold
        self._codec_of_seq = codec_of_seq
        self._last: tuple[_Side, bytes, bytes] | None = None
        self.sent_raw = 0
        """Body bytes before compression (for statistics and benchmarks)."""

    def set_compression(self, compression: int) -> None:
        """Compress bodies of at least the threshold with ``compression`` from now on."""
        self._compression = compression

    def _side_for(self, codec_id: int) -> _Side:
        side = self._sides.get(codec_id)
        if side is None:
            side = _Side(self._lookup(CODEC_IDS[codec_id]), 1 << 62)
            side.new_encoder()
            self._sides[codec_id] = side
        return side

    def encode(
        self, header: Header, body: Any, body_type: Any = None, codec: int | None = None
    ) -> bytes:
        """One frame: the header, then the body (compressed when asked and
        worth it), in the connection's codec, or in ``codec`` (an id), or,
        for a reply, in the codec its request came in.

        :raises CodecError: the header or the body cannot be encoded.
        :raises UnsupportedCodec: ``codec`` names a codec this side lacks.
        """
        if codec is None:
            codec = self._default
            mapping = self._codec_of_seq
            if mapping:
                codec = mapping.pop(header[1], codec)
        side = self._sides.get(codec) or self._side_for(codec)
        parts = side.parts
        if parts is not None:
            head, data = parts(header, body, body_type)
            self._last = (side, head, data)
        else:
            whole = side.encoder.encode(header, body, body_type)
            if side.kind is _JSON:
                head, data = _json_split(whole)
            elif side.split is not None:
                cut = side.split(whole)
                head, data = whole[:cut], whole[cut:]
            else:
                head, data = self._mirror_split(side, whole)
            self._last = (side, head, data)
        compression = NONE
        if self._compression and len(data) >= self._threshold:
            packed = compress(self._compression, data)
            if len(packed) < len(data):
                data, compression = packed, self._compression
        return b"".join((PREFIX.pack(codec, compression, len(head), len(data)), head, data))

    @staticmethod
    def _mirror_split(side: _Side, whole: bytes) -> tuple[bytes, bytes]:
        # Any other self-delimiting codec: a decoder of our own stream finds the cut.
        mirror = side.decoder
        mirror.feed(whole)
        if mirror.next_message() is None:
            raise CodecError("framed: the codec's output holds no header")
        cut = len(whole) - mirror.buffered()
        mirror.next_message()
        return whole[:cut], whole[cut:]

    def withdraw(self, data: bytes) -> bytes:
        last = self._last
        if last is None:
            return b""
        side, head, data = last
        state: bytes = side.encoder.withdraw(head + data)
        if not state:
            return b""
        return PREFIX.pack(CODEC_NUMBERS[side.codec.name], NONE, len(state), 0) + state


__all__ = [
    "CODEC_IDS",
    "COMPRESSION_IDS",
    "FRAMED",
    "FRAMED_OPTION_KEY",
    "Frame",
    "FrameParser",
    "FramedDecoder",
    "FramedEncoder",
    "available_compressions",
    "compress",
    "decompress",
    "encode_frame",
]
