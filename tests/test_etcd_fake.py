"""FakeEtcd: etcd's revisions, leases on a Clock, watches, failure injection."""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc.errors import EtcdCompacted, EtcdError, EtcdUnavailable
from txgeerpc.etcd import KeyValue, WatchEvent
from txgeerpc.interfaces import IEtcd
from txgeerpc.testing import FakeEtcd

from ._helpers import checked_clock

Seen = list[tuple[list[WatchEvent], int]]


class FakeEtcdTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.fake = FakeEtcd(self.clock)
        self.etcd: IEtcd = self.fake
        self.addCleanup(self.fake.close)

    def watch(self, prefix: bytes, start_revision: int) -> tuple[Seen, object]:
        seen: Seen = []
        watch = self.etcd.watch_prefix(prefix, start_revision, lambda e, r: seen.append((e, r)))
        return seen, watch


def put(kv: KeyValue) -> WatchEvent:
    return WatchEvent("put", kv)


def deleted(key: bytes, revision: int) -> WatchEvent:
    return WatchEvent("delete", KeyValue(key, mod_revision=revision))


class KeyValueTests(FakeEtcdTestCase):
    def test_revisions_and_versions(self) -> None:
        self.assertEqual(self.fake.revision, 1)
        self.assertEqual(self.successResultOf(self.etcd.put(b"a", b"1")), 2)
        self.assertEqual(self.successResultOf(self.etcd.put(b"b", b"x")), 3)
        self.assertEqual(self.successResultOf(self.etcd.put(b"a", b"2")), 4)
        self.assertEqual(
            self.successResultOf(self.etcd.get(b"a")),
            KeyValue(b"a", b"2", create_revision=2, mod_revision=4, version=2),
        )
        self.assertEqual(self.successResultOf(self.etcd.delete(b"a")), 1)
        self.assertEqual(self.fake.revision, 5)
        self.assertIsNone(self.successResultOf(self.etcd.get(b"a")))
        # Deleting nothing writes nothing.
        self.assertEqual(self.successResultOf(self.etcd.delete(b"a")), 0)
        self.assertEqual(self.fake.revision, 5)
        # Deletion resets the version.
        self.assertEqual(self.successResultOf(self.etcd.put(b"a", b"3")), 6)
        self.assertEqual(
            self.successResultOf(self.etcd.get(b"a")),
            KeyValue(b"a", b"3", create_revision=6, mod_revision=6, version=1),
        )

    def test_prefix_range_sorted_and_count(self) -> None:
        for key in [b"s/c", b"s/a", b"t/a", b"s/b", b"r"]:
            self.etcd.put(key, key)
        found = self.successResultOf(self.etcd.get_prefix(b"s/"))
        self.assertEqual([kv.key for kv in found.kvs], [b"s/a", b"s/b", b"s/c"])
        self.assertEqual(found.revision, 6)
        self.assertEqual(self.successResultOf(self.etcd.count_prefix(b"s/")), 3)
        self.assertEqual(self.successResultOf(self.etcd.count_prefix(b"u/")), 0)

    def test_empty_key_refused(self) -> None:
        failure = self.failureResultOf(self.etcd.get_prefix(b""), EtcdError)
        self.assertEqual(failure.value.code, 3)
        self.failureResultOf(self.etcd.put(b"", b"v"), EtcdError)

    def test_create_if_absent(self) -> None:
        self.assertIsNone(self.successResultOf(self.etcd.create(b"k", b"first")))
        self.assertEqual(self.fake.revision, 2)
        existing = self.successResultOf(self.etcd.create(b"k", b"second"))
        self.assertEqual(existing, KeyValue(b"k", b"first", 2, 2, 1))
        self.assertEqual(self.fake.revision, 2)
        # The lease is only checked when the put branch runs, as in etcd.
        self.assertEqual(self.successResultOf(self.etcd.create(b"k", b"x", lease=99)), existing)
        self.failureResultOf(self.etcd.create(b"other", b"x", lease=99), EtcdError)

    def test_requests_recorded(self) -> None:
        self.etcd.put(b"k", b"v")
        self.etcd.get(b"k")
        self.etcd.watch_prefix(b"k", 0, lambda e, r: None)
        self.assertEqual(self.fake.requests, ["put", "get", "watch_prefix"])


class LeaseTests(FakeEtcdTestCase):
    def test_put_with_missing_lease(self) -> None:
        failure = self.failureResultOf(self.etcd.put(b"k", b"v", lease=12345), EtcdError)
        self.assertEqual(
            (failure.value.message, failure.value.code), ("requested lease not found", 5)
        )
        self.assertEqual(self.fake.revision, 1)

    def test_expiry_deletes_keys_in_one_revision_and_emits_deletes(self) -> None:
        lease = self.successResultOf(self.etcd.grant(10))
        other = self.successResultOf(self.etcd.grant(100))
        self.assertGreater(other, lease)
        self.etcd.put(b"s/b", b"1", lease=lease)
        self.etcd.put(b"s/a", b"2", lease=lease)
        self.etcd.put(b"s/c", b"3", lease=other)
        kv = self.successResultOf(self.etcd.get(b"s/a"))
        assert kv is not None
        self.assertEqual(kv.lease, lease)
        seen, _ = self.watch(b"s/", 0)
        self.clock.advance(9.9)
        self.assertEqual(seen, [])
        self.clock.advance(0.1)
        self.assertEqual(seen, [([deleted(b"s/a", 5), deleted(b"s/b", 5)], 5)])
        self.assertEqual(self.successResultOf(self.etcd.count_prefix(b"s/")), 1)
        self.assertEqual(self.successResultOf(self.etcd.keep_alive(lease)), 0)
        self.assertFalse(self.successResultOf(self.etcd.revoke(lease)))

    def test_keep_alive_extends(self) -> None:
        lease = self.successResultOf(self.etcd.grant(10))
        self.etcd.put(b"k", b"v", lease=lease)
        self.clock.advance(8)
        self.assertEqual(self.successResultOf(self.etcd.keep_alive(lease)), 10)
        self.clock.advance(8)
        self.assertIsNotNone(self.successResultOf(self.etcd.get(b"k")))
        self.clock.advance(2)
        self.assertIsNone(self.successResultOf(self.etcd.get(b"k")))

    def test_put_moves_key_off_its_lease(self) -> None:
        lease = self.successResultOf(self.etcd.grant(10))
        self.etcd.put(b"k", b"v", lease=lease)
        self.etcd.put(b"k", b"w")
        self.clock.advance(10)
        self.assertEqual(self.fake.revision, 3)
        self.assertIsNotNone(self.successResultOf(self.etcd.get(b"k")))

    def test_revoke(self) -> None:
        lease = self.successResultOf(self.etcd.grant(10))
        empty = self.successResultOf(self.etcd.grant(10))
        self.etcd.put(b"k", b"v", lease=lease)
        seen, _ = self.watch(b"k", 0)
        self.assertTrue(self.successResultOf(self.etcd.revoke(lease)))
        self.assertEqual(seen, [([deleted(b"k", 3)], 3)])
        self.assertFalse(self.successResultOf(self.etcd.revoke(lease)))
        # Revoking a lease with no keys writes nothing.
        self.assertTrue(self.successResultOf(self.etcd.revoke(empty)))
        self.assertEqual(self.fake.revision, 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_grant_refuses_zero_ttl(self) -> None:
        self.assertRaises(ValueError, self.etcd.grant, 0)


class WatchTests(FakeEtcdTestCase):
    def test_replay_then_live(self) -> None:
        self.etcd.put(b"s/a", b"1")  # 2
        self.etcd.put(b"t/a", b"1")  # 3
        self.etcd.put(b"s/b", b"1")  # 4
        self.etcd.delete(b"s/a")  # 5
        seen: Seen = []
        watch = self.etcd.watch_prefix(b"s/", 3, lambda e, r: seen.append((e, r)))
        kv_b = KeyValue(b"s/b", b"1", 4, 4, 1)
        self.assertEqual(seen, [([put(kv_b)], 4), ([deleted(b"s/a", 5)], 5)])
        self.assertEqual(watch.revision, 5)
        del seen[:]
        self.etcd.put(b"t/b", b"1")  # 6: not watched
        self.etcd.put(b"s/b", b"2")  # 7
        self.assertEqual(seen, [([put(KeyValue(b"s/b", b"2", 4, 7, 2))], 7)])
        self.assertEqual(watch.revision, 7)

    def test_initial_revision(self) -> None:
        watch = self.etcd.watch_prefix(b"s/", 10, lambda e, r: None)
        self.assertEqual(watch.revision, 9)
        watch = self.etcd.watch_prefix(b"s/", 0, lambda e, r: None)
        self.assertEqual(watch.revision, 1)

    def test_stop(self) -> None:
        seen: Seen = []
        watch = self.etcd.watch_prefix(b"", 0, lambda e, r: seen.append((e, r)))
        watch.stop()
        self.assertIsNone(self.successResultOf(watch.done))
        watch.stop()
        self.etcd.put(b"k", b"v")
        self.assertEqual(seen, [])

    def test_listener_writes_keep_order(self) -> None:
        revisions: list[int] = []

        def listener(events: list[WatchEvent], revision: int) -> None:
            revisions.append(revision)
            if events[0].kv.key == b"a":
                self.etcd.put(b"b", b"")

        self.etcd.watch_prefix(b"", 0, listener)
        later: list[int] = []
        self.etcd.watch_prefix(b"", 0, lambda e, r: later.append(r))
        self.etcd.put(b"a", b"")
        self.assertEqual((revisions, later), ([2, 3], [2, 3]))

    def test_compaction_fails_old_watches(self) -> None:
        for n in range(5):
            self.etcd.put(b"k", b"%d" % n)  # 2..6
        self.fake.compact(4)
        watch = self.etcd.watch_prefix(b"k", 3, lambda e, r: None)
        failure = self.failureResultOf(watch.done, EtcdCompacted)
        self.assertEqual(failure.value.compact_revision, 4)
        seen, _ = self.watch(b"k", 4)
        self.assertEqual([r for _, r in seen], [4, 5, 6])
        self.assertRaises(ValueError, self.fake.compact, 7)


class AvailabilityTests(FakeEtcdTestCase):
    def test_requests_fail(self) -> None:
        self.fake.available = False
        failure = self.failureResultOf(self.etcd.get(b"k"), EtcdUnavailable)
        self.assertEqual(failure.value.reasons, {"fake": "unavailable"})
        self.failureResultOf(self.etcd.put(b"k", b"v"), EtcdUnavailable)
        self.fake.available = True
        self.successResultOf(self.etcd.put(b"k", b"v"))

    def test_watch_resumes_with_outage_events_in_order(self) -> None:
        first = self.successResultOf(self.etcd.grant(5))
        second = self.successResultOf(self.etcd.grant(8))
        self.etcd.put(b"s/a", b"", lease=first)
        self.etcd.put(b"s/b", b"", lease=second)
        seen, _ = self.watch(b"s/", 0)
        self.fake.available = False
        self.failureResultOf(self.etcd.keep_alive(first), EtcdUnavailable)
        self.clock.advance(10)
        self.assertEqual(seen, [])
        self.fake.available = True
        self.assertEqual(seen, [([deleted(b"s/a", 4)], 4), ([deleted(b"s/b", 5)], 5)])

    def test_resuming_from_compacted_revision_fails(self) -> None:
        first = self.successResultOf(self.etcd.grant(5))
        second = self.successResultOf(self.etcd.grant(6))
        self.etcd.put(b"s/a", b"", lease=first)
        self.etcd.put(b"s/b", b"", lease=second)
        watch = self.etcd.watch_prefix(b"s/", 4, lambda e, r: None)
        self.fake.available = False
        self.clock.advance(6)  # revisions 4 and 5
        self.fake.compact(5)
        self.fake.available = True
        self.failureResultOf(watch.done, EtcdCompacted)

    def test_live_watch_survives_compaction(self) -> None:
        seen, _ = self.watch(b"s/", 0)
        self.etcd.put(b"t/a", b"")
        self.fake.compact(self.fake.revision)
        self.etcd.put(b"s/a", b"")
        self.assertEqual([r for _, r in seen], [3])


class DelayAndCloseTests(FakeEtcdTestCase):
    def test_delay(self) -> None:
        self.fake.delay = 1.0
        d = self.etcd.put(b"k", b"v")
        self.assertNoResult(d)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(d), 2)
        cancelled = self.etcd.get(b"k")
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        pending = self.etcd.get(b"k")
        self.successResultOf(self.etcd.close())
        self.failureResultOf(pending, EtcdError)

    def test_close(self) -> None:
        lease = self.successResultOf(self.etcd.grant(10))
        self.etcd.put(b"k", b"v", lease=lease)
        watch = self.etcd.watch_prefix(b"k", 0, lambda e, r: None)
        self.successResultOf(self.etcd.close())
        self.assertIsNone(self.successResultOf(watch.done))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        failure = self.failureResultOf(self.etcd.get(b"k"), EtcdError)
        self.assertEqual(failure.value.message, "client closed")
        late = self.etcd.watch_prefix(b"k", 0, lambda e, r: None)
        self.failureResultOf(late.done, EtcdError)
        self.successResultOf(self.etcd.close())
