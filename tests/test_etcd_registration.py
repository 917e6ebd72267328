"""
EtcdRegistration over FakeEtcd on a Clock: the key put under a lease at
start, the lease renewed every third of the TTL, registered again under a new
lease when the old one is lost, backoff while etcd is unreachable, and the
lease revoked on stop (a stop completes when etcd is down too).
"""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc.errors import EtcdUnavailable
from txgeerpc.etcd import EtcdRegistration
from txgeerpc.etcd._keys import DEFAULT_PREFIX, server_key
from txgeerpc.testing import FakeEtcd

from ._helpers import checked_clock

ADDRESS = "tcp@127.0.0.1:7001"
KEY = server_key(DEFAULT_PREFIX, ADDRESS)


class RegistrationTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.clock.advance(1000)
        self.etcd = FakeEtcd(self.clock)
        self.addCleanup(self.etcd.close)  # its lease timers
        self.events: list[dict[str, Any]] = []
        self.patch(EtcdRegistration, "_log", Logger(observer=self.events.append))

    def registration(self, **options: Any) -> EtcdRegistration:
        registration = EtcdRegistration(self.etcd, ADDRESS, self.clock, **options)
        self.addCleanup(registration.stopService)
        return registration

    def logged(self, level: LogLevel) -> list[str]:
        return [formatEvent(event) for event in self.events if event["log_level"] is level]

    def stored(self, key: bytes = KEY) -> Any:
        return self.successResultOf(self.etcd.get(key))


class StartTests(RegistrationTestCase):
    def test_registers_under_a_lease_at_start(self) -> None:
        registration = self.registration(ttl=6)
        self.assertIsNone(registration.lease)
        registration.startService()
        self.assertEqual(self.etcd.requests, ["grant", "put"])
        kv = self.stored()
        self.assertIsNotNone(registration.lease)
        self.assertEqual(kv.lease, registration.lease)
        self.assertEqual(
            json.loads(kv.value),
            {"address": ADDRESS, "registered": self.clock.seconds(), "ttl": 6},
        )
        self.assertEqual(registration.registrations, 1)
        self.assertIn(f"{ADDRESS} registered as {KEY.decode()}", self.logged(LogLevel.info)[0])

    def test_overwrites_what_was_there(self) -> None:
        self.successResultOf(self.etcd.put(KEY, b"by hand"))
        registration = self.registration()
        registration.startService()
        kv = self.stored()
        self.assertEqual(kv.lease, registration.lease)
        self.assertEqual(json.loads(kv.value)["address"], ADDRESS)

    def test_address_changed_before_start(self) -> None:
        registration = EtcdRegistration(self.etcd, "tcp@127.0.0.1:0", self.clock, prefix="/p/")
        self.addCleanup(registration.stopService)
        registration.address = "tcp@127.0.0.1:4321"
        registration.startService()
        listed = self.successResultOf(self.etcd.get_prefix(b"/p/"))
        self.assertEqual([kv.key for kv in listed.kvs], [b"/p/tcp@127.0.0.1:4321"])

    def test_bad_arguments(self) -> None:
        for ttl in (0, -1, 2.5):
            self.assertRaises(
                ValueError,
                EtcdRegistration,
                self.etcd,
                ADDRESS,
                self.clock,
                ttl=ttl,  # type: ignore[arg-type]
            )
        self.assertRaises(ValueError, EtcdRegistration, self.etcd, ADDRESS, self.clock, prefix="")


class KeepAliveTests(RegistrationTestCase):
    def test_renewed_every_third_of_the_ttl(self) -> None:
        registration = self.registration(ttl=3)
        self.assertEqual(registration.period, 1.0)
        registration.startService()
        lease = registration.lease
        for second in range(1, 31):
            self.clock.advance(1)
            self.assertEqual(self.etcd.requests.count("keep_alive"), second)
        # Thirty seconds on a three-second lease: never expired, never re-granted.
        self.assertEqual(self.etcd.requests.count("grant"), 1)
        self.assertEqual(registration.lease, lease)
        self.assertEqual(self.stored().lease, lease)
        self.assertEqual(registration.renewals, 30)
        self.assertEqual(self.logged(LogLevel.warn), [])

    def test_period_floor(self) -> None:
        registration = self.registration(ttl=1)
        self.assertEqual(registration.period, 0.5)
        registration.startService()
        self.clock.pump([0.5] * 10)
        self.assertEqual(self.etcd.requests.count("keep_alive"), 10)
        self.assertIsNotNone(self.stored())

    def test_default_ttl(self) -> None:
        registration = self.registration()
        self.assertEqual((registration.ttl, registration.period), (10, 10 / 3))


class LeaseLostTests(RegistrationTestCase):
    def test_revoked_by_someone_else(self) -> None:
        registration = self.registration(ttl=3)
        registration.startService()
        first = registration.lease
        assert first is not None
        self.successResultOf(self.etcd.revoke(first))  # a registry DELETE does this
        self.assertIsNone(self.stored())
        self.clock.advance(1)  # the renewal hears the lease is gone: at once again
        self.assertEqual(self.etcd.requests[-3:], ["keep_alive", "grant", "put"])
        self.assertNotIn(registration.lease, (None, first))
        self.assertEqual(self.stored().lease, registration.lease)
        self.assertEqual(registration.registrations, 2)
        [warning] = self.logged(LogLevel.warn)
        self.assertIn(f"the lease of {ADDRESS} ({first:x}) is gone", warning)
        self.assertIn("registering again", warning)

    def test_etcd_unreachable_longer_than_the_ttl(self) -> None:
        registration = self.registration(ttl=3)
        registration.startService()
        first = registration.lease
        self.etcd.available = False
        self.clock.pump([0.25] * 40)  # 10 s: the lease expires on etcd's side
        self.etcd.available = True
        self.assertIsNone(self.stored())
        self.clock.pump([0.25] * 4)  # the next retry, at most a period later
        self.assertIsNotNone(registration.lease)
        self.assertNotEqual(registration.lease, first)
        self.assertEqual(self.stored().lease, registration.lease)
        self.assertTrue(any("is gone" in line for line in self.logged(LogLevel.warn)))

    def test_lease_gone_between_grant_and_put(self) -> None:
        registration = self.registration(ttl=3)
        real_put = self.etcd.put
        calls: list[int] = []

        def put(key: bytes, value: bytes, *, lease: int = 0) -> Deferred[int]:
            calls.append(lease)
            if len(calls) == 1:
                self.successResultOf(self.etcd.revoke(lease))
            return real_put(key, value, lease=lease)

        self.patch(self.etcd, "put", put)
        registration.startService()
        self.assertEqual(len(calls), 2)
        self.assertNotEqual(calls[0], calls[1])
        self.assertEqual(self.stored().lease, calls[1])
        self.assertEqual(registration.lease, calls[1])


class BackoffTests(RegistrationTestCase):
    def test_backoff_while_unavailable_then_recovers(self) -> None:
        self.etcd.available = False
        registration = self.registration(ttl=9)  # period 3 s: retries 1, 2, 3, 3...
        registration.startService()
        attempts = [self.clock.seconds()]
        for _ in range(6):
            attempts.append(self.next_request())
        gaps = [later - earlier for earlier, later in pairwise(attempts)]
        self.assertEqual(gaps, [1, 2, 3, 3, 3, 3])
        self.assertEqual(set(self.etcd.requests), {"grant"})
        self.assertEqual(registration.failures, 7)
        [warning] = self.logged(LogLevel.warn)  # once, not at every retry
        self.assertIn(f"granting a lease for {ADDRESS} failed", warning)
        self.assertIn("retrying in 1s, then with backoff up to every 3s", warning)

        self.etcd.available = True
        self.clock.advance(3)
        self.assertIsNotNone(self.stored())
        self.assertEqual(registration.failures, 0)
        self.assertIn("registered as", self.logged(LogLevel.info)[-1])

    def test_short_ttl_backs_off_from_a_third_of_the_period(self) -> None:
        registration = self.registration(ttl=6)  # period 2 s: first retry 2/3 s
        registration.startService()
        self.etcd.available = False
        times = [self.next_request()]  # the renewal at 2 s fails
        times.append(self.next_request())  # so does its retry
        self.etcd.available = True  # back within the TTL: same lease, same key
        times.append(self.next_request())
        self.assertEqual(self.etcd.requests, ["grant", "put"] + ["keep_alive"] * 3)
        self.assertEqual(times[0], 1002)  # at 2 s
        gaps = [later - earlier for earlier, later in pairwise(times)]
        self.assertEqual([round(gap, 9) for gap in gaps], [round(2 / 3, 9), round(4 / 3, 9)])
        self.assertEqual(registration.failures, 0)
        [warning] = self.logged(LogLevel.warn)
        self.assertIn(f"renewing the lease of {ADDRESS} failed", warning)
        self.assertIn("works again", self.logged(LogLevel.info)[-1])
        self.assertEqual(self.stored().lease, registration.lease)
        self.assertEqual(self.etcd.requests.count("grant"), 1)

    def next_request(self) -> float:
        """Advance the clock from timer to timer until a request is made; when."""
        before = len(self.etcd.requests)
        while len(self.etcd.requests) == before:
            due = min(call.getTime() for call in self.clock.getDelayedCalls())
            self.clock.advance(due - self.clock.seconds())
        return self.clock.seconds()


class FrozenMemberTests(RegistrationTestCase):
    """A member that takes a keep-alive and never answers: the etcd client
    gives up on it after its request timeout (5 s by default), longer than a
    short TTL."""

    def freeze_keep_alives(self, count: int, timeout: float = 5.0) -> list[Deferred[int]]:
        """The next ``count`` keep-alives fail after ``timeout`` seconds
        (cancelled before, they end at once)."""
        real_keep_alive = self.etcd.keep_alive
        frozen: list[Deferred[int]] = []

        def keep_alive(lease: int) -> Deferred[int]:
            if len(frozen) >= count:
                return real_keep_alive(lease)
            self.etcd.requests.append("keep_alive")
            d: Deferred[int] = Deferred(lambda _: timer.cancel())
            timer = self.clock.callLater(timeout, d.errback, EtcdUnavailable({"m": "timeout"}))
            frozen.append(d)
            return d

        self.patch(self.etcd, "keep_alive", keep_alive)
        return frozen

    def test_a_renewal_is_bounded_by_the_period(self) -> None:
        registration = self.registration(ttl=2)  # period 2/3 s, first retry 2/9 s
        registration.startService()
        lease = registration.lease
        frozen = self.freeze_keep_alives(1)
        for _ in range(100):  # 10 s, the lease never lapses
            self.clock.advance(0.1)
            self.assertIsNotNone(self.stored(), self.clock.seconds())
        self.assertTrue(frozen[0].called)  # given up on after the period
        self.assertEqual(self.etcd.requests.count("grant"), 1)
        self.assertEqual(registration.lease, lease)
        self.assertEqual(registration.failures, 0)
        [warning] = self.logged(LogLevel.warn)
        self.assertIn(
            f"renewing the lease of {ADDRESS} failed (no answer within 0.666667s)", warning
        )
        self.assertIn("works again", self.logged(LogLevel.info)[-1])

    def test_renewals_given_up_on_back_off_as_failures(self) -> None:
        registration = self.registration(ttl=9)  # period 3 s, first retry 1 s
        registration.startService()
        self.freeze_keep_alives(2)
        # The renewal at 3 is given up on at 6, its retry at 7 at 10, the
        # next goes out at 12 (backoff 1, then 2 s).
        times = [self.next_keep_alive() for _ in range(3)]
        self.assertEqual([time - 1000 for time in times], [3, 7, 12])
        self.assertEqual(registration.failures, 0)
        # Unanswered for longer than the TTL: the lease expired at 9.
        self.assertEqual(registration.registrations, 2)
        self.assertEqual(self.stored().lease, registration.lease)
        self.assertIn("renewing the lease of", self.logged(LogLevel.warn)[0])
        self.assertIn("is gone", self.logged(LogLevel.warn)[1])

    def next_keep_alive(self) -> float:
        before = self.etcd.requests.count("keep_alive")
        while self.etcd.requests.count("keep_alive") == before:
            due = min(call.getTime() for call in self.clock.getDelayedCalls())
            self.clock.advance(due - self.clock.seconds())
        return self.clock.seconds()


class KeyCheckTests(RegistrationTestCase):
    def test_read_back_every_third_renewal(self) -> None:
        registration = self.registration(ttl=3)
        registration.startService()
        self.clock.pump([1] * 30)
        self.assertEqual(self.etcd.requests[:2], ["grant", "put"])
        self.assertEqual(
            self.etcd.requests[2:], ["keep_alive", "keep_alive", "keep_alive", "get"] * 10
        )
        self.assertEqual(registration.registrations, 1)
        self.assertEqual(self.logged(LogLevel.warn), [])

    def test_a_key_deleted_by_hand_is_put_back(self) -> None:
        registration = self.registration(ttl=3)
        registration.startService()
        self.successResultOf(self.etcd.delete(KEY))
        self.clock.pump([1, 1])
        self.assertIsNone(self.stored())
        self.clock.advance(1)  # the third renewal reads it back
        self.assertEqual(self.etcd.requests[-3:], ["keep_alive", "get", "put"])
        self.assertEqual(self.stored().lease, registration.lease)
        self.assertEqual(registration.registrations, 2)
        [warning] = self.logged(LogLevel.warn)
        self.assertIn(
            f"the key of {ADDRESS} was deleted; putting it back under lease {registration.lease:x}",
            warning,
        )
        self.clock.advance(1)  # renewals go on as before
        self.assertEqual(self.etcd.requests[-1], "keep_alive")

    def test_a_key_overwritten_under_another_lease_is_put_back(self) -> None:
        registration = self.registration(ttl=3)
        registration.startService()
        other = self.successResultOf(self.etcd.grant(100))
        self.successResultOf(self.etcd.put(KEY, b"another process", lease=other))
        self.clock.pump([1, 1, 1])
        kv = self.stored()
        self.assertEqual(kv.lease, registration.lease)
        self.assertEqual(json.loads(kv.value)["address"], ADDRESS)
        [warning] = self.logged(LogLevel.warn)
        self.assertIn(f"was overwritten under another lease ({other:x})", warning)
        self.assertEqual(self.successResultOf(self.etcd.keep_alive(other)), 100)  # left alone

    def test_a_key_overwritten_without_a_lease_is_put_back(self) -> None:
        registration = self.registration(ttl=3)
        registration.startService()
        self.successResultOf(self.etcd.put(KEY, b"by hand"))
        self.clock.pump([1, 1, 1])
        self.assertEqual(self.stored().lease, registration.lease)
        self.assertIn("was overwritten without a lease", self.logged(LogLevel.warn)[0])

    def test_a_check_not_answered_holds_no_renewal_back(self) -> None:
        registration = self.registration(ttl=3)
        registration.startService()
        unanswered: list[Deferred[Any]] = []
        real_get = self.etcd.get

        def get(key: bytes) -> Deferred[Any]:
            if unanswered:
                return real_get(key)
            self.etcd.requests.append("get")
            unanswered.append(Deferred())
            return unanswered[0]

        self.patch(self.etcd, "get", get)
        self.clock.pump([1, 1, 1])  # the third renewal, at 3: its check hangs
        self.assertEqual(self.etcd.requests[-2:], ["keep_alive", "get"])
        self.clock.advance(1)  # given up on at 4, and the renewal goes out on time
        self.assertTrue(unanswered[0].called)
        self.assertEqual(self.etcd.requests[-1], "keep_alive")
        self.assertEqual(self.etcd.requests.count("keep_alive"), 4)
        self.assertEqual(registration.failures, 0)
        self.assertEqual(self.logged(LogLevel.warn), [])
        self.clock.pump([1, 1])  # the next check works
        self.assertEqual(self.etcd.requests[-2:], ["keep_alive", "get"])

    def test_a_failed_check_is_not_a_failed_renewal(self) -> None:
        registration = self.registration(ttl=3)
        registration.startService()
        self.clock.pump([1, 1])
        self.patch(self.etcd, "get", lambda key: fail(EtcdUnavailable({"m": "down"})))
        self.clock.advance(1)
        self.assertEqual((registration.failures, registration.registrations), (0, 1))
        self.assertEqual(self.logged(LogLevel.warn), [])
        self.clock.advance(1)
        self.assertEqual(self.etcd.requests.count("keep_alive"), 4)

    def test_stop_while_checking(self) -> None:
        registration = self.registration(ttl=3)
        registration.startService()
        self.clock.pump([1, 1])
        self.etcd.delay = 0.5
        self.clock.advance(1)  # the renewal is under way
        self.clock.advance(0.5)  # renewed; the check is under way
        self.assertEqual(self.etcd.requests[-1], "get")
        stopped = registration.stopService()
        self.clock.advance(0.5)
        self.successResultOf(stopped)
        self.assertEqual(self.etcd.requests[-1], "revoke")
        self.assertEqual(
            [call for call in self.clock.getDelayedCalls() if call.func != self.etcd._end_lease],
            [],
        )


class StopTests(RegistrationTestCase):
    def test_revokes_on_stop(self) -> None:
        registration = self.registration(ttl=3)
        registration.startService()
        lease = registration.lease
        self.clock.advance(1)
        self.successResultOf(registration.stopService())
        self.assertEqual(self.etcd.requests[-1], "revoke")
        self.assertIsNone(self.stored())
        self.assertIsNone(registration.lease)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIn(f"lease {lease:x} revoked", self.logged(LogLevel.info)[-1])
        # Stopping again does nothing more.
        self.successResultOf(registration.stopService())
        self.assertEqual(self.etcd.requests.count("revoke"), 1)

    def test_stop_waits_for_the_revoke_at_most_stop_timeout(self) -> None:
        # However many members the client tries, a stop ends in time.
        registration = EtcdRegistration(self.etcd, ADDRESS, self.clock, ttl=3, stop_timeout=2)
        registration.startService()
        self.etcd.delay = 60
        stopped = registration.stopService()
        self.clock.advance(1.9)
        self.assertNoResult(stopped)
        self.clock.advance(0.1)
        self.successResultOf(stopped)
        self.assertIn("could not revoke the lease", self.logged(LogLevel.warn)[-1])
        self.etcd.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_completes_when_etcd_is_down(self) -> None:
        registration = self.registration(ttl=3)
        registration.startService()
        self.etcd.available = False
        self.clock.advance(1)  # a renewal fails: a retry is scheduled
        self.assertNotEqual(self.clock.getDelayedCalls(), [])
        self.successResultOf(registration.stopService())
        self.assertEqual(self.etcd.requests[-1], "revoke")
        self.assertIn("could not revoke the lease", self.logged(LogLevel.warn)[-1])
        self.assertIn("expires after the TTL (3s)", self.logged(LogLevel.warn)[-1])
        self.assertEqual(
            [call for call in self.clock.getDelayedCalls() if call.func != self.etcd._end_lease],
            [],
        )

    def test_stop_while_a_request_is_under_way(self) -> None:
        self.etcd.delay = 2.0
        registration = self.registration(ttl=3)
        registration.startService()
        self.clock.advance(2)  # granted; the put is under way
        self.assertEqual(self.etcd.requests, ["grant", "put"])
        lease = registration.lease
        stopped = registration.stopService()
        self.assertNoResult(stopped)
        self.clock.advance(2)
        self.successResultOf(stopped)
        self.assertEqual(self.etcd.requests, ["grant", "put", "revoke"])
        self.etcd.delay = 0
        self.assertIsNone(self.stored())  # the put landed, the revoke took it away
        self.assertFalse(self.successResultOf(self.etcd.revoke(lease)))  # type: ignore[arg-type]

    def test_stop_before_any_lease(self) -> None:
        self.etcd.available = False
        registration = self.registration()
        registration.startService()
        self.successResultOf(registration.stopService())
        self.assertEqual(self.etcd.requests, ["grant"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restart(self) -> None:
        registration = self.registration(ttl=3)
        registration.startService()
        self.successResultOf(registration.stopService())
        registration.startService()
        self.assertEqual(self.stored().lease, registration.lease)
        self.assertEqual(registration.registrations, 2)
