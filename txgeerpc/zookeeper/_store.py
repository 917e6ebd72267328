"""
:class:`ZooKeeperStore`: the registry's entries kept in ZooKeeper, so that
registry processes keep no state of their own and any number of them over
one ensemble answer the same list (``twistd geerpc-registry --zookeeper``).

An entry is a node under the prefix (:mod:`._keys`, the layout direct
registration and ZooKeeper discovery use too).  ZooKeeper has no per-node
lease, and an ephemeral node would die with the registry that created it, so
an entry a registry creates is a persistent node whose value says when it
last had a heartbeat; :meth:`ZooKeeperStore.purge` (every registry runs it)
deletes those older than the timeout, with a version check so that a
heartbeat racing it wins.  A server registered directly is an ephemeral node
of its own session: it is listed while its session lives, and a heartbeat
for it changes nothing.

Every entry is read to be listed (one request per entry, sent together).
"""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults, succeed
from twisted.logger import Logger
from zope.interface import implementer

from ..errors import RegistryFull, ZooKeeperError
from ..interfaces import IRegistryStore
from ..registry import DEFAULT_MAX_ENTRIES, Entry
from ._client import Stat, ZooKeeperClient
from ._keys import (
    DEFAULT_PREFIX,
    address_of,
    check_prefix,
    entry_value,
    heartbeat_of,
    parent_of,
    server_path,
)

_ATTEMPTS = 3
_MAX_SKIPPED = 1024
_T = TypeVar("_T")


@implementer(IRegistryStore)
class ZooKeeperStore:
    """Registry entries as nodes in ZooKeeper.

    :param zookeeper: the client (the store does not close it).
    :param timeout: seconds an entry lives after its last heartbeat (0: until
        deregistered).  An entry leaves when a registry purges it: within
        ``timeout`` plus the purge interval.
    :param prefix: the parent path of the entries.
    :param max_entries: entries under the prefix at most, counted by
        ZooKeeper (so across every registry sharing it) before a new one is
        created; refreshing an entry is always allowed.
    :raises ValueError: ``timeout`` negative, ``prefix`` not an absolute
        path, or ``max_entries`` less than 1.

    Every Deferred fails with :class:`~txgeerpc.errors.ZooKeeperUnavailable`
    when no server answered, or another :class:`~txgeerpc.errors.ZooKeeperError`
    when ZooKeeper refused (the registry then answers ``503``).
    """

    _log = Logger()

    def __init__(
        self,
        zookeeper: ZooKeeperClient,
        *,
        timeout: float,
        prefix: str = DEFAULT_PREFIX,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        if timeout < 0:
            raise ValueError(f"timeout must be 0 or more, got {timeout}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be 1 or more, got {max_entries}")
        self._zookeeper = zookeeper
        self.timeout = timeout
        self.prefix = check_prefix(prefix)
        self._parent = parent_of(self.prefix)
        self.max_entries = max_entries
        self._seen: set[str] = set()
        self._deregistered: set[str] = set()
        self._skipped: set[str] = set()
        self.under_way = 0
        """Operations begun and not ended yet."""
        self._idle: list[Deferred[None]] = []
        self._events = {"joins": 0, "leaves": 0, "expiries": 0, "refused": 0}

    @property
    def counts(self) -> dict[str, int]:
        """As :attr:`txgeerpc.registry.MemoryStore.counts`, for this registry
        process (the ``txgeerpc_registry_*`` metrics): ``entries`` as of the
        last purge (every registry's, with those refreshed or deregistered
        through this one since), and the ``joins``, ``leaves``, ``expiries``
        and ``refused`` heartbeats this process saw."""
        return {"entries": len(self._seen - self._deregistered), **self._events}

    def idle(self) -> Deferred[None]:
        """Fires once no operation is under way (at once if none is).  Cancellable."""
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
                    if not waiter.called:
                        waiter.callback(None)
            return result

        return d.addBoth(ended)

    def _expired(self, value: bytes, stat: Stat, now: float) -> bool:
        """Whether a registry's entry missed its heartbeats (a server's own
        ephemeral node never has)."""
        if stat.ephemeral_owner or not self.timeout:
            return False
        heartbeat = heartbeat_of(value)
        return heartbeat is not None and now - heartbeat > self.timeout

    # -- IRegistryStore ------------------------------------------------------

    def heartbeat(self, address: str, now: float) -> Deferred[bool]:
        """Register ``address`` or refresh its entry; True if it had none (or
        it had expired and was not purged yet).

        Fails with :class:`~txgeerpc.errors.RegistryFull` when the entry is
        new and ``max_entries`` are under the prefix, or a
        :class:`~txgeerpc.errors.ZooKeeperError`.
        """
        return self._track(ensureDeferred(self._heartbeat(address, now)))

    async def _heartbeat(self, address: str, now: float) -> bool:
        zookeeper = self._zookeeper
        path = server_path(self.prefix, address)
        value = entry_value(address, now)
        for _ in range(_ATTEMPTS):
            found = await zookeeper.get(path)
            if found is not None:
                old, stat = found
                if stat.ephemeral_owner:
                    new = False  # registered directly: alive while its session is
                elif await zookeeper.set(path, value, stat.version):
                    new = self._expired(old, stat, now)
                else:
                    continue  # purged or rewritten meanwhile
            else:
                if len(await zookeeper.children(self._parent)) >= self.max_entries:
                    self._events["refused"] += 1
                    raise RegistryFull(self.max_entries)
                if not await zookeeper.create(path, value):
                    continue  # another registry created it meanwhile
                new = True
            self._seen.add(address)
            self._deregistered.discard(address)
            if new:
                self._events["joins"] += 1
            return new
        raise ZooKeeperError(f"the entry of {address} kept changing under the heartbeat")

    def deregister(self, address: str) -> Deferred[bool]:
        """Delete the entry of ``address``; False if it had none.  A server
        registered directly creates its node again (it watches it).

        Fails with a :class:`~txgeerpc.errors.ZooKeeperError`.
        """
        return self._track(ensureDeferred(self._deregister(address)))

    async def _deregister(self, address: str) -> bool:
        if not await self._zookeeper.delete(server_path(self.prefix, address)):
            return False
        self._deregistered.add(address)
        self._events["leaves"] += 1
        return True

    async def _entries(self) -> list[tuple[str, bytes, Stat]]:
        names = await self._zookeeper.children(self._parent)
        named = [(name, address) for name in names if (address := self._address(name))]
        found = await gatherResults(
            [self._zookeeper.get(self.prefix + name) for name, _ in named], consumeErrors=True
        )
        return [
            (address, got[0], got[1])
            for (_, address), got in zip(named, found, strict=True)
            if got is not None
        ]

    def live(self, now: float) -> Deferred[list[Entry]]:
        """Every entry under the prefix not expired at ``now``, sorted by
        address, with the heartbeat time its value gives (``now`` for a
        server registered directly).

        Fails with a :class:`~txgeerpc.errors.ZooKeeperError`.
        """
        return self._track(ensureDeferred(self._live(now)))

    async def _live(self, now: float) -> list[Entry]:
        entries = []
        for address, value, stat in await self._entries():
            if not self._expired(value, stat, now):
                heartbeat = heartbeat_of(value)
                entries.append(Entry(address, now if heartbeat is None else heartbeat))
        entries.sort(key=lambda entry: entry.address)
        return entries

    def purge(self, now: float) -> Deferred[list[str]]:
        """Delete the registry entries whose heartbeats stopped more than
        ``timeout`` ago; the addresses gone since the last purge, sorted
        (those deleted now, those another registry purged, servers
        registered directly whose session ended), minus those deregistered
        through this store.

        Fails with a :class:`~txgeerpc.errors.ZooKeeperError`.
        """
        return self._track(ensureDeferred(self._purge(now)))

    async def _purge(self, now: float) -> list[str]:
        current = set()
        for address, value, stat in await self._entries():
            if self._expired(value, stat, now) and await self._zookeeper.delete(
                server_path(self.prefix, address), stat.version
            ):
                continue  # purged: gone
            current.add(address)
        expired = sorted(self._seen - current - self._deregistered)
        self._events["expiries"] += len(expired)
        self._deregistered &= current
        self._seen = current
        return expired

    def _address(self, name: str) -> str | None:
        address = address_of(name)
        if address is None and name not in self._skipped:
            if len(self._skipped) < _MAX_SKIPPED:
                self._skipped.add(name)
                self._log.warn(
                    "registry: ignoring ZooKeeper node {name!r}: not an address", name=name
                )
        return address


__all__ = ["ZooKeeperStore"]
