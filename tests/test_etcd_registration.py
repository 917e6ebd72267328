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

from twisted.internet.defer import Deferred
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

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
