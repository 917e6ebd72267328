"""
What txgeerpc needs of etcd (v3), as one interface: :class:`Etcd`.

:class:`~txgeerpc.etcd.EtcdClient` speaks it to a real cluster over the JSON
gateway; :class:`~txgeerpc.testing.FakeEtcd` keeps it in memory on a clock,
for tests.  Keys and values are bytes; revisions and lease IDs are ints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

import attrs
from twisted.internet.defer import Deferred


@attrs.frozen
class KeyValue:
    """One key as etcd keeps it."""

    key: bytes
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0
    """The lease the key is attached to (0: none)."""


@attrs.frozen
class Range:
    """The keys of a range, sorted by key, at the store's ``revision``."""

    kvs: tuple[KeyValue, ...]
    revision: int


@attrs.frozen
class WatchEvent:
    """A key put (created or changed) or deleted (by hand, or its lease
    expired or was revoked).  A deleted key's ``kv`` has its key and the
    revision of the deletion as ``mod_revision``, nothing else."""

    kind: Literal["put", "delete"]
    kv: KeyValue


EventsListener = Callable[[list[WatchEvent], int], None]
"""``(events, revision)``: the events of one revision range, in order, and
the store's revision they bring the watcher to."""


class Watch(Protocol):
    """A running prefix watch (see :meth:`Etcd.watch_prefix`)."""

    revision: int
    """The revision the watcher has seen everything up to."""

    done: Deferred[None]
    """Fires once :meth:`stop` was called; fails with
    :class:`~txgeerpc.errors.EtcdCompacted` when the revision it must resume
    from has been compacted (the watch is then over: re-list, and watch
    again from the listing's revision + 1)."""

    def stop(self) -> None:
        """Stop watching (idempotent); ``done`` fires."""


class Etcd(Protocol):
    """The etcd operations txgeerpc uses.  Every Deferred may fail with
    :class:`~txgeerpc.errors.EtcdUnavailable` (no member answered) or another
    :class:`~txgeerpc.errors.EtcdError` (a member refused)."""

    def put(self, key: bytes, value: bytes, *, lease: int = 0) -> Deferred[int]:
        """Set ``key``; the store's revision after.  A lease that does not
        exist fails it with an :class:`~txgeerpc.errors.EtcdError` (code 5)."""

    def get(self, key: bytes) -> Deferred[KeyValue | None]:
        """``key``, or None."""

    def get_prefix(self, prefix: bytes) -> Deferred[Range]:
        """Every key starting with ``prefix`` (non-empty), sorted by key."""

    def count_prefix(self, prefix: bytes) -> Deferred[int]:
        """How many keys start with ``prefix``."""

    def delete(self, key: bytes) -> Deferred[int]:
        """Delete ``key``; how many keys were deleted (0 or 1)."""

    def grant(self, ttl: int) -> Deferred[int]:
        """A new lease of ``ttl`` seconds (1 or more); its ID."""

    def keep_alive(self, lease: int) -> Deferred[int]:
        """Renew ``lease`` once; its TTL from now, or 0 when it has expired or
        was revoked (its keys are then gone)."""

    def revoke(self, lease: int) -> Deferred[bool]:
        """Revoke ``lease``, deleting its keys; False if it was already gone."""

    def create(self, key: bytes, value: bytes, *, lease: int = 0) -> Deferred[KeyValue | None]:
        """Put ``key`` only if it does not exist (one transaction): None when
        created, else the existing key, untouched."""

    def watch_prefix(self, prefix: bytes, start_revision: int, listener: EventsListener) -> Watch:
        """Tell ``listener`` every change under ``prefix`` from
        ``start_revision`` on, in revision order, none missed and none twice,
        across reconnections and failing members (each reconnection resumes
        from the last revision seen + 1).  See :class:`Watch`."""

    def close(self) -> Deferred[None]:
        """Stop every watch, and close every connection (the Deferred fires
        once they are closed).  Nothing works after it."""
