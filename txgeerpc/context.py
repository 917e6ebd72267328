"""
The call context (a txgeerpc extension, docs/protocol.md 13.9): what a call
carries besides its argument — a budget, metadata, trailers — and the
interceptors that see every call.

A handler gets the :class:`CallContext` of its call by declaring a
keyword-only parameter annotated with it::

    class Inventory:
        def Count(self, item: str, *, context: CallContext) -> int:
            tenant = context.metadata.get("tenant", "")
            left = context.remaining()          # seconds, or None
            context.trailers["served-by"] = "b"
            ...

and passes it on to the calls it makes (``client.call(..., context=context)``)
so that they carry what is left of its budget.

An interceptor is a callable ``(context, argument, proceed)``; ``proceed(argument)``
runs the rest of the chain (and finally the handler, or the send) and returns
a Deferred of the outcome.  It returns the outcome (a value, a Deferred or a
coroutine), may change ``context.metadata`` first, or raise instead of
calling ``proceed`` (the call then fails with that error)::

    def timed(context, argument, proceed):
        started = reactor.seconds()
        d = proceed(argument)
        def done(outcome):
            log(context.service_method, reactor.seconds() - started)
            return outcome
        return d.addBoth(done)
"""

from __future__ import annotations

import base64
import binascii
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from .errors import MetadataError

__all__ = [
    "BINARY_SUFFIX",
    "MAX_METADATA_COUNT",
    "MAX_METADATA_SIZE",
    "RESERVED_PREFIX",
    "CallContext",
    "Interceptor",
    "Metadata",
    "decode_metadata",
    "encode_metadata",
    "run_interceptors",
]

Metadata = Mapping[str, "str | bytes"]
"""Call metadata: lower-case keys to text, or to bytes under keys ending ``-bin``."""

Interceptor = Callable[["CallContext", Any, Callable[[Any], Any]], Any]
"""``(context, argument, proceed) -> outcome``: see the module's text."""

MAX_METADATA_COUNT = 64
"""Most entries one call's metadata (or one reply's trailers) may have."""

MAX_METADATA_SIZE = 8192
"""Most bytes one call's metadata (or trailers) may take: keys plus values as
sent (``-bin`` values base64-encoded)."""

RESERVED_PREFIX = "txgeerpc-"
"""Keys with this prefix are txgeerpc's own: user metadata may not use them."""

BINARY_SUFFIX = "-bin"
"""Keys ending so carry bytes (base64 on the wire, as in gRPC)."""

_KEY = re.compile(r"[a-z0-9._-]+\Z")


class CallContext:
    """One call's context, on either side.

    :ivar service_method: ``Service.Method``.
    :ivar metadata: the call's metadata (a dict: interceptors may add to it
        before the handler, or the send, sees it).
    :ivar trailers: what the reply carries back (the handler and server
        interceptors set them; on the client, filled from the reply).
    :ivar deadline: when the budget runs out, on :attr:`clock`; ``None``:
        no budget.
    :ivar peer: the other side's address, when known.
    :ivar parent: on the client, the context of the handler making the call
        (its ``context=``), if any; ``None`` on the server.
    :ivar values: what interceptors keep for the call's life, by a key of
        their own (:mod:`txgeerpc.otel` keeps the call's span here, so that a
        handler's downstream calls find it through :attr:`parent`).
    :ivar transport: on the server, the call's connection (its
        ``getPeer()``, and ``getPeerCertificate()`` over TLS), when known.
    :ivar identity: on the server, who the caller proved to be
        (:class:`txgeerpc.auth.Guard` sets it), else ``None``.
    """

    __slots__ = (
        "clock",
        "deadline",
        "identity",
        "metadata",
        "parent",
        "peer",
        "service_method",
        "trailers",
        "transport",
        "values",
    )

    def __init__(
        self,
        service_method: str,
        clock: IReactorTime,
        *,
        metadata: dict[str, str | bytes] | None = None,
        deadline: float | None = None,
        peer: str = "",
        parent: CallContext | None = None,
        transport: Any = None,
    ) -> None:
        self.service_method = service_method
        self.transport = transport
        self.identity: str | None = None
        self.clock = clock
        self.metadata: dict[str, str | bytes] = metadata if metadata is not None else {}
        self.trailers: dict[str, str | bytes] = {}
        self.deadline = deadline
        self.peer = peer
        self.parent = parent
        self.values: dict[str, Any] = {}

    def remaining(self) -> float | None:
        """Seconds of budget left (negative once spent), or ``None`` if the
        call has no budget."""
        if self.deadline is None:
            return None
        return self.deadline - self.clock.seconds()

    def expired(self) -> bool:
        """Whether the call has a budget and it is spent."""
        return self.deadline is not None and self.deadline <= self.clock.seconds()

    def __repr__(self) -> str:
        return (
            f"<CallContext {self.service_method} remaining={self.remaining()!r} "
            f"metadata={sorted(self.metadata)!r}>"
        )


def encode_metadata(metadata: Metadata, *, reserved: bool = False) -> dict[str, str]:
    """Check ``metadata`` and turn it into its wire form (``-bin`` values base64).

    :param reserved: allow keys with :data:`RESERVED_PREFIX` (txgeerpc's own).
    :raises MetadataError: a bad key or value, or over the limits.
    """
    if len(metadata) > MAX_METADATA_COUNT:
        raise MetadataError(
            f"rpc: metadata has {len(metadata)} entries, more than the {MAX_METADATA_COUNT} allowed"
        )
    wire: dict[str, str] = {}
    size = 0
    for key, value in metadata.items():
        if type(key) is not str or not _KEY.match(key):
            raise MetadataError(f"rpc: metadata key {key!r} is not lower-case [a-z0-9._-]")
        if not reserved and key.startswith(RESERVED_PREFIX):
            raise MetadataError(f"rpc: metadata key {key!r} is reserved (prefix {RESERVED_PREFIX})")
        if key.endswith(BINARY_SUFFIX):
            if not isinstance(value, (bytes, bytearray)):
                raise MetadataError(
                    f"rpc: metadata key {key!r} ends in -bin: its value must be bytes"
                )
            text = base64.b64encode(value).decode("ascii")
        elif type(value) is str:
            text = value
        else:
            raise MetadataError(
                f"rpc: metadata value of {key!r} must be str (bytes only under keys ending -bin)"
            )
        size += len(key) + len(text.encode("utf-8", "surrogatepass"))
        wire[key] = text
    if size > MAX_METADATA_SIZE:
        raise MetadataError(
            f"rpc: metadata takes {size} bytes, more than the {MAX_METADATA_SIZE} allowed"
        )
    return wire


def decode_metadata(wire: Mapping[str, str] | None) -> dict[str, str | bytes]:
    """The metadata a peer sent, checked against the same rules (reserved
    keys allowed: txgeerpc peers send them).

    :raises MetadataError: a bad key, a ``-bin`` value that is not base64,
        or over the limits.
    """
    if not wire:
        return {}
    if len(wire) > MAX_METADATA_COUNT:
        raise MetadataError(
            f"rpc: metadata has {len(wire)} entries, more than the {MAX_METADATA_COUNT} allowed"
        )
    metadata: dict[str, str | bytes] = {}
    size = 0
    for key, text in wire.items():
        if not _KEY.match(key):
            raise MetadataError(f"rpc: metadata key {key!r} is not lower-case [a-z0-9._-]")
        size += len(key) + len(text.encode("utf-8", "surrogatepass"))
        if key.endswith(BINARY_SUFFIX):
            try:
                metadata[key] = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise MetadataError(f"rpc: metadata key {key!r}: the value is not base64") from None
        else:
            metadata[key] = text
    if size > MAX_METADATA_SIZE:
        raise MetadataError(
            f"rpc: metadata takes {size} bytes, more than the {MAX_METADATA_SIZE} allowed"
        )
    return metadata


def run_interceptors(
    interceptors: Sequence[Interceptor],
    context: CallContext,
    argument: Any,
    last: Callable[[Any], Any],
) -> Deferred[Any]:
    """Run ``interceptors`` (outermost first) around ``last`` (the handler,
    or the send): each gets a ``proceed`` that runs the rest.

    :returns: a Deferred of the outcome (cancelling it cancels what runs).
    """
    count = len(interceptors)

    def proceed_from(index: int) -> Callable[[Any], Deferred[Any]]:
        def proceed(argument: Any) -> Deferred[Any]:
            if index == count:
                return _as_deferred(last, argument)
            return _as_deferred(interceptors[index], context, argument, proceed_from(index + 1))

        return proceed

    return proceed_from(0)(argument)


def _as_deferred(function: Callable[..., Any], *arguments: Any) -> Deferred[Any]:
    try:
        result = function(*arguments)
    except BaseException:
        return fail(Failure())
    if isinstance(result, Deferred):
        return result
    if inspect.iscoroutine(result):
        return ensureDeferred(result)
    return succeed(result)
