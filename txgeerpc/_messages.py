"""
Pairs a codec decoder's messages into (header, body), the unit both sides of a
GeeRPC stream work in.  Sans-IO: it only pulls from the decoder it is given.
"""

from __future__ import annotations

from collections.abc import Callable

from ._wire import Header
from .interfaces import IMessageDecoder


class MessagePairs:
    """Pull complete (header, raw body) pairs out of a decoder.

    The header is decoded as soon as it is complete, so a stream whose header
    is garbage fails at once, before its body arrives.

    A decoder with a ``next_pair`` method of its own (framed mode's: a frame
    holds both, so it parses them in one go) is asked directly: :attr:`next_pair`
    is that method, and no header is ever pending here.
    """

    __slots__ = ("_decoder", "_header", "next_pair")

    next_pair: Callable[[], tuple[Header, object] | None]
    """The next (header, raw body), or ``None`` until more bytes are fed.

    :raises txgeerpc.errors.ProtocolError: the stream is corrupt (a bad
        frame, or a header that does not decode).
    """

    def __init__(self, decoder: IMessageDecoder) -> None:
        self._decoder = decoder
        self._header: Header | None = None
        # The decoder's own pairing, when it has one, runs on every message:
        # the protocols call it without this layer in between.
        own = getattr(decoder, "next_pair", None)
        self.next_pair = own if own is not None else self._next_pair

    @property
    def pending_header(self) -> Header | None:
        """The header whose body has not arrived (or did not decode) yet."""
        return self._header

    def _next_pair(self) -> tuple[Header, object] | None:
        header = self._header
        decoder = self._decoder
        if header is None:
            message = decoder.next_message()
            if message is None:
                return None
            header = self._header = decoder.decode_header(message)
        body = decoder.next_message()
        if body is None:
            return None
        self._header = None
        return header, body
