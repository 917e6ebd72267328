"""
Wire-level values and constants of the GeeRPC protocol (docs/protocol.md sections 1-4).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import attrs

from ._jsonvalue import go_quote
from .errors import CodecError

MAGIC_NUMBER = 0x3BEF5C
"""The Option's ``MagicNumber`` (3927900)."""

GOB = "application/gob"
JSON = "application/json"

DEFAULT_CONNECT_TIMEOUT_NS = 10_000_000_000
DEFAULT_RPC_PATH = "/_geeprc_"
DEFAULT_DEBUG_PATH = "/debug/geerpc"
DEFAULT_HEALTH_PATH = "/healthz"
DEFAULT_METRICS_PATH = "/metrics"
"""Where ``twistd geerpc`` and ``twistd geerpc-registry`` serve Prometheus metrics."""
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

EXTENSION_OPTION_KEY = "Txgeerpc"
"""The Option key by which a txgeerpc client names the version of the
txgeerpc extension it speaks (docs/protocol.md 13.9); Go servers ignore it."""

EXTENSION_VERSION = 1
"""Version 1: go-away, the hello, call budgets, metadata and remote cancellation."""

HELLO = "_txgeerpc.Hello"
"""The ServiceMethod of the message (Seq 0, before any reply) by which a
txgeerpc server tells a client that named the extension that it speaks it."""

CANCEL = "_txgeerpc.Cancel"
"""The ServiceMethod of a cancel request: its Seq names the call to cancel.
Sent only to servers that sent the hello; never answered."""

BUDGET_FIELD = "TxgeerpcBudget"
"""The Header field carrying a request's budget: Go ``time.Duration``
nanoseconds left when it was sent (negative: already spent)."""

META_FIELD = "TxgeerpcMeta"
"""The Header field carrying a request's metadata or a reply's trailers
(a ``map[string]string``)."""

DEADLINE_EXCEEDED = "rpc server: deadline exceeded"
"""How the error text of a request whose budget ran out starts."""

SHUTTING_DOWN = "rpc server: shutting down"
"""How the error text of a request cut off by the end of the server's
shutdown grace starts."""

UNAUTHENTICATED = "rpc server: unauthenticated"
"""How the text of an ``Unauthenticated`` reply starts (Go clients see it as is)."""

PERMISSION_DENIED = "rpc server: permission denied"
"""How the text of a ``PermissionDenied`` reply starts."""

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
    """The client understands the go-away message (the first txgeerpc
    extension, sent as ``"TxgeerpcGoAway":true`` after the four Go keys;
    servers still honour it, clients now send :attr:`extension`)."""
    extension: int = 0
    """The txgeerpc extension version the client speaks (``"Txgeerpc":1``
    after the four Go keys; 0: none, as from Go)."""

    framed: bool = False
    """The client asks for framed mode (``"TxgeerpcFramed":true`` after
    ``"Txgeerpc"``; docs/protocol.md 13.11)."""

    @property
    def speaks_extension(self) -> bool:
        """Whether the client named a txgeerpc extension version."""
        return self.extension >= EXTENSION_VERSION

    def to_json(self) -> bytes:
        """The exact bytes Go's ``json.Encoder`` writes for this Option, newline
        included (plus the go-away key, when set, which Go servers ignore)."""
        # Field order, spelling and string escaping are Go's.
        extension = f',"{GO_AWAY_OPTION_KEY}":true' if self.go_away else ""
        if self.extension:
            extension += f',"{EXTENSION_OPTION_KEY}":{self.extension:d}'
        if self.framed:
            extension += ',"TxgeerpcFramed":true'
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
    budget: int = 0
    """Nanoseconds of budget (a txgeerpc extension, :data:`BUDGET_FIELD`):
    0 none, negative already spent."""
    meta: dict[str, str] | None = None
    """Metadata or trailers as sent on the wire (:data:`META_FIELD`), or ``None``."""


new_header: Callable[[tuple[str, int, str, int, dict[str, str] | None]], Header] = partial(
    tuple.__new__, Header
)
"""``new_header((service_method, seq, error, budget, meta))``: a :class:`Header`
from all five fields, built in C.  It exists for the per-message path (codecs'
header decoders, the reply and request headers): ``Header(...)`` runs
NamedTuple's ``__new__`` in Python, about three times as long."""


def extension_fields(value: dict[str, Any], codec: str) -> tuple[int, dict[str, str] | None]:
    """The budget and metadata of a decoded header (zero and ``None`` when absent).

    :raises CodecError: they have the wrong types.
    """
    budget = value.get(BUDGET_FIELD, 0)
    meta = value.get(META_FIELD)
    if budget is None:
        budget = 0
    if type(budget) is not int:
        raise CodecError(f"{codec}: header {BUDGET_FIELD} must be an integer")
    if meta is not None:
        if type(meta) is not dict or not all(
            type(key) is str and type(item) is str for key, item in meta.items()
        ):
            raise CodecError(f"{codec}: header {META_FIELD} must map strings to strings")
        if not meta:
            meta = None
    return budget, meta


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
