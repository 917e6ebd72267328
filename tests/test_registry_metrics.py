"""Registry and etcd metrics (txgeerpc.metrics): heartbeat failures of a
server's registration, the etcd-backed store's joins, leaves, expiries and
refusals, the etcd client's request latencies and fail-overs, and what the
twistd plugins serve of them.  On a Clock, the exposition read with
prometheus_client's own generator and parser."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc.errors import EtcdUnavailable, RegistryFull
from txgeerpc.etcd import EtcdClient, EtcdRegistration, EtcdStore
from txgeerpc.metrics import EtcdCollector, RegistrationCollector, registry_metrics
from txgeerpc.registry import Heartbeat
from txgeerpc.testing import FakeEtcd

from ._helpers import checked_clock
from .test_heartbeat import URL, FakeRegistry
from .test_metrics import key, samples

A, B, C = "tcp@127.0.0.1:1", "tcp@127.0.0.1:2", "tcp@127.0.0.1:3"


def collected(collector: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    return samples(registry)


class RegistrationMetricsTests(SynchronousTestCase):
    def test_heartbeat_failures(self) -> None:
        clock = checked_clock(self)
        registry = FakeRegistry(clock, timeout=9)
        registry.up = False
        beat = Heartbeat(clock, registry.request, URL, A)
        beat.startService()
        for delay in (1, 2):  # two retries, failing too
            clock.advance(delay)
        registry.up = True
        clock.advance(4)  # the next retry is answered
        clock.advance(beat.period)  # and the beat after it
        found = collected(RegistrationCollector(beat))
        self.assertEqual(found[key("txgeerpc_registry_heartbeat_failures_total")], 3)
        self.assertEqual(found[key("txgeerpc_registry_heartbeats_total")], 2)
        self.assertEqual(beat.failures, 0)  # in a row: none now; the total stays
        self.successResultOf(beat.stopService())

    def test_etcd_registration(self) -> None:
        clock = checked_clock(self)
        etcd = FakeEtcd(clock)
        self.addCleanup(etcd.close)
        registration = EtcdRegistration(etcd, A, clock, ttl=3)
        registration.startService()
        clock.advance(registration.period)  # one renewal
        etcd.available = False
        clock.advance(registration.period)  # a renewal that fails
        found = collected(RegistrationCollector(registration))
        self.assertEqual(found[key("txgeerpc_registry_heartbeats_total")], 2)
        self.assertEqual(found[key("txgeerpc_registry_heartbeat_failures_total")], 1)
        etcd.available = True
        self.successResultOf(registration.stopService())


class EtcdStoreMetricsTests(SynchronousTestCase):
    def test_joins_leaves_expiries_refused(self) -> None:
        clock = checked_clock(self)
        etcd = FakeEtcd(clock)
        self.addCleanup(etcd.close)
        store = EtcdStore(etcd, timeout=3, max_entries=2)
        metrics = registry_metrics(store)
        self.assertTrue(self.successResultOf(store.heartbeat(A, 0)))
        self.assertTrue(self.successResultOf(store.heartbeat(B, 0)))
        self.assertFalse(self.successResultOf(store.heartbeat(A, 0)))  # a refresh
        self.failureResultOf(store.heartbeat(C, 0), RegistryFull)
        self.assertTrue(self.successResultOf(store.deregister(B)))
        self.assertFalse(self.successResultOf(store.deregister(B)))  # gone already
        found = samples(metrics)
        self.assertEqual(found[key("txgeerpc_registry_entries")], 1)
        self.assertEqual(found[key("txgeerpc_registry_joins_total")], 2)
        self.assertEqual(found[key("txgeerpc_registry_leaves_total")], 1)
        self.assertEqual(found[key("txgeerpc_registry_refused_total")], 1)
        self.assertEqual(found[key("txgeerpc_registry_expiries_total")], 0)
        clock.advance(3)  # A's lease ends
        self.assertEqual(self.successResultOf(store.purge(3)), [A])
        found = samples(metrics)
        self.assertEqual(found[key("txgeerpc_registry_expiries_total")], 1)
        self.assertEqual(found[key("txgeerpc_registry_entries")], 0)


class EtcdClientMetricsTests(SynchronousTestCase):
    """An EtcdClient of two members whose exchanges are faked: the first
    refuses connections (so every request fails over), the second answers
    in 3 ms on the clock."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.etcd = EtcdClient(self.reactor, "127.0.0.1:1,127.0.0.1:2")
        self.second_up = True
        self.etcd._exchange = self.exchange  # type: ignore[method-assign]

    async def exchange(self, endpoint: str, path: str, body: Any, request: Any) -> Any:
        if endpoint.endswith(":1") or not self.second_up:
            raise ConnectionRefusedError()
        request.sent = True
        await deferLater(self.reactor, 0.003, lambda: None)
        return {"header": {"revision": "7"}}

    def answer(self, d: Deferred[Any]) -> Any:
        self.reactor.advance(0.003)
        return self.successResultOf(d)

    def test_latency_and_failovers(self) -> None:
        self.assertEqual(self.answer(self.etcd.put(b"k", b"v")), 7)
        self.assertEqual(self.answer(self.etcd.put(b"k", b"v")), 7)  # the second asked first
        self.second_up = False
        self.failureResultOf(self.etcd.put(b"k", b"v"), EtcdUnavailable)
        found = collected(EtcdCollector(self.etcd))
        put = {"operation": "put"}
        self.assertEqual(found[key("txgeerpc_etcd_request_seconds_count", **put)], 3)
        self.assertEqual(
            found[key("txgeerpc_etcd_request_seconds_bucket", le="0.0025", **put)], 1
        )  # the failed one, at once
        self.assertEqual(found[key("txgeerpc_etcd_request_seconds_bucket", le="0.005", **put)], 3)
        self.assertAlmostEqual(found[key("txgeerpc_etcd_request_seconds_sum", **put)], 0.006)
        self.assertEqual(found[key("txgeerpc_etcd_request_failures_total", **put)], 1)
        # The first put failed over from member 1; the failed one from 2 to 1.
        self.assertEqual(found[key("txgeerpc_etcd_failovers_total")], 2)
        self.assertEqual(found[key("txgeerpc_etcd_watch_reconnections_total")], 0)

    def test_an_etcd_without_stats_has_no_families(self) -> None:
        self.assertEqual(collected(EtcdCollector(FakeEtcd(checked_clock(self)))), {})


class PluginTests(SynchronousTestCase):
    def test_geerpc_with_a_registry_serves_heartbeats_and_the_embedded_store(self) -> None:
        from txgeerpc import tap

        options = tap.Options()
        options.parseOptions(["--registry", URL, "--advertise", A])
        built = tap.build(options, reactor=MemoryReactorClock())
        found = samples(built.server.metrics)
        self.assertEqual(found[key("txgeerpc_registry_heartbeat_failures_total")], 0)
        self.assertEqual(found[key("txgeerpc_registry_entries")], 0)  # the embedded registry

    def test_geerpc_on_etcd(self) -> None:
        from txgeerpc import tap

        clock = checked_clock(self)
        etcd = FakeEtcd(clock)
        self.addCleanup(etcd.close)
        options = tap.Options()
        options.parseOptions(["--etcd", "127.0.0.1:2379", "--advertise", A])
        built = tap.build(options, reactor=MemoryReactorClock(), etcd=etcd)
        self.assertIn(key("txgeerpc_registry_heartbeats_total"), samples(built.server.metrics))

    def test_registry_on_etcd_serves_etcd_metrics(self) -> None:
        from txgeerpc import registry_tap

        options = registry_tap.Options()
        options.parseOptions(["--etcd", "127.0.0.1:2379"])
        reactor = MemoryReactorClock()
        built = registry_tap.build(options, reactor=reactor)
        metrics = built.listeners[0]._factory.resource.children[b"metrics"]._registry
        found = samples(metrics)
        self.assertIn(key("txgeerpc_registry_entries"), found)
        self.assertIn(key("txgeerpc_etcd_failovers_total"), found)
        self.successResultOf(built.store._etcd.close())  # type: ignore[attr-defined]
