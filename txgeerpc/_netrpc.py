"""
Go's standard ``net/rpc`` and ``net/rpc/jsonrpc`` (docs/protocol.md 14): their
constants and the sans-IO tests by which the one-port server tells their
clients from a GeeRPC client by the first bytes.

- ``net/rpc`` over TCP sends no Option: its stream starts with gob's
  definition of its ``Request`` struct.  A gob stream starts with a message
  length (an unsigned gob integer), then a *negative* type id (a definition),
  then the ``wireType`` of a struct, whose first bytes are always
  ``03 01 01`` (field 3 ``StructT``, its ``CommonType``, its ``Name``).  No
  text (a JSON Option, an HTTP request line) has those control bytes.
- JSON-RPC sends a JSON object like the GeeRPC Option: the first member's
  name decides (``method``, ``params`` or ``id``, in any case, is JSON-RPC;
  anything else is left to the Option's parser).  The lookahead is bounded by
  :data:`MAX_LOOKAHEAD` bytes.
- ``net/rpc`` over HTTP sends ``CONNECT /_goRPC_`` (:data:`NETRPC_PATH`) and
  wants :data:`NETRPC_CONNECTED` back, then the gob stream.
"""

from __future__ import annotations

import enum

NETRPC_PATH = "/_goRPC_"
"""``rpc.DefaultRPCPath``: where Go's ``DialHTTP`` sends its ``CONNECT``."""

NETRPC_CONNECTED = b"HTTP/1.0 200 Connected to Go RPC\n\n"
"""Go's ``net/rpc`` server's exact answer to that ``CONNECT``."""

NETRPC_CONNECTED_REASON = "Connected to Go RPC"

MAX_LOOKAHEAD = 64
"""Bytes the one-port server looks at, at most, after leading whitespace, to
tell a JSON-RPC request from a GeeRPC Option (the first member's name must
end within them, else it is an Option)."""

_JSONRPC_KEYS = frozenset(("method", "params", "id"))
_WHITESPACE = b" \t\r\n"
_STRUCT_DEFINITION = b"\x03\x01\x01"


class Start(enum.Enum):
    GOB = "gob"
    """A gob stream (Go's ``net/rpc`` client)."""
    JSONRPC = "jsonrpc"
    """A JSON-RPC 1.0 request."""
    OTHER = "other"
    """Neither: what it is, the other tests decide."""


def _gob_uint_end(data: bytes, at: int) -> int | None:
    """Where the unsigned gob integer at ``at`` ends: -1 if ``data`` cannot
    hold one there, ``None`` if more bytes are needed."""
    if at >= len(data):
        return None
    first = data[at]
    if first < 0x80:
        return at + 1
    count = 256 - first  # 0xFF: one byte follows, 0xFE: two...
    if count > 8:
        return -1
    end = at + 1 + count
    return end if end <= len(data) else None


def gob_start(data: bytes) -> bool | None:
    """Whether ``data`` starts like a gob stream (a type definition of a
    struct); ``None`` until enough bytes decide (at most a dozen)."""
    length_end = _gob_uint_end(data, 0)
    if length_end is None or length_end < 0:
        return None if length_end is None else False
    if data[0] == 0:
        return False  # an empty message
    id_end = _gob_uint_end(data, length_end)
    if id_end is None or id_end < 0:
        return None if id_end is None else False
    if not data[id_end - 1] & 1:
        return False  # a value (positive type id), not a definition
    head = data[id_end : id_end + 3]
    if not _STRUCT_DEFINITION.startswith(head):
        return False
    return True if len(head) == 3 else None


def json_start(data: bytes) -> bool | None:
    """Whether ``data`` (a JSON object, after any whitespace) is a JSON-RPC
    request rather than a GeeRPC Option; ``None`` until its first member's
    name is complete (within :data:`MAX_LOOKAHEAD` bytes)."""
    text = data.lstrip(_WHITESPACE)[:MAX_LOOKAHEAD]
    if not text.startswith(b"{"):
        return False
    rest = text[1:].lstrip(_WHITESPACE)
    if not rest:
        return None if len(text) < MAX_LOOKAHEAD else False
    if rest[:1] != b'"':
        return False  # "{}" or garbage: the Option's parser says what is wrong
    end = rest.find(b'"', 1)
    if end < 0:
        return None if len(text) < MAX_LOOKAHEAD else False
    name = rest[1:end]
    if b"\\" in name:
        return False
    return name.lower().decode("latin-1") in _JSONRPC_KEYS


def classify(data: bytes) -> Start | None:
    """What a connection that starts with ``data`` is, among the Go
    ``net/rpc`` clients; ``None`` until more bytes decide."""
    gob = gob_start(data)
    if gob:
        return Start.GOB
    jsonrpc = json_start(data)
    if jsonrpc:
        return Start.JSONRPC
    if gob is None or jsonrpc is None:
        return None
    return Start.OTHER


__all__ = [
    "MAX_LOOKAHEAD",
    "NETRPC_CONNECTED",
    "NETRPC_CONNECTED_REASON",
    "NETRPC_PATH",
    "Start",
    "classify",
    "gob_start",
    "json_start",
]
