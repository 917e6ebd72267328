"""
Discovery from etcd: the servers registered under a key prefix (by
:class:`~txgeerpc.etcd.EtcdRegistration` or a registry on etcd), listed once
and then followed by a watch: etcd pushes every change, nothing is polled.

- The listing is read with one range request; keys that name no server
  address (put there by hand) are skipped.
- The watch starts at the listing's revision + 1, so no change between the
  two is missed.  The etcd client's watch itself survives failing members
  and resumes from its last revision; only a compacted revision ends it, and
  then the prefix is listed again and watched from the new listing.
- While etcd cannot be reached the last known list is kept; listing is
  retried with backoff (``retry`` doubling up to ``max_retry``).  A warning
  is logged once per outage, and a line when etcd answers again.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..discovery import ServerList
from ..errors import EtcdCompacted
from ..interfaces import IDiscovery, IEtcd, IEtcdWatch
from ._api import Range, WatchEvent
from ._keys import DEFAULT_PREFIX, address_of, check_prefix

DEFAULT_RETRY = 1.0
DEFAULT_MAX_RETRY = 30.0


@implementer(IDiscovery)
class EtcdDiscovery(ServerList, Service):
    """The servers registered in ``etcd`` under ``prefix``, kept up to date by
    a watch while the service runs.  It has the surface of
    :class:`~txgeerpc.registry.RegistryDiscovery`, so an
    :class:`~txgeerpc.xclient.XClient` takes it.

    :param etcd: the cluster (an :class:`~txgeerpc.etcd.EtcdClient`, or a
        :class:`~txgeerpc.testing.FakeEtcd`); not closed by this service.
    :param clock: for the retry timer.
    :param prefix: the key prefix (the registry store's, by default).
    :param retry: seconds before listing again after a failed listing,
        doubling after each further failure up to ``max_retry``.
    :raises ValueError: ``prefix`` is empty, or a retry delay is not positive.

    :ivar failures: listings failed in a row.
    :ivar listings: listings done (1 + one per compaction or recovery).
    """

    _log = Logger()

    def __init__(
        self,
        etcd: IEtcd,
        clock: IReactorTime,
        *,
        prefix: str = DEFAULT_PREFIX,
        retry: float = DEFAULT_RETRY,
        max_retry: float = DEFAULT_MAX_RETRY,
    ) -> None:
        if not (retry > 0 and max_retry >= retry):
            raise ValueError(
                f"retry delays must be positive, retry <= max_retry: {retry}, {max_retry}"
            )
        self._etcd = etcd
        self._clock = clock
        self.prefix = check_prefix(prefix)
        self._prefix = self.prefix.encode("utf-8")
        self._first_retry = retry
        self._max_retry = max_retry
        self._retry = retry
        self._keys: dict[bytes, str] = {}  # key: the address it names
        ServerList.__init__(self)
        self._listing: Deferred[Range] | None = None
        self._next: IDelayedCall | None = None
        self._watch: IEtcdWatch | None = None
        self._generation = 0  # of the current watch: events of older ones are dropped
        self.failures = 0
        self.listings = 0

    # -- the Discovery surface ------------------------------------------------------

    def _first_coming(self) -> bool:
        return bool(self.running) or self._listing is not None

    # -- the service --------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._retry = self._first_retry
        self._list()

    def stopService(self) -> None:
        super().stopService()
        self._generation += 1
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        listing, self._listing = self._listing, None
        if listing is not None:
            listing.cancel()
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.stop()
        self._first_ended()  # nobody waits for a listing that will not come

    # -- listing ------------------------------------------------------------------

    def _list(self) -> None:
        self._next = None
        if not self.running:
            return
        d = self._etcd.get_prefix(self._prefix)
        self._listing = d
        d.addCallbacks(self._listed, self._list_failed, callbackArgs=(d,), errbackArgs=(d,))

    def _listed(self, listed: Range, d: Deferred[Range]) -> None:
        if self._listing is not d or not self.running:
            return
        self._listing = None
        if self.failures:
            self._log.info(
                "discovery: etcd answers again after {failures} failed listings",
                failures=self.failures,
            )
        keys = {}
        for kv in listed.kvs:
            address = address_of(self._prefix, kv.key)
            if address is not None:
                keys[kv.key] = address
        self._keys = keys
        generation = self._generation
        self._update()
        if generation != self._generation or not self.running:
            return  # a listener stopped (or restarted) the service
        try:
            self._start_watch(listed.revision + 1)
        except Exception:
            # The client refused at once (closed, or a bad revision): as a
            # failed listing, tried again with backoff.
            self._failed(Failure())
            return
        self.listings += 1
        self.failures = 0
        self._retry = self._first_retry
        self._first_ended()

    def _list_failed(self, reason: Failure, d: Deferred[Range]) -> None:
        if self._listing is not d or not self.running:
            return  # cancelled by stopService
        self._listing = None
        self._failed(reason)

    def _failed(self, reason: Failure) -> None:
        """A listing (or the start of its watch) failed: keep the list, list
        again after the backoff delay, and release the ready() waiters (they
        do not wait for the retry)."""
        self.failures += 1
        delay = self._retry
        self._retry = min(self._retry * 2, self._max_retry)
        if self.failures == 1:
            self._log.warn(
                "discovery: listing {prefix} from etcd failed ({why}); keeping {count} known "
                "servers, retrying in {delay}s (then with backoff up to {max}s)",
                prefix=self.prefix,
                why=reason.getErrorMessage(),
                count=len(self._servers),
                delay=f"{delay:g}",
                max=f"{self._max_retry:g}",
            )
        else:
            self._log.debug(
                "discovery: listing from etcd failed again ({why}); retrying in {delay}s",
                why=reason.getErrorMessage(),
                delay=f"{delay:g}",
            )
        # callLater, not a TimerService: nothing is periodic here (the watch
        # pushes changes); a failed listing is retried after a doubling delay.
        self._next = self._clock.callLater(delay, self._list)
        self._first_ended()

    # -- watching -----------------------------------------------------------------

    def _start_watch(self, revision: int) -> None:
        """Watch from ``revision`` on.  Raises what ``watch_prefix`` raises."""
        if not self.running:
            return
        self._generation += 1
        generation = self._generation

        def events(found: list[WatchEvent], _revision: int) -> None:
            if generation == self._generation:
                self._apply(found)

        watch = self._etcd.watch_prefix(self._prefix, revision, events)
        if generation != self._generation:  # stopped from inside a listener
            watch.stop()
            return
        self._watch = watch
        watch.done.addCallbacks(lambda _: None, self._watch_failed, errbackArgs=(generation,))

    def _apply(self, events: list[WatchEvent]) -> None:
        for event in events:
            key = event.kv.key
            if event.kind == "delete":
                self._keys.pop(key, None)
                continue
            address = address_of(self._prefix, key)
            if address is not None:
                self._keys[key] = address
        self._update()

    def _watch_failed(self, reason: Failure, generation: int) -> None:
        if generation != self._generation or not self.running:
            return
        self._watch = None
        self._generation += 1
        if isinstance(reason.value, EtcdCompacted):
            self._log.info(
                "discovery: the watch of {prefix} fell behind a compaction ({why}); listing again",
                prefix=self.prefix,
                why=reason.getErrorMessage(),
            )
            self._list()
            return
        # Not expected of the client's watch (it resumes by itself): list
        # again after a while rather than in a tight loop.
        self._log.warn(
            "discovery: the watch of {prefix} ended ({why}); listing again in {delay}s",
            prefix=self.prefix,
            why=reason.getErrorMessage(),
            delay=f"{self._retry:g}",
        )
        self._next = self._clock.callLater(self._retry, self._list)

    # -- the list -----------------------------------------------------------------

    def _update(self) -> None:
        servers = sorted(set(self._keys.values()))
        if servers != self._servers:
            self._log.info(
                "discovery: etcd lists {servers}", servers=", ".join(servers) or "no servers"
            )
            self._change(servers)


__all__ = ["EtcdDiscovery"]
