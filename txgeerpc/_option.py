"""
Sans-IO parsing of the Option preamble (docs/protocol.md section 3).

Exactly one JSON object is read from the start of the stream; every byte after
it belongs to the codec, except the single newline (``\\n`` or ``\\r\\n``) that
Go's ``json.Encoder`` writes after the object, even when it arrives in a later
segment.  No other whitespace is skipped: in gob mode 0x09, 0x0a, 0x0d and
0x20 are valid message lengths.
"""

from __future__ import annotations

from typing import Any

from ._jsonsplit import JSONValueSplitter
from ._jsonvalue import JSONError, dumps, loads
from ._wire import EXTENSION_OPTION_KEY, GO_AWAY_OPTION_KEY, MAGIC_NUMBER, Option
from .errors import CodecError, ProtocolError

DEFAULT_MAX_OPTION_SIZE = 16 * 1024

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_PARSING, _AFTER_OBJECT, _AFTER_CR, _DONE = range(4)


class OptionDecoder:
    """Feed bytes, get the :class:`Option` once and the bytes that follow it.

    :param max_size: the largest Option accepted, in bytes.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_OPTION_SIZE) -> None:
        self._splitter = JSONValueSplitter(max_size)
        self._state = _PARSING

    @property
    def settled(self) -> bool:
        """True once nothing more is to be stripped: every later byte can go
        straight to the codec."""
        return self._state == _DONE

    def feed(self, data: bytes) -> tuple[Option | None, bytes]:
        """Parse more of the stream.

        :returns: ``(option, rest)``; ``option`` is the parsed Option on the
            call that completes it and ``None`` otherwise; ``rest`` holds the
            bytes after the Option (and its newline) that this call saw.
        :raises ProtocolError: the preamble is not a valid GeeRPC Option (not
            JSON, not an object, wrong magic number, wrongly typed field, too
            large).
        """
        option = None
        if self._state == _PARSING:
            if data and not self._splitter.buffered() and data.lstrip()[:1] not in (b"", b"{"):
                raise ProtocolError(f"options error: the stream starts with {data[:16]!r}")
            self._splitter.feed(data)
            try:
                raw = self._splitter.next_value()
            except CodecError as error:
                raise ProtocolError(f"options error: {error}") from error
            if raw is None:
                return None, b""
            option = parse_option(raw)
            data = self._splitter.buffered()
            self._state = _AFTER_OBJECT
        if self._state == _AFTER_OBJECT and data:
            if data[:2] == b"\r\n":
                data = data[2:]
            elif data[:1] == b"\n":
                data = data[1:]
            elif data == b"\r":
                self._state = _AFTER_CR
                return option, b""
            self._state = _DONE
        elif self._state == _AFTER_CR and data:
            data = data[1:] if data[:1] == b"\n" else b"\r" + data
            self._state = _DONE
        return option, data


def parse_option(raw: bytes) -> Option:
    """Parse one Option object, accepting what Go's ``encoding/json`` accepts.

    Keys match case-insensitively, unknown keys are ignored, missing durations
    are zero; the magic number and durations must be JSON integers.

    :raises ProtocolError: invalid JSON, wrong types, or a wrong magic number.
    """
    try:
        value = loads(raw)
    except JSONError as error:
        raise ProtocolError(f"options error: {error}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"options error: expected a JSON object, got {type(value).__name__}")
    fields = _fold_keys(value)
    magic = _integer(fields, "magicnumber", "MagicNumber")
    if magic != MAGIC_NUMBER:
        raise ProtocolError(f"invalid magic number {magic:x}")
    codec = fields.get("codectype", "")
    if codec is None:
        codec = ""
    if not isinstance(codec, str):
        raise ProtocolError(f"options error: CodecType must be a string, got {codec!r}")
    return Option(
        codec_type=codec,
        connect_timeout_ns=_integer(fields, "connecttimeout", "ConnectTimeout"),
        handle_timeout_ns=_integer(fields, "handletimeout", "HandleTimeout"),
        magic_number=magic,
        # Only ``true`` counts; Go ignores the key whatever its value.
        go_away=fields.get(GO_AWAY_OPTION_KEY.lower()) is True,
        extension=_extension(fields.get(EXTENSION_OPTION_KEY.lower())),
        framed=fields.get("txgeerpcframed") is True,
    )


def _extension(value: Any) -> int:
    # Only a JSON integer names a version; anything else counts as none (Go
    # ignores the key whatever its value, and so do we).
    return value if type(value) is int and 0 <= value <= 1_000_000 else 0


def _fold_keys(value: dict[str, Any]) -> dict[str, Any]:
    # Go prefers an exact match, then any case-insensitive one.
    folded: dict[str, Any] = {}
    for key, item in value.items():
        folded.setdefault(key.lower(), item)
    for key in ("MagicNumber", "CodecType", "ConnectTimeout", "HandleTimeout"):
        if key in value:
            folded[key.lower()] = value[key]
    return folded


def _integer(fields: dict[str, Any], key: str, go_name: str) -> int:
    item = fields.get(key, 0)
    if item is None:
        return 0
    if type(item) is not int or not _INT64_MIN <= item <= _INT64_MAX:
        raise ProtocolError(
            f"options error: json: cannot unmarshal {dumps(item)} into {go_name} (an int64)"
        )
    return item
