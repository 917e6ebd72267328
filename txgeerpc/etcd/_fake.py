"""
An in-memory :class:`~txgeerpc.interfaces.IEtcd` on an injected clock, for tests.

It keeps etcd's bookkeeping (one store revision, bumped once per write
request; ``create_revision``/``mod_revision``/``version``; leases expiring on
the clock; watch history and compaction) and lets a test fail it on purpose.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import EtcdCompacted, EtcdError, EtcdUnavailable
from ..interfaces import IEtcd, IEtcdWatch
from ._api import EventsListener, KeyValue, Range, WatchEvent

_T = TypeVar("_T")


@attrs.define(eq=False)
class _Lease:
    ttl: int
    timer: IDelayedCall
    keys: set[bytes] = attrs.field(factory=set)


@implementer(IEtcdWatch)
@attrs.define(eq=False)
class _FakeWatch:
    """An :class:`~txgeerpc.interfaces.IEtcdWatch` of :class:`FakeEtcd`.

    :ivar revision: the last revision delivered to the listener.
    """

    prefix: bytes
    listener: EventsListener
    revision: int
    _on_stop: Callable[[_FakeWatch], None]
    done: Deferred[None] = attrs.field(factory=Deferred)
    synced: bool = False
    """Connected and caught up: only new revisions remain to be scanned."""
    scanned: int = 0
    """While synced, the revision up to which the history has been scanned."""

    def stop(self) -> None:
        """Stop watching (idempotent); ``done`` fires with None."""
        self._on_stop(self)
        if not self.done.called:
            self.done.callback(None)


@implementer(IEtcd)
class FakeEtcd:
    """An etcd v3 kept in memory, on ``clock``: it implements
    :class:`~txgeerpc.interfaces.IEtcd`.  Answers are already fired unless
    ``delay`` is set; watch events are delivered synchronously after
    each write, one listener call per revision.

    :ivar requests: the name of every operation called, in order (failed ones
        included).
    :ivar delay: when positive, every answer arrives ``delay`` seconds after
        its request (the request itself takes effect at once).
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self.requests: list[str] = []
        self.delay: float = 0.0
        self._available = True
        self._closed = False
        self._revision = 1
        self._compacted = 0
        self._kvs: dict[bytes, KeyValue] = {}
        self._history: list[tuple[int, WatchEvent]] = []
        self._leases: dict[int, _Lease] = {}
        self._next_lease = 1000
        self._watches: list[_FakeWatch] = []
        self._in_flight: dict[Deferred[Any], IDelayedCall] = {}
        self._delivering = False
        self._again = False

    @property
    def revision(self) -> int:
        """The store's current revision."""
        return self._revision

    @property
    def available(self) -> bool:
        """False makes every request fail with
        :class:`~txgeerpc.errors.EtcdUnavailable` and holds watch events back;
        setting it True again delivers them, as a reconnecting watch resumes
        from its last revision + 1 (and fails if that was compacted)."""
        return self._available

    @available.setter
    def available(self, value: bool) -> None:
        self._available = value
        if not value:
            for watch in self._watches:
                watch.synced = False
        self._notify()

    def compact(self, revision: int) -> None:
        """Forget the history before ``revision`` (at most the current one):
        watches that must resume from before it fail with
        :class:`~txgeerpc.errors.EtcdCompacted`."""
        if revision > self._revision:
            raise ValueError(f"cannot compact to future revision {revision}")
        self._compacted = max(self._compacted, revision)
        start = bisect_left(self._history, self._compacted, key=lambda entry: entry[0])
        del self._history[:start]

    # Etcd

    def put(self, key: bytes, value: bytes, *, lease: int = 0) -> Deferred[int]:
        """See :meth:`~txgeerpc.interfaces.IEtcd.put`."""
        return self._answer("put", lambda: self._put(key, value, lease).mod_revision)

    def get(self, key: bytes) -> Deferred[KeyValue | None]:
        """See :meth:`~txgeerpc.interfaces.IEtcd.get`."""
        return self._answer("get", lambda: self._kvs.get(_checked(key)))

    def get_prefix(self, prefix: bytes) -> Deferred[Range]:
        """See :meth:`~txgeerpc.interfaces.IEtcd.get_prefix`."""
        return self._answer("get_prefix", lambda: Range(tuple(self._under(prefix)), self._revision))

    def count_prefix(self, prefix: bytes) -> Deferred[int]:
        """See :meth:`~txgeerpc.interfaces.IEtcd.count_prefix`."""
        return self._answer("count_prefix", lambda: len(self._under(prefix)))

    def delete(self, key: bytes) -> Deferred[int]:
        """See :meth:`~txgeerpc.interfaces.IEtcd.delete`."""
        return self._answer("delete", lambda: self._delete([_checked(key)]))

    def grant(self, ttl: int) -> Deferred[int]:
        """See :meth:`~txgeerpc.interfaces.IEtcd.grant`.  IDs count up from 1000.

        :raises ValueError: at once, when ``ttl`` is less than 1.
        """
        if ttl < 1:
            raise ValueError(f"lease TTL must be 1 or more, not {ttl}")

        def grant() -> int:
            lease_id = self._next_lease
            self._next_lease += 1
            timer = self._clock.callLater(ttl, self._end_lease, lease_id)
            self._leases[lease_id] = _Lease(ttl, timer)
            return lease_id

        return self._answer("grant", grant)

    def keep_alive(self, lease: int) -> Deferred[int]:
        """See :meth:`~txgeerpc.interfaces.IEtcd.keep_alive`."""

        def keep_alive() -> int:
            found = self._leases.get(lease)
            if found is None:
                return 0
            found.timer.reset(found.ttl)
            return found.ttl

        return self._answer("keep_alive", keep_alive)

    def revoke(self, lease: int) -> Deferred[bool]:
        """See :meth:`~txgeerpc.interfaces.IEtcd.revoke`."""
        return self._answer("revoke", lambda: self._end_lease(lease))

    def create(self, key: bytes, value: bytes, *, lease: int = 0) -> Deferred[KeyValue | None]:
        """See :meth:`~txgeerpc.interfaces.IEtcd.create`.  As in etcd, a missing
        lease fails it only when the key is absent (the put branch runs)."""

        def create() -> KeyValue | None:
            existing = self._kvs.get(_checked(key))
            if existing is None:
                self._put(key, value, lease)
            return existing

        return self._answer("create", create)

    def watch_prefix(
        self, prefix: bytes, start_revision: int, listener: EventsListener
    ) -> _FakeWatch:
        """See :meth:`~txgeerpc.interfaces.IEtcd.watch_prefix`.  A
        ``start_revision`` of 0 or less means, as in etcd, "from the next
        revision on".  After :meth:`close`, ``done`` fails at once with
        :class:`~txgeerpc.errors.EtcdError`."""
        self.requests.append("watch_prefix")
        if start_revision <= 0:
            start_revision = self._revision + 1
        watch = _FakeWatch(prefix, listener, start_revision - 1, self._forget)
        if self._closed:
            watch.done.errback(EtcdError("client closed"))
            return watch
        self._watches.append(watch)
        self._notify()
        return watch

    def close(self) -> Deferred[None]:
        """See :meth:`~txgeerpc.interfaces.IEtcd.close`: stops every watch,
        cancels the lease timers and fails answers still in flight with
        :class:`~txgeerpc.errors.EtcdError`.  Idempotent."""
        self.requests.append("close")
        self._closed = True
        for watch in list(self._watches):
            watch.stop()
        for lease in self._leases.values():
            lease.timer.cancel()
        self._leases.clear()
        for d, call in list(self._in_flight.items()):
            del self._in_flight[d]
            call.cancel()
            d.errback(EtcdError("client closed"))
        return succeed(None)

    # The store

    def _answer(self, name: str, operation: Callable[[], _T]) -> Deferred[_T]:
        self.requests.append(name)
        outcome: _T | Failure
        if self._closed:
            outcome = Failure(EtcdError("client closed"))
        elif not self._available:
            outcome = Failure(EtcdUnavailable({"fake": "unavailable"}))
        else:
            try:
                outcome = operation()
            except EtcdError as error:
                outcome = Failure(error)
        if self.delay <= 0:
            return fail(outcome) if isinstance(outcome, Failure) else succeed(outcome)

        def cancel(d: Deferred[_T]) -> None:
            self._in_flight.pop(d).cancel()

        def arrive() -> None:
            del self._in_flight[answer]
            answer.callback(outcome)

        answer: Deferred[_T] = Deferred(cancel)
        self._in_flight[answer] = self._clock.callLater(self.delay, arrive)
        return answer

    def _under(self, prefix: bytes) -> list[KeyValue]:
        _checked(prefix)
        return [self._kvs[key] for key in sorted(self._kvs) if key.startswith(prefix)]

    def _put(self, key: bytes, value: bytes, lease: int) -> KeyValue:
        _checked(key)
        if lease and lease not in self._leases:
            raise EtcdError("requested lease not found", code=5)
        revision = self._revision + 1
        old = self._kvs.get(key)
        kv = KeyValue(
            key,
            value,
            create_revision=old.create_revision if old else revision,
            mod_revision=revision,
            version=old.version + 1 if old else 1,
            lease=lease,
        )
        if old is not None and old.lease in self._leases:
            self._leases[old.lease].keys.discard(key)
        if lease:
            self._leases[lease].keys.add(key)
        self._kvs[key] = kv
        self._commit(revision, [WatchEvent("put", kv)])
        return kv

    def _delete(self, keys: list[bytes]) -> int:
        """Delete ``keys`` in one revision (none if none existed)."""
        revision = self._revision + 1
        events = []
        for key in sorted(key for key in keys if key in self._kvs):
            old = self._kvs.pop(key)
            if old.lease in self._leases:
                self._leases[old.lease].keys.discard(key)
            events.append(WatchEvent("delete", KeyValue(key, mod_revision=revision)))
        if events:
            self._commit(revision, events)
        return len(events)

    def _end_lease(self, lease_id: int) -> bool:
        """Revoke or expire a lease, deleting its keys; False if it was gone."""
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            return False
        if lease.timer.active():
            lease.timer.cancel()
        self._delete(list(lease.keys))
        return True

    def _commit(self, revision: int, events: list[WatchEvent]) -> None:
        self._revision = revision
        self._history.extend((revision, event) for event in events)
        self._notify()

    # Watches

    def _forget(self, watch: _FakeWatch) -> None:
        if watch in self._watches:
            self._watches.remove(watch)

    def _notify(self) -> None:
        """Bring every watch up to date; reentrant writes (from a listener)
        are picked up by the outermost call, so order is kept."""
        if self._delivering:
            self._again = True
            return
        self._delivering = True
        try:
            self._again = True
            while self._again:
                self._again = False
                for watch in list(self._watches):
                    self._catch_up(watch)
        finally:
            self._delivering = False

    def _catch_up(self, watch: _FakeWatch) -> None:
        if not self._available or watch not in self._watches:
            return
        if not watch.synced:
            if watch.revision + 1 < self._compacted:
                self._forget(watch)
                watch.done.errback(EtcdCompacted(self._compacted))
                return
            watch.synced = True
            watch.scanned = watch.revision
        history = self._history
        while watch in self._watches and watch.synced:
            index = bisect_left(history, watch.scanned + 1, key=lambda entry: entry[0])
            if index == len(history):
                return
            revision = history[index][0]
            events = []
            while index < len(history) and history[index][0] == revision:
                if history[index][1].kv.key.startswith(watch.prefix):
                    events.append(history[index][1])
                index += 1
            watch.scanned = revision
            if events:
                watch.revision = revision
                try:
                    watch.listener(events, revision)
                except Exception:
                    self._log.failure("fake etcd: watch listener failed")


def _checked(key: bytes) -> bytes:
    """``key``, if not empty (etcd refuses empty keys)."""
    if not key:
        raise EtcdError("key is not provided", code=3)
    return key


__all__ = ["FakeEtcd"]
