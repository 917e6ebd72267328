"""
JSON-RPC 1.0 as Go's ``net/rpc/jsonrpc`` speaks it (docs/protocol.md 14), as
codecs of the engine: each JSON-RPC message is one JSON value that holds both
the header and the body, and the decoders hand it out as the (header, body)
pair every protocol works in.

- request: ``{"method":"Svc.M","params":[ARG],"id":ID}``
- response: ``{"id":ID,"result":REPLY,"error":null}`` or
  ``{"id":ID,"result":null,"error":"text"}``

A client's ``id`` is its ``Seq``.  A server takes any JSON value as an
``id`` (as Go's does): it numbers requests itself and answers each with the
``id`` it came with.  The stream is cut into values by
:class:`~txgeerpc._jsonsplit.JSONValueSplitter`, so limits are checked as
bytes arrive; nothing but the value's own bytes is needed (no newline).
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from .._jsonsplit import JSONValueSplitter
from .._jsonvalue import JSONError, dumps, quote
from .._wire import Header
from ..errors import CodecError
from ..interfaces import ICodec, IMessageDecoder, IMessageEncoder
from ._json import _load

JSONRPC = "jsonrpc"
"""The name of these codecs (never sent: JSON-RPC has no Option)."""

_MAX_SEQ = 2**64 - 1
MISSING_PARAMS = "jsonrpc: request body missing params"
"""Go's text for a request without ``params`` (its ``errMissingParams``)."""


class _Body:
    """The body half of a JSON-RPC message, handed out after its header."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _NoParams:
    """The body of a request that had no ``params`` (or ``null``)."""


_NO_PARAMS = _NoParams()


def _fields(value: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The members of a JSON-RPC object by name; Go's ``encoding/json``
    matches them case-insensitively, the exact spelling first."""
    if type(value) is not dict:
        kind = "null" if value is None else type(value).__name__
        raise CodecError(f"jsonrpc: a message must be an object, got {kind}")
    found = {name: value[name] for name in names if name in value}
    if len(found) < len(names):
        for key, item in value.items():
            folded = key.lower()
            if folded in names and folded not in found:
                found[folded] = item
    return found


class _Decoder:
    """Values out of the stream, each as a header message then a body one."""

    def __init__(self, max_message_size: int) -> None:
        splitter = JSONValueSplitter(max_message_size)
        self._parsed = splitter.next_parsed
        self.feed = splitter.feed
        self.buffered = splitter.buffered_size
        self.budget_left = splitter.budget_left
        self._body: _Body | None = None

    def next_message(self) -> object | None:
        body = self._body
        if body is not None:
            self._body = None
            return body
        return self._parsed()

    def decode_body(self, message: object) -> Any:
        if not isinstance(message, _Body):
            raise CodecError("jsonrpc: a body out of turn")
        return message.value


@implementer(IMessageDecoder)
class JSONRPCServerDecoder(_Decoder):
    """Requests in; ``Seq`` numbers of its own, the ``id`` kept for the
    reply (in the :class:`JSONRPCServerCodec` it shares with its encoder)."""

    def __init__(self, max_message_size: int, ids: dict[int, Any]) -> None:
        super().__init__(max_message_size)
        self._ids = ids
        self._seq = 0

    def decode_header(self, message: object) -> Header:
        fields = _fields(_load(message), ("method", "params", "id"))
        method = fields.get("method")
        if method is None:
            method = ""
        elif type(method) is not str:
            raise CodecError(f"jsonrpc: method must be a string, got {dumps(method)[:80]}")
        self._seq += 1
        seq = self._seq
        self._ids[seq] = fields.get("id")
        params = fields.get("params")
        self._body = _Body(_NO_PARAMS if params is None else params)
        return Header(method, seq, "")

    def decode_body(self, message: object) -> Any:
        params = super().decode_body(message)
        if params is _NO_PARAMS:
            raise CodecError(MISSING_PARAMS)
        if type(params) is not list:
            raise CodecError(f"jsonrpc: params must be an array, got {dumps(params)[:80]}")
        return params[0] if params else None


@implementer(IMessageEncoder)
class JSONRPCServerEncoder:
    """Replies out: the request's ``id`` (``null`` if it had none), and
    ``result`` or ``error``."""

    def __init__(self, ids: dict[int, Any]) -> None:
        self._ids = ids

    def encode(self, header: Header, body: Any, body_type: Any = None) -> bytes:
        request_id = self._ids.pop(header[1], None)
        try:
            id_text = dumps(request_id)
            if header[2]:
                return f'{{"id":{id_text},"result":null,"error":{quote(header[2])}}}\n'.encode()
            return f'{{"id":{id_text},"result":{dumps(body)},"error":null}}\n'.encode()
        except JSONError as error:
            raise CodecError(f"jsonrpc: {error}") from None

    def withdraw(self, data: bytes) -> bytes:
        return b""  # JSON values carry no stream state


@implementer(ICodec)
class JSONRPCServerCodec:
    """The server side of one connection: make one per connection (its
    decoder and encoder share the table of ``id`` values in flight, which
    holds one entry per request being answered)."""

    name = JSONRPC

    def __init__(self) -> None:
        self._ids: dict[int, Any] = {}

    def new_decoder(self, max_message_size: int) -> JSONRPCServerDecoder:
        return JSONRPCServerDecoder(max_message_size, self._ids)

    def new_encoder(self) -> JSONRPCServerEncoder:
        return JSONRPCServerEncoder(self._ids)


@implementer(IMessageDecoder)
class JSONRPCClientDecoder(_Decoder):
    """Responses in, as Go's client reads them: ``id`` is the ``Seq``; an
    ``error`` that is not ``null`` (or a missing ``result``) fails the call
    with its text, which must be a string."""

    def decode_header(self, message: object) -> Header:
        fields = _fields(_load(message), ("id", "result", "error"))
        seq = fields.get("id")
        if type(seq) is not int or not 0 <= seq <= _MAX_SEQ:
            raise CodecError(f"jsonrpc: response id must be a uint64, got {dumps(seq)[:80]}")
        error = fields.get("error")
        result = fields.get("result")
        text = ""
        if error is not None or result is None:
            if type(error) is not str:
                raise CodecError(f"jsonrpc: invalid error {dumps(error)[:80]}")
            text = error or "unspecified error"
        self._body = _Body(result)
        return Header("", seq, text)


@implementer(IMessageEncoder)
class JSONRPCClientEncoder:
    """Requests out: ``{"method":...,"params":[ARG],"id":SEQ}`` and a newline,
    as Go's ``json.Encoder`` writes them."""

    def encode(self, header: Header, body: Any, body_type: Any = None) -> bytes:
        try:
            params = dumps(body)
        except JSONError as error:
            raise CodecError(f"jsonrpc: {error}") from None
        return f'{{"method":{quote(header[0])},"params":[{params}],"id":{header[1]:d}}}\n'.encode()

    def withdraw(self, data: bytes) -> bytes:
        return b""


@implementer(ICodec)
class JSONRPCClientCodec:
    """The client side (stateless: one serves every connection)."""

    name = JSONRPC

    def new_decoder(self, max_message_size: int) -> JSONRPCClientDecoder:
        return JSONRPCClientDecoder(max_message_size)

    def new_encoder(self) -> JSONRPCClientEncoder:
        return JSONRPCClientEncoder()
