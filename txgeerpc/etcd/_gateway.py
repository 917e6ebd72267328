"""
etcd's JSON gateway (``/v3/...``), without I/O: the request bodies, the
answers read back into :mod:`._api` values, and the splitting of a streamed
answer (a watch) into its messages.

The gateway speaks protobuf's JSON mapping: bytes are base64, 64-bit
integers are strings, and fields at their default value (0, false, empty)
are left out.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ..errors import EtcdAnswerTooLarge, EtcdError
from ._api import KeyValue, Range, WatchEvent

UNAVAILABLE = 14
"""gRPC code of a member that cannot serve now (no leader, shutting down):
another member may."""
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
UNAUTHENTICATED = 16
NOT_APPLIED = frozenset({"no leader"})
"""Unavailable answers a member gives before proposing anything: a write
so refused can go to another member."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def number(message: dict[str, Any], name: str) -> int:
    """An integer field (a string for 64-bit ones), 0 when left out.

    :raises EtcdError: it is not an integer.
    """
    value = message.get(name) or 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise EtcdError(f"{name} is not an integer: {value!r:.100}") from None


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix`` (etcd's
    ``range_end`` for a prefix)."""
    if not prefix:
        raise ValueError("an empty prefix is the whole keyspace: not used here")
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"  # every key from prefix on
    return stripped[:-1] + bytes([stripped[-1] + 1])


def key_value(message: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=unb64(message.get("key", "")),
        value=unb64(message.get("value", "")),
        create_revision=number(message, "create_revision"),
        mod_revision=number(message, "mod_revision"),
        version=number(message, "version"),
        lease=number(message, "lease"),
    )


def revision(answer: dict[str, Any]) -> int:
    return number(answer.get("header") or {}, "revision")


def put_request(key: bytes, value: bytes, lease: int) -> dict[str, Any]:
    request: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        request["lease"] = str(lease)
    return request


def range_request(key: bytes, *, prefix: bool = False, count_only: bool = False) -> dict[str, Any]:
    request: dict[str, Any] = {"key": b64(key)}
    if prefix:
        request["range_end"] = b64(prefix_end(key))
    if count_only:
        request["count_only"] = True
    return request


def range_answer(answer: dict[str, Any]) -> Range:
    return Range(tuple(key_value(kv) for kv in answer.get("kvs") or ()), revision(answer))


def create_request(key: bytes, value: bytes, lease: int) -> dict[str, Any]:
    """A transaction: put ``key`` if its create revision is 0 (it does not
    exist), else read it."""
    return {
        "compare": [
            {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
        ],
        "success": [{"request_put": put_request(key, value, lease)}],
        "failure": [{"request_range": range_request(key)}],
    }


def create_answer(answer: dict[str, Any]) -> KeyValue | None:
    if answer.get("succeeded"):
        return None
    for response in answer.get("responses") or ():
        kvs = (response.get("response_range") or {}).get("kvs") or ()
        if kvs:
            return key_value(kvs[0])
    # Deleted between the compare and the read cannot happen in one
    # transaction; an answer without it is not etcd's.
    raise EtcdError("transaction answer without the existing key")


def watch_request(prefix: bytes, start_revision: int) -> dict[str, Any]:
    return {
        "create_request": {
            "key": b64(prefix),
            "range_end": b64(prefix_end(prefix)),
            "start_revision": str(start_revision),
        }
    }


def watch_events(result: dict[str, Any]) -> list[WatchEvent]:
    return [
        WatchEvent(
            "delete" if event.get("type") == "DELETE" else "put",
            key_value(event.get("kv") or {}),
        )
        for event in result.get("events") or ()
    ]


def error_of(answer: Any, endpoint: str) -> EtcdError | None:
    """The error an answer carries, or None.  Unary answers carry
    ``{"error": text, "message": text, "code": n}``; streamed ones
    ``{"error": {"grpc_code": n, "message": text, ...}}``."""
    if not isinstance(answer, dict):
        return EtcdError(f"answer is not a JSON object: {answer!r:.200}", endpoint=endpoint)
    error = answer.get("error")
    if error is None:
        return None
    if isinstance(error, dict):
        message = str(error.get("message") or error)
        code = int(error.get("grpc_code") or error.get("code") or 0)
    else:
        message = str(answer.get("message") or error)
        code = int(answer.get("code") or 0)
    return EtcdError(message.removeprefix("etcdserver: "), code=code, endpoint=endpoint)


def load(body: bytes, endpoint: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as error:
        text = f"answer is not JSON ({error}): {body[:200]!r}"
        raise EtcdError(text, endpoint=endpoint) from None


class MessageStream:
    """Splits a streamed answer into its JSON messages, wherever the
    segments it arrives in are cut.  The gateway ends each message with a
    newline (JSON text never holds a raw one).

    :param limit: bytes one message may take at most.
    """

    def __init__(self, endpoint: str, limit: int) -> None:
        self._endpoint = endpoint
        self._limit = limit
        self._parts: list[bytes] = []  # of the message not complete yet
        self._size = 0

    def feed(self, data: bytes) -> list[Any]:
        """The messages ``data`` completes.

        :raises EtcdAnswerTooLarge: a message is longer than the limit.
        :raises EtcdError: a message is not JSON.
        """
        if b"\n" not in data:
            # A large message in many segments: keep them, join once.
            self._parts.append(data)
            self._size += len(data)
            self._check(self._size)
            return []
        first, *lines = data.split(b"\n")
        rest = lines.pop()
        lines.insert(0, b"".join([*self._parts, first]))
        self._parts = [rest] if rest else []
        self._size = len(rest)
        messages = []
        for line in lines:
            self._check(len(line))
            if line.strip():
                messages.append(load(line, self._endpoint))
        self._check(self._size)
        return messages

    def _check(self, size: int) -> None:
        if size > self._limit:
            raise EtcdAnswerTooLarge(self._limit, endpoint=self._endpoint)

    @property
    def leftover(self) -> bytes:
        """Bytes of a message not complete yet."""
        return b"".join(self._parts)
