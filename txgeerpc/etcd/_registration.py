"""
Direct registration on etcd: a server keeps its advertised address as a key
under a lease it renews, so it disappears within the lease's TTL when it dies,
and at once when it stops cleanly (the lease is revoked).

The key is the one the registry store uses (:mod:`._keys`), so a
``twistd geerpc-registry --etcd`` on the same cluster lists the server too.

The rules follow :class:`~txgeerpc.registry.Heartbeat`'s:

- at start a lease of ``ttl`` seconds is granted and the key put under it
  (overwriting whatever was there);
- the lease is renewed every third of the TTL (:data:`MIN_PERIOD` at least);
  a renewal not answered within that period is given up on and counts as
  failed, so one request cannot hold the renewals back for the etcd
  client's whole request timeout (5 s by default, longer than the TTL of a
  short lease); the :class:`~txgeerpc.etcd.EtcdClient` sends the retry to
  the next member, so a member that stops answering without closing its
  connections (frozen, partitioned) does not let the lease lapse;
- every :data:`CHECK_EVERY` renewals (about once per TTL) the key is read
  back: deleted by hand, or overwritten under another lease (another
  process registering the same address), it is put back under this
  server's lease, with a warning;
- when etcd says the lease is gone (it was unreachable for longer than the
  TTL, or someone revoked the lease), the server registers again under a new
  lease;
- a failed request is retried with backoff (1 s or a third of the period if
  less, doubling, up to the period), for ever; a warning is logged at the
  first failure, and a line when it works again;
- on a clean stop the lease is revoked, which deletes the key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import EtcdError
from ..interfaces import IEtcd, IRegistration
from ._api import KeyValue
from ._gateway import NOT_FOUND
from ._keys import DEFAULT_PREFIX, check_prefix, registration_value, server_key

DEFAULT_TTL = 10
"""Seconds a server's key outlives its last lease renewal."""
DEFAULT_STOP_TIMEOUT = 5.0
"""Seconds a stop waits for etcd to revoke the lease at most (however many
members it has to try): then the key expires after its TTL."""
MIN_PERIOD = 0.5
"""Seconds between lease renewals at least."""
FIRST_RETRY = 1.0
CHECK_EVERY = 3
"""Renewals between two readings of the key (about one per TTL)."""


@implementer(IRegistration)
class EtcdRegistration(Service):
    """Keeps ``address`` registered in ``etcd`` under a lease of ``ttl``
    seconds while the service runs.

    :param etcd: the cluster (an :class:`~txgeerpc.etcd.EtcdClient`, or a
        :class:`~txgeerpc.testing.FakeEtcd`); not closed by this service.
    :param address: the ``proto@addr`` to register; may be changed until the
        service starts (``twistd geerpc`` sets the port it listens on).
    :param clock: for the renewal and retry timers, and the time written in
        the key's value.
    :param ttl: seconds the key outlives the server (1 or more).
    :param prefix: the key prefix (the registry store's, by default).
    :raises ValueError: ``ttl`` is less than 1, or ``prefix`` is empty.

    :ivar lease: the lease the key is under (None when there is none).
    :ivar registrations: how many times the key was put (1 + each
        re-registration after the lease was lost).
    :ivar failures: requests failed in a row.
    """

    _log = Logger()

    def __init__(
        self,
        etcd: IEtcd,
        address: str,
        clock: IReactorTime,
        *,
        ttl: int = DEFAULT_TTL,
        prefix: str = DEFAULT_PREFIX,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        if not isinstance(ttl, int) or ttl < 1:
            raise ValueError(f"a registration TTL is a whole number of seconds, 1 or more: {ttl!r}")
        self._etcd = etcd
        self.address = address
        self._clock = clock
        self.ttl = ttl
        self.stop_timeout = stop_timeout
        """Seconds :meth:`stopService` waits for the revoke at most."""
        self.prefix = check_prefix(prefix)
        self.period = max(ttl / 3, MIN_PERIOD)
        """Seconds between lease renewals."""
        self.lease: int | None = None
        self._registered = False  # the key is put under self.lease
        self._next: IDelayedCall | None = None
        self._pending: Deferred[Any] | None = None
        self._retry = self._first_retry()
        self.registrations = 0
        self.renewals = 0
        self.failures = 0
        """Failures in a row (0 once a step works again)."""
        self.failures_total = 0
        """Failures since the registration was made."""

    @property
    def counts(self) -> dict[str, int]:
        """``heartbeats`` (registrations and lease renewals that worked) and
        ``heartbeat_failures`` (steps that failed), since it was made: what
        :class:`txgeerpc.metrics.RegistrationCollector` exports."""
        return {
            "heartbeats": self.registrations + self.renewals,
            "heartbeat_failures": self.failures_total,
        }

    @property
    def advertise(self) -> str:
        """The :attr:`address` (the name every
        :class:`~txgeerpc.interfaces.IRegistration` gives it)."""
        return self.address

    @advertise.setter
    def advertise(self, address: str) -> None:
        self.address = address

    @property
    def key(self) -> bytes:
        """The key the address is registered under."""
        return server_key(self.prefix, self.address)

    def _first_retry(self) -> float:
        return min(FIRST_RETRY, self.period / 3)

    def startService(self) -> None:
        super().startService()
        self._retry = self._first_retry()
        self.failures = 0
        self._step()

    # -- the loop: grant, put, then renew ------------------------------------------

    def _step(self) -> None:
        """The next request: a lease if there is none, the key if it is not
        put under it yet, else a renewal."""
        self._next = None
        if not self.running:
            return
        if self.lease is None:
            self._send(self._etcd.grant(self.ttl), self._granted)
        elif not self._registered:
            value = registration_value(self.address, self._clock.seconds(), self.ttl)
            self._send(self._etcd.put(self.key, value, lease=self.lease), self._put)
        else:
            renewal = self._etcd.keep_alive(self.lease)
            # No longer than the period: the lease must not lapse while one
            # member keeps the request for the client's whole request timeout.
            renewal.addTimeout(self.period, self._clock)
            self._send(renewal, self._renewed)

    def _send(self, d: Deferred[Any], answered: Callable[[Any], None]) -> None:
        self._pending = d
        d.addCallbacks(self._answered, self._failed, callbackArgs=(d, answered), errbackArgs=(d,))

    def _answered(self, result: Any, d: Deferred[Any], answered: Callable[[Any], None]) -> None:
        if self._pending is d:
            self._pending = None
        if self.running:  # else: answered after stopService
            answered(result)

    def _granted(self, lease: int) -> None:
        self.lease = lease
        self._registered = False
        self._step()  # the put, at once

    def _put(self, _revision: int) -> None:
        self._registered = True
        self.registrations += 1
        self._log.info(
            "etcd: {address} registered as {key} (lease {lease:x}, TTL {ttl}s)",
            address=self.address,
            key=self.key.decode("utf-8", "replace"),
            lease=self.lease,
            ttl=self.ttl,
        )
        self._worked()
        self._schedule(self.period)

    def _renewed(self, ttl: int) -> None:
        if ttl <= 0:
            self._lease_lost("etcd says it has expired or was revoked")
            return
        self.renewals += 1
        if self.failures:
            self._log.info(
                "etcd: renewing the lease of {address} works again", address=self.address
            )
        self._worked()
        if self.renewals % CHECK_EVERY == 0:
            self._check()
        else:
            self._schedule(self.period)

    # -- the key, read back now and then ------------------------------------------

    def _check(self) -> None:
        """Read the key back after a renewal; the next renewal still comes a
        period after this one (a check not answered within it is dropped)."""
        renewed = self._clock.seconds()
        d: Deferred[KeyValue | None] = self._etcd.get(self.key)
        d.addTimeout(self.period, self._clock)
        self._pending = d
        d.addCallbacks(
            self._checked,
            self._check_failed,
            callbackArgs=(d, renewed),
            errbackArgs=(d, renewed),
        )

    def _checked(self, kv: KeyValue | None, d: Deferred[Any], renewed: float) -> None:
        if self._pending is d:
            self._pending = None
        if not self.running:
            return
        if kv is not None and kv.lease == self.lease:
            self._schedule(self._rest_of_period(renewed))
            return
        if kv is None:
            what = "deleted"
        elif kv.lease:
            what = f"overwritten under another lease ({kv.lease:x})"
        else:
            what = "overwritten without a lease"
        self._log.warn(
            "etcd: the key of {address} was {what}; putting it back under lease {lease:x}",
            address=self.address,
            what=what,
            lease=self.lease or 0,
        )
        self._registered = False
        self._step()  # the put, at once

    def _check_failed(self, reason: Failure, d: Deferred[Any], renewed: float) -> None:
        if self._pending is d:
            self._pending = None
        if not self.running:
            return  # cancelled by stopService
        # The renewal worked; the next one says whether etcd is reachable.
        self._log.debug(
            "etcd: reading the key of {address} back failed ({why}); read again later",
            address=self.address,
            why=self._why(reason),
        )
        self._schedule(self._rest_of_period(renewed))

    def _rest_of_period(self, since: float) -> float:
        return max(0.0, self.period - (self._clock.seconds() - since))

    def _lease_lost(self, why: str) -> None:
        self._log.warn(
            "etcd: the lease of {address} ({lease:x}) is gone ({why}); registering again",
            address=self.address,
            lease=self.lease or 0,
            why=why,
        )
        self.lease = None
        self._registered = False
        self._step()

    def _worked(self) -> None:
        self.failures = 0
        self._retry = self._first_retry()

    def _failed(self, reason: Failure, d: Deferred[Any]) -> None:
        if self._pending is d:
            self._pending = None
        if not self.running:
            return  # cancelled by stopService, or answered after it
        if (
            self.lease is not None
            and not self._registered
            and isinstance(reason.value, EtcdError)
            and reason.value.code == NOT_FOUND  # "requested lease not found"
        ):
            # Granted, then gone before the put (a long outage, or revoked).
            self._lease_lost("etcd no longer knows it")
            return
        self.failures += 1
        self.failures_total += 1
        delay = self._retry
        self._retry = min(self._retry * 2, self.period)
        if self.failures == 1:
            self._log.warn(
                "etcd: {what} {address} failed ({why}); retrying in {delay}s, then "
                "with backoff up to every {period}s",
                what=self._doing(),
                address=self.address,
                why=self._why(reason),
                delay=f"{delay:g}",
                period=f"{self.period:g}",
            )
        else:
            self._log.debug(
                "etcd: {what} {address} failed again ({why}); retrying in {delay}s",
                what=self._doing(),
                address=self.address,
                why=self._why(reason),
                delay=f"{delay:g}",
            )
        self._schedule(delay)

    def _why(self, reason: Failure, within: float | None = None) -> str:
        if reason.check(defer.TimeoutError):
            return f"no answer within {within or self.period:g}s"
        return reason.getErrorMessage()

    def _doing(self) -> str:
        if self.lease is None:
            return "granting a lease for"
        if not self._registered:
            return "registering"
        return "renewing the lease of"

    def _schedule(self, delay: float) -> None:
        # callLater, not a TimerService: the next step comes after a period,
        # a backoff that doubles, or at once (a lost lease), step by step.
        if self.running:
            self._next = self._clock.callLater(delay, self._step)

    # -- stop: revoke ----------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        """Stop renewing and revoke the lease (deleting the key).

        :returns: a Deferred firing with None once etcd answered the revoke
            or failed to, within ``stop_timeout`` seconds (a failure is
            logged: the key then expires after its TTL).  It never fails.
        """
        if not self.running:  # stopped already (revoking once is enough)
            return succeed(None)
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        lease, self.lease = self.lease, None
        self._registered = False
        if lease is None:
            return succeed(None)
        address = self.address
        d = self._etcd.revoke(lease)
        d.addTimeout(self.stop_timeout, self._clock)

        def revoked(found: bool) -> None:
            if found:
                self._log.info(
                    "etcd: {address} deregistered (lease {lease:x} revoked)",
                    address=address,
                    lease=lease,
                )
            else:
                self._log.info(
                    "etcd: the lease of {address} ({lease:x}) was already gone",
                    address=address,
                    lease=lease,
                )

        def not_revoked(reason: Failure) -> None:
            self._log.warn(
                "etcd: could not revoke the lease of {address} ({why}); its key expires "
                "after the TTL ({ttl}s)",
                address=address,
                why=self._why(reason, self.stop_timeout),
                ttl=self.ttl,
            )

        return d.addCallbacks(revoked, not_revoked)


__all__ = ["DEFAULT_TTL", "EtcdRegistration"]
