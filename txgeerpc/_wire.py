"""
Wire-level values and constants of the GeeRPC protocol (docs/protocol.md sections 1-4).
"""

from __future__ import annotations

from typing import NamedTuple

import attrs

from ._jsonvalue import go_quote

MAGIC_NUMBER = 0x3BEF5C
"""The Option's ``MagicNumber`` (3927900)."""

GOB = "application/gob"
JSON = "application/json"

DEFAULT_CONNECT_TIMEOUT_NS = 10_000_000_000
DEFAULT_RPC_PATH = "/_geeprc_"
DEFAULT_DEBUG_PATH = "/debug/geerpc"
DEFAULT_HEALTH_PATH = "/healthz"
DEFAULT_REGISTRY_PATH = "/_geerpc_/registry"

NANOSECONDS = 1_000_000_000

DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
"""The largest header or body either side accepts by default, in bytes."""

GO_AWAY_OPTION_KEY = "TxgeerpcGoAway"
"""The Option key by which a txgeerpc client says it understands the go-away
message (docs/protocol.md 13.8); Go servers ignore unknown keys."""

GO_AWAY = "_txgeerpc.GoAway"
"""The ServiceMethod of the go-away message, which travels under Seq 0 (no
client call has that Seq) and only to clients that sent the key above."""

SHUTTING_DOWN = "rpc server: shutting down"
"""How the error text of a request cut off by the end of the server's
shutdown grace starts."""

WIDENED_OPTION_SIZE = 512
"""The size a client pads its Option to, so Go servers keep the bytes after it."""


def seconds_to_ns(seconds: float | None) -> int:
    """Seconds (``None`` = no limit) to Go ``time.Duration`` nanoseconds (``0`` = no limit)."""
    if seconds is None:
        return 0
    return round(seconds * NANOSECONDS)


@attrs.frozen
class Option:
    """The JSON preamble a client sends once at the start of a connection.

    Durations are kept as Go sends them: integer nanoseconds, ``0`` meaning
    "no limit".
    """

    codec_type: str = GOB
    connect_timeout_ns: int = DEFAULT_CONNECT_TIMEOUT_NS
    handle_timeout_ns: int = 0
    magic_number: int = MAGIC_NUMBER
    go_away: bool = False
    """The client understands the go-away message (a txgeerpc extension,
    sent as ``"TxgeerpcGoAway":true`` after the four Go keys)."""

    def to_json(self) -> bytes:
        """The exact bytes Go's ``json.Encoder`` writes for this Option, newline
        included (plus the go-away key, when set, which Go servers ignore)."""
        # Field order, spelling and string escaping are Go's.
        extension = f',"{GO_AWAY_OPTION_KEY}":true' if self.go_away else ""
        return (
            f'{{"MagicNumber":{self.magic_number:d},"CodecType":{go_quote(self.codec_type)},'
            f'"ConnectTimeout":{self.connect_timeout_ns:d},'
            f'"HandleTimeout":{self.handle_timeout_ns:d}{extension}}}\n'
        ).encode()

    def to_widened_json(self) -> bytes:
        """The Option as exactly :data:`WIDENED_OPTION_SIZE` bytes: spaces before
        the closing brace and no newline (longer Options are sent as
        :meth:`to_json`).

        A Go GeeRPC server reads the Option with a JSON decoder that reads
        ahead and throws away whatever it read past the Option (docs/protocol.md
        3.3): requests written right behind a plain Option are lost.  Both of
        Go's JSON engines read exactly 512 bytes when the value ends at byte
        512 (classic: one 512-byte read; JSONv2: 64+64+128+256), so nothing
        after it is taken (vectors 17 and 18).
        """
        plain = self.to_json()[:-1]
        if len(plain) > WIDENED_OPTION_SIZE:
            return plain + b"\n"
        return plain[:-1] + b" " * (WIDENED_OPTION_SIZE - len(plain)) + b"}"


class Header(NamedTuple):
    """The header in front of every request and reply body.

    A NamedTuple rather than an attrs class: one is built per message on the
    hot path, and tuple construction is the cheapest immutable value Python has.
    """

    service_method: str
    seq: int
    error: str = ""


@attrs.frozen
class EmptyStruct:
    """Go's ``struct{}{}``: the body of every error reply (JSON ``{}``)."""


EMPTY_STRUCT = EmptyStruct()


def go_duration(ns: int) -> str:
    """Format nanoseconds exactly as Go's ``time.Duration.String`` does.

    ``250_000_000`` -> ``250ms``, ``90 * 10**9`` -> ``1m30s``,
    ``100_000`` -> ``100µs``, ``-1`` -> ``-1ns``, ``0`` -> ``0s``.
    """
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = -ns if ns < 0 else ns
    if u < NANOSECONDS:
        if u < 1_000:
            return f"{sign}{u}ns"
        if u < 1_000_000:
            return f"{sign}{_fraction(u, 3)}µs"
        return f"{sign}{_fraction(u, 6)}ms"
    seconds_text = _fraction(u % (60 * NANOSECONDS), 9)
    minutes = u // (60 * NANOSECONDS)
    if minutes == 0:
        return f"{sign}{seconds_text}s"
    hours, minutes = divmod(minutes, 60)
    hours_text = f"{hours}h" if hours else ""
    return f"{sign}{hours_text}{minutes}m{seconds_text}s"


def _fraction(value: int, precision: int) -> str:
    whole, rest = divmod(value, 10**precision)
    digits = f"{rest:0{precision}d}".rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)
