"""
Public interfaces: what a codec must provide to plug into txgeerpc, and what
a selector must provide to choose the XClient's servers.

A codec is a factory of per-connection, per-direction state, because gob (the
codec GeeRPC actually speaks) sends each type definition once per connection
and direction; JSON happens to need no such state.

Also the seams of the registry and etcd packages: :class:`IDiscovery`
(what an XClient needs of a discovery), :class:`IRegistration` (a server
keeping itself registered), :class:`IRegistryStore` (where a registry's
entries live) and :class:`IEtcd` / :class:`IEtcdWatch` (what txgeerpc needs
of etcd).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService
from zope.interface import Attribute, Interface

__all__ = [
    "ICodec",
    "IDiscovery",
    "IEtcd",
    "IEtcdWatch",
    "ILoadAwareSelector",
    "IMessageDecoder",
    "IMessageEncoder",
    "IRegistration",
    "IRegistryStore",
    "ISelector",
]

if TYPE_CHECKING:  # for annotations only; this module imports nothing of txgeerpc
    from twisted.internet.defer import Deferred



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
        :raises txgeerpc.errors.CodecError: a message is not a valid value of
            the codec (the JSON splitter's verdict on a malformed document);
            the stream cannot go on either.
        """

    def buffered() -> int:
        """Bytes fed and not yet returned as (part of) a message: 0 between
        messages, more while one is being received."""

    def decode_header(message: object) -> Any:
        """Decode a raw message as a :class:`txgeerpc._wire.Header`.

        :raises txgeerpc.errors.CodecError: it is not a valid header.
        """

    def decode_body(message: object) -> Any:
        """Decode a raw message as a body into plain Python values (structs
        become dicts); conversion to declared types happens later.

        :raises txgeerpc.errors.CodecError: the body is malformed.  The stream
            itself stays usable.

        A decoder may also offer ``budget_left() -> int``: what the
        conversion of the body last decoded may still take of its memory
        budget (:func:`txgeerpc._budget.memory_budget` of its size, less
        what decoding took).  Both sides then charge conversion against it;
        without it, conversion is not charged.
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

    def withdraw(data: bytes) -> bytes:
        """What must still be written of ``data`` (from :meth:`encode`) when
        the message itself is not sent: state the stream now counts as sent
        (gob's type definitions), or ``b""``."""


class ICodec(Interface):
    """A named codec (``CodecType`` in the Option)."""

    name = Attribute("The codec's Option name, e.g. ``application/json``.")

    def new_decoder(max_message_size: int) -> IMessageDecoder:
        """A fresh decoder for one direction of a new connection."""

    def new_encoder() -> IMessageEncoder:
        """A fresh encoder for one direction of a new connection."""


class IDiscovery(Interface):
    """Where the servers are: what an :class:`~txgeerpc.xclient.XClient`
    needs of a discovery (:class:`~txgeerpc.discovery.StaticDiscovery`,
    :class:`~txgeerpc.registry.RegistryDiscovery`,
    :class:`~txgeerpc.etcd.EtcdDiscovery`)."""

    def servers() -> list[str]:
        """The last known list of ``proto@addr`` (a copy; empty before the
        first); answers at once, never waits for a source."""

    def on_change(listener: Callable[[list[str]], None]) -> Callable[[], None]:
        """Call ``listener(servers)`` after every change, until the returned
        function is called."""

    def ready() -> Deferred[None]:
        """Fires once the first attempt at a list has ended, well or not (at
        once if none is under way or coming)."""


class IRegistration(IService):
    """A server keeping its address registered while it runs (a
    service): a registry heartbeat
    (:class:`~txgeerpc.registry.Heartbeat`) or an etcd lease
    (:class:`~txgeerpc.etcd.EtcdRegistration`).  Stopping it deregisters."""

    advertise: str = Attribute(  # type: ignore[assignment]
        "The ``proto@addr`` registered; may be changed until the service "
        "starts (``twistd geerpc`` sets the port it got)."
    )


class IRegistryStore(Interface):
    """Where registry entries live (in memory; on etcd...).  Every method
    answers with a Deferred, so a store may live across the network; a store
    that cannot answer fails it (the registry then answers ``503``)."""

    timeout: float = Attribute(  # type: ignore[assignment]
        "Seconds an entry lives after its last heartbeat (0: for ever)."
    )

    def heartbeat(address: str, now: float) -> Deferred[bool]:
        """Register ``address`` or refresh it; True if it was not registered
        (or had expired).  A store that takes no more entries fails it with
        :class:`~txgeerpc.errors.RegistryFull` (the registry answers ``503``)."""

    def deregister(address: str) -> Deferred[bool]:
        """Forget ``address``; False if it was not registered."""

    def live(now: float) -> Deferred[list[Any]]:
        """The entries still alive at ``now`` (:class:`txgeerpc.registry.Entry`),
        sorted by address."""

    def purge(now: float) -> Deferred[list[str]]:
        """Drop the entries dead at ``now``; the addresses dropped."""


class IEtcdWatch(Interface):
    """A running prefix watch (see :meth:`IEtcd.watch_prefix`)."""

    revision: int = Attribute(  # type: ignore[assignment]
        "The revision the watcher has seen everything up to."
    )
    done: Deferred[None] = Attribute(  # type: ignore[assignment]
        "Fires once :meth:`stop` was called; fails with "
        ":class:`~txgeerpc.errors.EtcdCompacted` when the revision it must resume "
        "from has been compacted (the watch is then over: re-list, and watch "
        "again from the listing's revision + 1)."
    )

    def stop() -> None:
        """Stop watching (idempotent); ``done`` fires."""


class IEtcd(Interface):
    """The etcd (v3) operations txgeerpc uses
    (:class:`~txgeerpc.etcd.EtcdClient` against a cluster,
    :class:`~txgeerpc.testing.FakeEtcd` in memory).  Keys and values are
    bytes; revisions and lease IDs are ints.  Every Deferred may fail with
    :class:`~txgeerpc.errors.EtcdUnavailable` (no member answered) or another
    :class:`~txgeerpc.errors.EtcdError` (a member refused)."""

    def put(key: bytes, value: bytes, *, lease: int = 0) -> Deferred[int]:
        """Set ``key``; the store's revision after.  A lease that does not
        exist fails it with an :class:`~txgeerpc.errors.EtcdError` (code 5)."""

    def get(key: bytes) -> Deferred[Any]:
        """``key`` (a :class:`txgeerpc.etcd.KeyValue`), or None."""

    def get_prefix(prefix: bytes) -> Deferred[Any]:
        """Every key starting with ``prefix`` (non-empty), sorted by key (a
        :class:`txgeerpc.etcd.Range`)."""

    def count_prefix(prefix: bytes) -> Deferred[int]:
        """How many keys start with ``prefix``."""

    def delete(key: bytes) -> Deferred[int]:
        """Delete ``key``; how many keys were deleted (0 or 1)."""

    def grant(ttl: int) -> Deferred[int]:
        """A new lease of ``ttl`` seconds (1 or more); its ID."""

    def keep_alive(lease: int) -> Deferred[int]:
        """Renew ``lease`` once; its TTL from now, or 0 when it has expired or
        was revoked (its keys are then gone)."""

    def revoke(lease: int) -> Deferred[bool]:
        """Revoke ``lease``, deleting its keys; False if it was already gone."""

    def create(key: bytes, value: bytes, *, lease: int = 0) -> Deferred[Any]:
        """Put ``key`` only if it does not exist (one transaction): None when
        created, else the existing key (a :class:`txgeerpc.etcd.KeyValue`),
        untouched."""

    def watch_prefix(prefix: bytes, start_revision: int, listener: Any) -> IEtcdWatch:
        """Tell ``listener`` (a :data:`txgeerpc.etcd.EventsListener`) every
        change under ``prefix`` from ``start_revision`` on, in revision order,
        none missed and none twice,
        across reconnections and failing members (each reconnection resumes
        from the last revision seen + 1).  See :class:`IEtcdWatch`."""

    def close() -> Deferred[None]:
        """Stop every watch, and close every connection (the Deferred fires
        once they are closed).  Nothing works after it."""


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
