"""
Discovery from ZooKeeper: the servers registered under a prefix (by
:class:`~txgeerpc.zookeeper.ZooKeeperRegistration` or a registry on
ZooKeeper), listed and then followed with a watch: ZooKeeper says when the
children change, nothing is polled.

- A children watch fires once: each time it does, the prefix is listed again
  (with a new watch), so the list is always ZooKeeper's latest.
- A dropped connection (the session still alive) keeps its watch: kazoo
  sets it again on the next server, which fires it at once if anything
  changed meanwhile.  A session that expired lost its watches: when the new
  session is up the prefix is listed again.  Any reconnection lists it again
  too (cheap, and it covers both).
- While ZooKeeper cannot be reached the last known list is kept; listing is
  retried with backoff (``retry`` doubling up to ``max_retry``).  A warning
  is logged once per outage, and a line when ZooKeeper answers again.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..discovery import ServerList
from ..interfaces import IDiscovery
from ._client import SessionState, ZooKeeperClient
from ._keys import DEFAULT_PREFIX, address_of, check_prefix, parent_of

DEFAULT_RETRY = 1.0
DEFAULT_MAX_RETRY = 30.0


@implementer(IDiscovery)
class ZooKeeperDiscovery(ServerList, Service):
    """The servers registered in ZooKeeper under ``prefix``, kept up to date
    by watches while the service runs.  It has the surface of
    :class:`~txgeerpc.registry.RegistryDiscovery`, so an
    :class:`~txgeerpc.xclient.XClient` takes it.

    :param zookeeper: the client (not closed by this service).
    :param clock: for the retry timer.
    :param prefix: the parent path of the entries.
    :param retry: seconds before listing again after a failed listing,
        doubling after each further failure up to ``max_retry``.
    :raises ValueError: ``prefix`` is not an absolute path, or a retry delay
        is not positive.

    :ivar failures: listings failed in a row.
    :ivar listings: listings done.
    """

    _log = Logger()

    def __init__(
        self,
        zookeeper: ZooKeeperClient,
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
        self._zookeeper = zookeeper
        self._clock = clock
        self.prefix = check_prefix(prefix)
        self._parent = parent_of(self.prefix)
        self._first_retry = retry
        self._max_retry = max_retry
        self._retry = retry
        ServerList.__init__(self)
        self._listing: Deferred[list[str]] | None = None
        self._again = False  # a watch fired while listing: list again after it
        self._next: IDelayedCall | None = None
        self._unsubscribe: Any = None
        self.failures = 0
        self.listings = 0

    def _first_coming(self) -> bool:
        return bool(self.running) or self._listing is not None

    # -- the service --------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._retry = self._first_retry
        self._unsubscribe = self._zookeeper.on_session(self._session)
        self._list()

    def stopService(self) -> None:
        super().stopService()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        listing, self._listing = self._listing, None
        if listing is not None:
            listing.cancel()
        self._first_ended()

    def _session(self, state: SessionState) -> None:
        if state == "connected":
            self._list()  # a new session has no watch; an old one may have missed nothing, still

    # -- listing ------------------------------------------------------------------

    def _list(self) -> None:
        if not self.running:
            return
        if self._listing is not None:
            self._again = True
            return
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        self._again = False
        d = self._zookeeper.children(self._parent, watch=self._watched)
        self._listing = d
        d.addCallbacks(self._listed, self._list_failed, callbackArgs=(d,), errbackArgs=(d,))

    def _watched(self, event: Any) -> None:
        self._list()

    def _listed(self, names: list[str], d: Deferred[list[str]]) -> None:
        if self._listing is not d or not self.running:
            return
        self._listing = None
        if self.failures:
            self._log.info(
                "discovery: ZooKeeper answers again after {failures} failed listings",
                failures=self.failures,
            )
        self.listings += 1
        self.failures = 0
        self._retry = self._first_retry
        self._update([address for address in map(address_of, names) if address is not None])
        self._first_ended()
        if self._again:
            self._list()

    def _list_failed(self, reason: Failure, d: Deferred[list[str]]) -> None:
        if self._listing is not d or not self.running:
            return  # cancelled by stopService
        self._listing = None
        self.failures += 1
        delay = self._retry
        self._retry = min(self._retry * 2, self._max_retry)
        if self.failures == 1:
            self._log.warn(
                "discovery: listing {prefix} from ZooKeeper failed ({why}); keeping {count} "
                "known servers, retrying in {delay}s (then with backoff up to {max}s)",
                prefix=self.prefix,
                why=reason.getErrorMessage(),
                count=len(self._servers),
                delay=f"{delay:g}",
                max=f"{self._max_retry:g}",
            )
        else:
            self._log.debug(
                "discovery: listing from ZooKeeper failed again ({why}); retrying in {delay}s",
                why=reason.getErrorMessage(),
                delay=f"{delay:g}",
            )
        self._next = self._clock.callLater(delay, self._list)
        self._first_ended()

    def _update(self, addresses: list[str]) -> None:
        servers = sorted(set(addresses))
        if servers != self._servers:
            self._log.info(
                "discovery: ZooKeeper lists {servers}", servers=", ".join(servers) or "no servers"
            )
            self._change(servers)


__all__ = ["ZooKeeperDiscovery"]
