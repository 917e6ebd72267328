"""
Public interfaces: what a codec must provide to plug into txgeerpc, and what
a selector must provide to choose the XClient's servers.

A codec is a factory of per-connection, per-direction state, because gob (the
codec GeeRPC actually speaks) sends each type definition once per connection
and direction; JSON happens to need no such state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zope.interface import Attribute, Interface


class IMessageDecoder(Interface):
    """Sans-IO decoder for one direction of one connection."""

    def feed(data: bytes) -> None:
        """Append bytes received from the peer."""

    def next_message() -> object | None:
        """Return the next complete raw message, or ``None`` when more bytes are
        needed.  Codec-internal messages (e.g. gob type definitions) are
        consumed here and never returned.

        :raises txgeerpc.errors.ProtocolError: the stream is corrupt or a
            message exceeds the size limit; the stream cannot be resynchronised.
        """

    def decode_header(message: object) -> Any:
        """Decode a raw message as a :class:`txgeerpc._wire.Header`.

        :raises txgeerpc.errors.CodecError: it is not a valid header.
        """

    def decode_body(message: object) -> Any:
        """Decode a raw message as a body into plain Python values (structs
        become dicts); conversion to declared types happens later.

        :raises txgeerpc.errors.CodecError: the body is malformed.  The stream
            itself stays usable.
        """


class IMessageEncoder(Interface):
    """Encoder for one direction of one connection."""

    def encode(header: Any, body: Any, body_type: Any = None) -> bytes:
        """Encode one header and its body as the bytes to write.

        ``body_type`` is the body's declared type (a method's return
        annotation, a call's argument type), or ``None`` to go by the value;
        codecs that need no types (JSON) ignore it.

        On failure no state changes, so the next message encodes normally.

        :raises txgeerpc.errors.CodecError: the body cannot be encoded.
        """


class ICodec(Interface):
    """A named codec (``CodecType`` in the Option)."""

    name = Attribute("The codec's Option name, e.g. ``application/json``.")

    def new_decoder(max_message_size: int) -> IMessageDecoder:
        """A fresh decoder for one direction of a new connection."""

    def new_encoder() -> IMessageEncoder:
        """A fresh encoder for one direction of a new connection."""


class ISelector(Interface):
    """Chooses the server for one call of an
    :class:`~txgeerpc.xclient.XClient`.  Like a grpc-go Picker it never
    blocks: it answers from the list it is given and its own state."""

    def select(servers: Sequence[str], key: str | None = None) -> str:
        """One of ``servers``, the list of the moment (it may change between
        calls).

        :param key: the call's ``key``, what hashing selectors hash; others
            ignore it.
        :raises txgeerpc.errors.NoServers: ``servers`` is empty.
        """


class ILoadAwareSelector(ISelector):
    """A selector that weighs the calls running on each server.  An
    :class:`~txgeerpc.xclient.XClient` given one whose ``in_flight`` is
    ``None`` sets it to its own count."""

    in_flight = Attribute(
        "``Callable[[str], int] | None``: the calls running on an address now"
        " (``None`` until supplied)."
    )
