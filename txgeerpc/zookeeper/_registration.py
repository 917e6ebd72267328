"""
Direct registration on ZooKeeper: a server keeps its advertised address as an
ephemeral node of its session, so it disappears within the session timeout
when the server dies, and at once when it stops cleanly (the node is deleted,
then the session closed).

The node is the one the registry store uses (:mod:`._keys`), so a
``twistd geerpc-registry --zookeeper`` on the same ensemble lists the server
too.

- At start the node is created (with its missing parents).  A node already
  there from another session (this address registered by a process that
  died a moment ago, its session not expired yet) is deleted and created
  again as this session's.
- The node is then watched: deleted by hand (or by a registry's
  ``DELETE``), it is created again, with a warning.
- The session expiring (ZooKeeper unreachable for longer than the session
  timeout) deletes the node; when kazoo's new session is up, the node is
  created again.  Any reconnection checks the node.
- A failed request is retried with backoff (0.5 s doubling, up to 5 s), for
  ever; a warning is logged at the first failure, and a line when it works
  again.
- On a clean stop the node is deleted (if it is this session's).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..interfaces import IRegistration
from ._client import SessionState, ZooKeeperClient
from ._keys import DEFAULT_PREFIX, check_prefix, registration_value, server_path

DEFAULT_STOP_TIMEOUT = 5.0
"""Seconds a stop waits for ZooKeeper to delete the node at most (then the
session's close, or its expiry, deletes it)."""
FIRST_RETRY = 0.5
MAX_RETRY = 5.0
_ATTEMPTS = 3
"""Rounds one registration tries before it counts as failed (a node that
keeps appearing and vanishing under it)."""


@implementer(IRegistration)
class ZooKeeperRegistration(Service):
    """Keeps ``address`` registered in ZooKeeper as an ephemeral node while
    the service runs.

    :param zookeeper: the client (not closed by this service).
    :param address: the ``proto@addr`` to register; may be changed until the
        service starts (``twistd geerpc`` sets the port it listens on).
    :param clock: for the retry timer, and the time written in the node.
    :param prefix: the parent path of the entries.
    :raises ValueError: ``prefix`` is not an absolute path.

    :ivar registrations: how many times the node was created.
    :ivar failures: attempts failed in a row.
    """

    _log = Logger()

    def __init__(
        self,
        zookeeper: ZooKeeperClient,
        address: str,
        clock: IReactorTime,
        *,
        prefix: str = DEFAULT_PREFIX,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        self._zookeeper = zookeeper
        self.address = address
        self._clock = clock
        self.prefix = check_prefix(prefix)
        self.stop_timeout = stop_timeout
        self._next: IDelayedCall | None = None
        self._pending: Deferred[Any] | None = None
        self._again = False
        self._retry = FIRST_RETRY
        self._unsubscribe: Any = None
        self.registrations = 0
        self.failures = 0
        self.failures_total = 0
        """Failed attempts since the registration was made."""

    @property
    def counts(self) -> dict[str, int]:
        """``heartbeats`` (the node created: its session keeps it, nothing is
        renewed) and ``heartbeat_failures`` (attempts that failed), since it
        was made: what :class:`txgeerpc.metrics.RegistrationCollector`
        exports."""
        return {"heartbeats": self.registrations, "heartbeat_failures": self.failures_total}

    @property
    def advertise(self) -> str:
        """The :attr:`address`."""
        return self.address

    @advertise.setter
    def advertise(self, address: str) -> None:
        self.address = address

    @property
    def path(self) -> str:
        """The node the address is registered as."""
        return server_path(self.prefix, self.address)

    def startService(self) -> None:
        super().startService()
        self._retry = FIRST_RETRY
        self.failures = 0
        self._unsubscribe = self._zookeeper.on_session(self._session)
        self._step()

    def _session(self, state: SessionState) -> None:
        if state == "connected":
            self._step()

    def _watched(self, event: Any) -> None:
        if self.running and getattr(event, "type", None) == "DELETED":
            self._log.warn(
                "zookeeper: the node of {address} was deleted; registering again",
                address=self.address,
            )
        self._step()

    # -- the loop: make sure the node is this session's, and watch it ---------

    def _step(self) -> None:
        if not self.running:
            return
        if self._pending is not None:
            self._again = True
            return
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        self._again = False
        d = Deferred.fromCoroutine(self._ensure())
        self._pending = d
        d.addCallbacks(self._done, self._failed, callbackArgs=(d,), errbackArgs=(d,))

    async def _ensure(self) -> bool:
        """Make the node this session's and watch it; True if created now."""
        zookeeper = self._zookeeper
        path = self.path
        for _ in range(_ATTEMPTS):
            found = await zookeeper.get(path, watch=self._watched)
            if found is not None:
                _, stat = found
                if stat.ephemeral_owner == zookeeper.session_id:
                    return False
                what = (
                    f"ephemeral, of session {stat.ephemeral_owner:x}"
                    if stat.ephemeral_owner
                    else "persistent (a registry's entry)"
                )
                self._log.info(
                    "zookeeper: replacing the node of {address} ({what})",
                    address=self.address,
                    what=what,
                )
                await zookeeper.delete(path, stat.version)
            value = registration_value(self.address, self._clock.seconds())
            if await zookeeper.create(path, value, ephemeral=True):
                # Watch the node just made (the get above watched nothing).
                await zookeeper.exists(path, watch=self._watched)
                return True
        raise RuntimeError(f"the node of {self.address} kept changing under the registration")

    def _done(self, created: bool, d: Deferred[Any]) -> None:
        if self._pending is d:
            self._pending = None
        if not self.running:
            return
        if created:
            self.registrations += 1
            self._log.info(
                "zookeeper: {address} registered as {path} (session {session:x})",
                address=self.address,
                path=self.path,
                session=self._zookeeper.session_id,
            )
        elif self.failures:
            self._log.info("zookeeper: registering {address} works again", address=self.address)
        self.failures = 0
        self._retry = FIRST_RETRY
        if self._again:
            self._step()

    def _failed(self, reason: Failure, d: Deferred[Any]) -> None:
        if self._pending is d:
            self._pending = None
        if not self.running:
            return
        self.failures += 1
        self.failures_total += 1
        delay = self._retry
        self._retry = min(self._retry * 2, MAX_RETRY)
        if self.failures == 1:
            self._log.warn(
                "zookeeper: registering {address} failed ({why}); retrying in {delay}s, then "
                "with backoff up to every {max}s",
                address=self.address,
                why=reason.getErrorMessage(),
                delay=f"{delay:g}",
                max=f"{MAX_RETRY:g}",
            )
        else:
            self._log.debug(
                "zookeeper: registering {address} failed again ({why}); retrying in {delay}s",
                address=self.address,
                why=reason.getErrorMessage(),
                delay=f"{delay:g}",
            )
        self._next = self._clock.callLater(delay, self._step)

    # -- stop: delete the node ----------------------------------------------------

    def stopService(self) -> Deferred[None]:
        """Stop keeping the node, and delete it if it is this session's.

        :returns: a Deferred firing with None once ZooKeeper answered, or
            after ``stop_timeout`` seconds (logged: closing the session
            deletes the node anyway).  It never fails.
        """
        if not self.running:
            return succeed(None)
        super().stopService()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        address, path = self.address, self.path
        d = Deferred.fromCoroutine(self._delete_own(path))
        d.addTimeout(self.stop_timeout, self._clock)

        def deleted(found: bool) -> None:
            if found:
                self._log.info(
                    "zookeeper: {address} deregistered ({path} deleted)", address=address, path=path
                )
            else:
                self._log.info("zookeeper: the node of {address} was already gone", address=address)

        def not_deleted(reason: Failure) -> None:
            self._log.warn(
                "zookeeper: could not delete the node of {address} ({why}); it goes with the "
                "session",
                address=address,
                why=reason.getErrorMessage(),
            )

        return d.addCallbacks(deleted, not_deleted)

    async def _delete_own(self, path: str) -> bool:
        found = await self._zookeeper.get(path)
        if found is None or found[1].ephemeral_owner != self._zookeeper.session_id:
            return False
        return await self._zookeeper.delete(path, found[1].version)


__all__ = ["ZooKeeperRegistration"]
