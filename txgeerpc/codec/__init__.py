"""
The codec registry: codecs by their Option name (``CodecType``).

Pass a :class:`CodecRegistry` to servers and clients to control exactly which
codecs they speak; :data:`default_registry` holds the built-in ones.
"""

from __future__ import annotations

from importlib.util import find_spec

from ..errors import UnsupportedCodec
from ..interfaces import ICodec
from ._gob import HEADER as HEADER  # not public API: the Header's gob type (the CLI's probe)
from ._gob import GobCodec
from ._json import JSONCodec

# Not public API: JSON-RPC 1.0 (Go's net/rpc/jsonrpc), never named in an Option.
from ._jsonrpc import JSONRPC as JSONRPC
from ._jsonrpc import JSONRPCClientCodec as JSONRPCClientCodec
from ._jsonrpc import JSONRPCServerCodec as JSONRPCServerCodec
from ._msgpack import MSGPACK, MsgpackCodec
from ._protobuf import PROTOBUF, ProtobufCodec

JSON = "application/json"
GOB = "application/gob"


class CodecRegistry:
    """Codecs by Option name, plus short aliases (``json``) for humans."""

    def __init__(self) -> None:
        self._codecs: dict[str, ICodec] = {}
        self._aliases: dict[str, str] = {}

    def register(self, codec: ICodec, *aliases: str) -> None:
        """Add (or replace) a codec under its ``name`` and any aliases."""
        self._codecs[codec.name] = codec
        for alias in aliases:
            self._aliases[alias] = codec.name

    def get(self, name: str, aliases: bool = True) -> ICodec:
        """The codec called ``name``: its Option name or, unless ``aliases`` is
        false (as for names read off the wire), an alias.

        :raises UnsupportedCodec: no such codec is registered.
        """
        codec = self._codecs.get(self._aliases.get(name, name) if aliases else name)
        if codec is None:
            raise UnsupportedCodec(name)
        return codec

    def names(self) -> list[str]:
        """Option names of every registered codec, sorted."""
        return sorted(self._codecs)

    def aliases(self) -> dict[str, str]:
        """Alias -> Option name."""
        return dict(self._aliases)


default_registry = CodecRegistry()
default_registry.register(GobCodec(), "gob")
default_registry.register(JSONCodec(), "json")
default_registry.register(MsgpackCodec(), "msgpack")


def _has_protobuf() -> bool:
    try:
        return find_spec("google.protobuf") is not None
    except ImportError:  # no google package at all
        return False


if _has_protobuf():  # the protobuf extra: without it, a peer naming it is refused
    default_registry.register(ProtobufCodec(), "protobuf")

__all__ = [
    "GOB",
    "JSON",
    "MSGPACK",
    "PROTOBUF",
    "CodecRegistry",
    "GobCodec",
    "JSONCodec",
    "MsgpackCodec",
    "ProtobufCodec",
    "default_registry",
]
