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

from ._budget import EXPANSION, EXPANSION_FLOOR, memory_budget
from ._jsonvalue import UPPER_COST, JSONError, loads_within, scan_once
from ._wire import GOB, JSON, Header
from .errors import BodyTooLarge, CodecError, MessageTooLarge, ProtocolError
from .interfaces import ICodec, IMessageDecoder, IMessageEncoder

PREFIX = struct.Struct(">BBII")
PREFIX_SIZE = PREFIX.size  # 10
_unpack_prefix = PREFIX.unpack_from
_pack_prefix = PREFIX.pack

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
META_CODECS = "txgeerpc-codecs"
"""Hello metadata: the codecs the server decodes in frames (Option names,
comma separated).  A client calls in another codec only if it is listed:
a frame in a codec the server lacks cannot be answered (its header is in
that codec), so the connection would close; the call fails instead."""

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
    """The body of a frame that cannot be decoded (too large, bad compression,
    or its decoding failed): decoding it raises the error, failing its call
    only."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
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

    __slots__ = (
        "budget_left",
        "codec",
        "decode_whole",
        "decoder",
        "encoder",
        "header_in",
        "kind",
        "parts",
        "split",
    )

    def __init__(self, codec: ICodec, max_message_size: int) -> None:
        self.codec = codec
        decoder = self.decoder = codec.new_decoder(max_message_size)
        self.budget_left: Callable[[], int] | None = getattr(decoder, "budget_left", None)
        # A whole-message codec's shortcuts (msgpack's): the common header
        # read in place, or None; a body's (value, budget left) in one call.
        self.header_in: Callable[[bytes | bytearray, int, int], Header | None] | None = getattr(
            decoder, "header_in", None
        )
        self.decode_whole: Callable[[bytes | bytearray], tuple[Any, int]] | None = getattr(
            decoder, "decode_whole", None
        )
        if codec.name == JSON:
            self.kind = _JSON
        elif getattr(decoder, "decodes_whole_messages", False):
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


_MISS = object()


def _stream_header(decoder: Any, data: bytes | bytearray) -> Header | None:
    """The header in a stream codec's header region (``None``: the region
    holds codec state only, gob's type definitions)."""
    decoder.feed(data)
    message = decoder.next_message()
    if decoder.buffered():
        raise ProtocolError("framed: the header region holds more than one message")
    return None if message is None else decoder.decode_header(message)  # type: ignore[no-any-return]


def _stream_body(decoder: Any, data: bytes | bytearray) -> object:
    """The message in a stream codec's body region."""
    decoder.feed(data)
    message = decoder.next_message()
    if message is None or decoder.buffered():
        raise ProtocolError("framed: the body region does not hold exactly one message")
    return message


def _decoded(side: _Side, data: bytes, limit: int) -> tuple[Any, int] | _Refused:
    """A whole-message codec's body decoded as :meth:`FramedDecoder.next_pair`
    takes it: (value, budget left), or what fails its call when asked for."""
    try:
        value = side.decoder.decode_body(data)
    except Exception as error:  # raised again by decode_body, failing its call only
        return _Refused(error)
    left = side.budget_left
    return value, (left() if left is not None else memory_budget(limit))


_JSON_EAGER = 1024
"""JSON bodies up to this many bytes are parsed with their frame: far within
their memory budget (at most UPPER_COST bytes of objects per byte), which is
what is left for their conversion."""


def _json_in(text: str, start: int, end: int) -> Any:
    """The JSON value filling ``text[start:end]`` (latin-1 text of the bytes),
    or ``_MISS`` if there is none, or the bytes are not ASCII (UTF-8 text
    decoded as latin-1 would be wrong): the general path decides then."""
    try:
        if text.isascii():  # (known without a scan: str keeps it)
            value, stop = scan_once(text, start)
            return value if stop == end else _MISS
        text = text[start:end]
        if text.isascii():
            value, stop = scan_once(text, 0)
            return value if stop == end - start else _MISS
    except (StopIteration, ValueError, RecursionError):
        pass
    return _MISS


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
        self.buffered = self._parser.buffered
        # The latin-1 text of the parser's buffer from _text_base on (one
        # character per byte: its offsets are the buffer's), made when a
        # small JSON frame first needs it and dropped when the buffer changes.
        self._text: str | None = None
        self._text_base = 0

    def feed(self, data: bytes) -> None:
        """Take more of the stream (frames are parsed as they are asked for)."""
        self._text = None
        self._parser.add(data)

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
            self._text = None  # the buffer may have been compacted
            codec, compression, head, body, body_size = frame
            side = sides.get(codec) or self._side_for(codec)
            kind = side.kind
            if kind is _STREAM:
                stream_header = _stream_header(side.decoder, head)
                if stream_header is None:
                    if body_size == 0:
                        continue  # codec state only (gob type definitions)
                    raise ProtocolError("framed: the header region holds no message")
                header: Header = stream_header
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

    def next_pair(self) -> tuple[Header, object] | None:
        """The next frame as (header, raw body) -- :meth:`next_message`'s two
        results in one call -- or ``None`` until more bytes are fed.  What
        :class:`~txgeerpc._messages.MessagePairs` hands the protocols.

        :raises ProtocolError: an unknown codec id, a header that does not
            decode.
        :raises MessageTooLarge: a header over the limit.
        """
        parser = self._parser
        buf = parser._buf
        pos = parser._pos
        end = len(buf)
        if end - pos < PREFIX_SIZE:
            return None
        codec, compression, header_size, body_size = _unpack_prefix(buf, pos)
        side = self._sides.get(codec)
        limit = self._limit
        # The common frame (a codec already seen, whole, uncompressed, within
        # the limit, with a body) is taken here: it runs for every message,
        # and saves the general path's frame tuple and its calls per frame;
        # for JSON a slice and a decode per header and per body, for whole
        # messages a call per body.  Everything else goes the general way.
        if side is None or compression or header_size > limit or not 0 < body_size <= limit:
            return self._next_pair()
        start = pos + PREFIX_SIZE
        body_start = start + header_size
        body_end = body_start + body_size
        if body_end > end:
            return None
        kind = side.kind
        body: object
        if kind is _JSON:
            text = self._text
            if text is None:
                text = self._text_from(buf, pos)
            base = self._text_base
            if text.isascii():  # (str knows it without a scan) _json_in, inline
                try:
                    value, stop = scan_once(text, start - base)
                except (StopIteration, ValueError, RecursionError):
                    stop = -1
            else:
                value = _json_in(text, start - base, body_start - base)
                stop = -1 if value is _MISS else body_start - base
            if stop != body_start - base:
                return self._next_pair()  # the codec's own errors
            value = (value,)
            # A small body is parsed now, within its budget whatever it holds
            # (as the plain stream's splitter does); a larger one when asked.
            body = _MISS
            if body_size <= _JSON_EAGER:
                body = _json_in(text, body_start - base, body_end - base)
            if body is not _MISS:
                body = (body, EXPANSION_FLOOR - (UPPER_COST - EXPANSION) * body_size)
            else:
                body = bytes(buf[body_start:body_end])
        else:
            # The common header read in place (before the buffer moves), or
            # None: the codec decodes the region (below, for its errors).
            header_in = side.header_in
            header = None if header_in is None else header_in(buf, start, body_start)
            value = head = buf[start:body_start] if header is None else b""
            raw = buf[body_start:body_end]
        if body_end < end and (body_end <= 65536 or type(buf) is bytes):
            parser._pos = body_end  # what _advance does when it keeps the buffer
        else:
            parser._advance(body_end)
            self._text = None
        decoder = side.decoder
        if kind is _JSON:
            header = decoder.decode_header(value)
        elif kind is _WHOLE:  # the body decoded now: (value, budget left) or its error
            if header is None:
                header = decoder.decode_header(bytes(head))
            decode_whole = side.decode_whole
            if decode_whole is None:
                body = _decoded(side, bytes(raw), limit)
            else:  # _decoded in one call (a bytearray is read as bytes are)
                try:
                    body = decode_whole(raw)
                except Exception as error:  # raised again by decode_body, failing its call only
                    body = _Refused(error)
        else:  # a stream (gob): what next_message does, without its layers
            stream_header = _stream_header(decoder, head)
            if stream_header is None:
                raise ProtocolError("framed: the header region holds no message")
            header = stream_header
            body = _stream_body(decoder, raw)
        self._side = side
        if codec != self.default and self.default is not None:
            self.codec_of_seq[header[1]] = codec  # a per-call codec
        return header, body

    def _next_pair(self) -> tuple[Header, object] | None:
        """:meth:`next_pair` for any frame: through :meth:`next_message`."""
        header = self.next_message()
        if header is None:
            return None
        return header, self.next_message()  # type: ignore[return-value]

    def _text_from(self, buf: bytes | bytearray, pos: int) -> str:
        text = self._text = (buf[pos:] if pos else buf).decode("latin-1")
        self._text_base = pos
        return text

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
        return _stream_body(side.decoder, body)

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
        if type(message) is tuple and side.kind is not _STREAM:  # next_pair decoded it
            value, self._left = message  # (value, budget left)
            return value
        if type(message) is _Refused:
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
        left = side.budget_left if side is not None else None
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
        if parts is None:
            head, data = self._split(side, header, body, body_type)
        else:
            head, data = parts(header, body, body_type)
            # Only a stream's state (gob's types) can be withdrawn: no tuple
            # per reply for the others.
            self._last = (side, head, data) if side.kind is _STREAM else None
        if self._compression and len(data) >= self._threshold:
            return self._compressed(codec, head, data)
        return b"".join((_pack_prefix(codec, NONE, len(head), len(data)), head, data))

    def _compressed(self, codec: int, head: bytes, data: bytes) -> bytes:
        compression = NONE
        packed = compress(self._compression, data)
        if len(packed) < len(data):
            data, compression = packed, self._compression
        return b"".join((_pack_prefix(codec, compression, len(head), len(data)), head, data))

    def _split(self, side: _Side, header: Header, body: Any, body_type: Any) -> tuple[bytes, bytes]:
        """A codec without ``encode_parts``: its output cut in two."""
        whole = side.encoder.encode(header, body, body_type)
        if side.kind is _JSON:
            head, data = _json_split(whole)
        elif side.split is not None:
            cut = side.split(whole)
            head, data = whole[:cut], whole[cut:]
        else:
            head, data = self._mirror_split(side, whole)
        self._last = (side, head, data)
        return head, data

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
