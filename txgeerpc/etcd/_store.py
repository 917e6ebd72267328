"""
:class:`EtcdStore`: the registry's entries kept in etcd, so that registry
processes keep no state of their own and any number of them behind one etcd
cluster answer the same list (``twistd geerpc-registry --etcd``).

Every entry is one key, ``prefix + proto@addr`` (:mod:`._keys`, the layout
direct registration and etcd discovery use too), whose value says when it
was last written, attached to a lease of the registry's TTL: etcd deletes
the key itself when its heartbeats stop.  A heartbeat renews the entry's
lease, whoever granted it (another registry process, or a server that
registered itself directly), and rewrites the value.
"""

from __future__ import annotations

from math import ceil
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from ..errors import EtcdError, RegistryFull
from ..interfaces import IEtcd, IRegistryStore
from ..registry import DEFAULT_MAX_ENTRIES, Entry
from ._api import KeyValue
from ._gateway import NOT_FOUND
from ._keys import DEFAULT_PREFIX, address_of, check_prefix, entry_value, heartbeat_of, server_key

_ATTEMPTS = 3
"""Rounds one heartbeat tries before giving up on an entry that keeps
appearing and vanishing under it (other registries and expiring leases)."""
_MAX_SKIPPED = 1024
"""Foreign keys remembered as already logged (beyond that, not logged)."""

_T = TypeVar("_T")


@implementer(IRegistryStore)
class EtcdStore:
    """Registry entries as keys in etcd, under leases of ``timeout`` seconds.

    :param etcd: the cluster (an :class:`~txgeerpc.etcd.EtcdClient`; the
        store does not close it).
    :param timeout: seconds an entry lives after its last heartbeat: the
        TTL of its lease, rounded up to whole seconds (etcd may raise a very
        short TTL to its minimum, about 2 s by default).  0: entries have no
        lease and live until deregistered.
    :param prefix: the key prefix of the entries.
    :param max_entries: keys under ``prefix`` at most, counted by etcd (so
        across every registry sharing it) before a new entry is created.
        Refreshing an existing entry is always allowed.  Two registries
        adding entries at the same moment may together go a little beyond.
    :raises ValueError: ``timeout`` is negative, ``prefix`` empty, or
        ``max_entries`` less than 1.

    Every Deferred fails with :class:`~txgeerpc.errors.EtcdUnavailable` when
    no etcd member answered, or another :class:`~txgeerpc.errors.EtcdError`
    when one refused (the registry then answers ``503``).
    """

    _log = Logger()

    def __init__(
        self,
        etcd: IEtcd,
        *,
        timeout: float,
        prefix: str = DEFAULT_PREFIX,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        if timeout < 0:
            raise ValueError(f"timeout must be 0 or more, got {timeout}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be 1 or more, got {max_entries}")
        self._etcd = etcd
        self.timeout = timeout
        self.prefix = check_prefix(prefix)
        self.max_entries = max_entries
        self._prefix = prefix.encode("utf-8")
        self._ttl = max(1, ceil(timeout)) if timeout > 0 else 0
        self._seen: set[str] = set()
        """Listed by the last purge, or refreshed through this store since."""
        self._deregistered: set[str] = set()
        """Deregistered through this store: gone, but not expired."""
        self._skipped: set[bytes] = set()
        self.under_way = 0
        """Operations begun and not ended yet."""
        self._idle: list[Deferred[None]] = []
        self._events = {"joins": 0, "leaves": 0, "expiries": 0, "refused": 0}

    @property
    def counts(self) -> dict[str, int]:
        """As :attr:`txgeerpc.registry.MemoryStore.counts`, for this registry
        process: ``entries`` as of the last purge (every registry's, with
        those refreshed or deregistered through this one since), and the ``joins``,
        ``leaves``, ``expiries`` and ``refused`` heartbeats this process saw."""
        return {"entries": len(self._seen - self._deregistered), **self._events}

    def idle(self) -> Deferred[None]:
        """Fires once no operation is under way (at once if none is), so
        that the etcd client is closed only after them.  Cancellable."""
        if not self.under_way:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle.append(waiter)
        return waiter

    def _track(self, d: Deferred[_T]) -> Deferred[_T]:
        self.under_way += 1

        def ended(result: Any) -> Any:
            self.under_way -= 1
            if not self.under_way:
                waiters, self._idle = self._idle, []
                for waiter in waiters:
                    if not waiter.called:  # else: cancelled
                        waiter.callback(None)
            return result

        return d.addBoth(ended)

    # -- IRegistryStore ------------------------------------------------------

    def heartbeat(self, address: str, now: float) -> Deferred[bool]:
        """Register ``address`` or refresh its entry; True if it had none.

        A new entry gets a lease of its own; an existing one keeps its lease
        (renewed once), so an entry a server registered directly stays that
        server's.  An existing key without a lease (written by a registry
        with ``timeout`` 0, or by hand) is rewritten without one.

        Fails with :class:`~txgeerpc.errors.RegistryFull` when the entry is
        new and ``max_entries`` keys are under the prefix, or with an
        :class:`~txgeerpc.errors.EtcdError` (also when the entry kept
        appearing and vanishing for three rounds).
        """
        return self._track(ensureDeferred(self._heartbeat(address, now)))

    async def _heartbeat(self, address: str, now: float) -> bool:
        key = server_key(self.prefix, address)
        value = entry_value(address, now)
        for _ in range(_ATTEMPTS):
            found = await self._etcd.get(key)
            if found is not None and await self._refresh(key, value, found.lease):
                new = False
            else:
                joined = await self._join(key, value)
                if joined is None:
                    continue
                new = joined
            self._seen.add(address)
            self._deregistered.discard(address)
            if new:
                self._events["joins"] += 1
            return new
        raise EtcdError(f"the entry of {address} kept changing under the heartbeat")

    async def _refresh(self, key: bytes, value: bytes, lease: int) -> bool:
        """Renew ``lease`` and rewrite ``key`` on it (0: without a lease);
        False if that lease is gone (and with it the key)."""
        if lease and await self._etcd.keep_alive(lease) <= 0:
            return False
        try:
            await self._etcd.put(key, value, lease=lease)
        except EtcdError as error:
            if lease and error.code == NOT_FOUND:  # the lease ended in between
                return False
            raise
        return True

    async def _join(self, key: bytes, value: bytes) -> bool | None:
        """Create ``key``: True if created (by this call: also when the key
        found is under the lease just granted), False if someone else's entry was
        there (refreshed instead), None if that entry vanished meanwhile."""
        if await self._etcd.count_prefix(self._prefix) >= self.max_entries:
            self._events["refused"] += 1
            raise RegistryFull(self.max_entries)
        lease = await self._etcd.grant(self._ttl) if self._ttl else 0
        try:
            existing: KeyValue | None = await self._etcd.create(key, value, lease=lease)
        except BaseException:
            await self._revoke_unused(lease)
            raise
        if existing is None:
            return True
        if lease and existing.lease == lease:
            # Ours: the create was applied, its answer lost, and the client
            # sent it again (to another member), which found the key it made.
            return True
        # Created by another registry at the same moment (or without a lease):
        # theirs stays, ours goes.
        await self._revoke_unused(lease)
        if await self._refresh(key, value, existing.lease):
            return False
        return None

    async def _revoke_unused(self, lease: int) -> None:
        """Revoke a lease no key uses; if etcd does not answer, it expires."""
        if not lease:
            return
        try:
            await self._etcd.revoke(lease)
        except EtcdError as error:
            self._log.info(
                "registry: could not revoke unused etcd lease {lease} ({error});"
                " it expires by itself",
                lease=lease,
                error=error,
            )

    def deregister(self, address: str) -> Deferred[bool]:
        """Delete the entry of ``address``; False if it had none.

        An entry with a lease is deleted by revoking the lease: a server that
        registered itself directly (``twistd geerpc --etcd``) then loses its
        lease, notices at its next keep-alive, and registers again.

        Fails with an :class:`~txgeerpc.errors.EtcdError`.
        """
        return self._track(ensureDeferred(self._deregister(address)))

    async def _deregister(self, address: str) -> bool:
        key = server_key(self.prefix, address)
        found = await self._etcd.get(key)
        if found is None:
            return False
        if found.lease:
            await self._etcd.revoke(found.lease)
        else:
            await self._etcd.delete(key)
        self._deregistered.add(address)
        self._events["leaves"] += 1
        return True

    def live(self, now: float) -> Deferred[list[Entry]]:
        """Every entry under the prefix, sorted by address, with the heartbeat
        time its value gives (``now`` when it gives none).  Keys that name no
        server address are left out (and logged, once each).

        Fails with an :class:`~txgeerpc.errors.EtcdError`.
        """
        return self._track(ensureDeferred(self._live(now)))

    async def _live(self, now: float) -> list[Entry]:
        listing = await self._etcd.get_prefix(self._prefix)
        entries = []
        for kv in listing.kvs:
            address = self._address(kv)
            if address is not None:
                # A server registered directly writes no heartbeat: its
                # lease, alive, says it is alive now.
                heartbeat = heartbeat_of(kv.value)
                entries.append(Entry(address, now if heartbeat is None else heartbeat))
        entries.sort(key=lambda entry: entry.address)
        return entries

    def purge(self, now: float) -> Deferred[list[str]]:
        """Nothing to drop: etcd deletes an entry itself when its lease
        expires.  The addresses gone since the last purge, sorted, so the
        registry still logs them as expired: those the last purge listed or
        this store refreshed since, minus those deregistered through this
        store (one deregistered through another registry process counts as
        expired here).  The first purge knows only this store's heartbeats.

        Fails with an :class:`~txgeerpc.errors.EtcdError`.
        """
        return self._track(ensureDeferred(self._purge()))

    async def _purge(self) -> list[str]:
        listing = await self._etcd.get_prefix(self._prefix)
        current = {
            address for address in (self._address(kv) for kv in listing.kvs) if address is not None
        }
        expired = sorted(self._seen - current - self._deregistered)
        # Deregistered ones the listing still held (it raced the deletion),
        # or that came back through another registry, stay excused.
        self._deregistered &= current
        self._seen = current
        self._events["expiries"] += len(expired)
        return expired

    def _address(self, kv: KeyValue) -> str | None:
        address = address_of(self._prefix, kv.key)
        if address is None and kv.key not in self._skipped:
            if len(self._skipped) < _MAX_SKIPPED:
                self._skipped.add(kv.key)
                self._log.warn(
                    "registry: ignoring etcd key {key!r}: not prefix + proto@addr",
                    key=kv.key,
                )
        return address


__all__ = ["EtcdStore"]
