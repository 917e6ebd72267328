"""The XClient's Prometheus metrics (txgeerpc.metrics.XClientCollector): calls
through in-memory servers, one of them down, the exposition read with
prometheus_client's own generator and parser."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc.errors import CallTimeout
from txgeerpc.examples import Args
from txgeerpc.xclient import FailMode

from . import test_xclient
from .test_metrics import key, samples

ADDRESSES = test_xclient.ADDRESSES
A, B, C = ADDRESSES


class XClientMetricsTests(SynchronousTestCase):
    # The in-memory servers of the XClient's own tests, without their tests
    # (the class is not bound to a name here: pytest would run it again).
    setUp = test_xclient.XClientTests.setUp
    dial = test_xclient.XClientTests.dial
    flush = test_xclient.XClientTests.flush
    xclient = test_xclient.XClientTests.xclient
    sum_calls = test_xclient.XClientTests.sum_calls

    def test_calls_retries_dial_failures_and_cooldowns(self) -> None:
        self.down.add(C)
        xclient = self.xclient(mode=FailMode.FAIL_OVER)
        results = []
        cooling = []  # C's gauge after each call
        for n in range(6):
            results.append(xclient.call("Foo.Sum", Args(n, 1)))
            self.flush()
            cooling.append(samples(xclient)[key("txgeerpc_client_server_cooling", server=C)])
            self.clock.advance(1)
            self.flush()
        self.assertEqual([self.successResultOf(d) for d in results], [n + 1 for n in range(6)])
        # C's dial failed at the first call (cooling 1 s) and at the third
        # (2 s: the fourth call finds it cooling still), not in between.
        self.assertEqual(cooling, [1, 0, 1, 1, 0, 0])
        found = samples(xclient)
        self.assertEqual(found[key("txgeerpc_client_calls_total")], 6)
        # Each time C's dial failed, its call went over to another server.
        self.assertEqual(found[key("txgeerpc_client_retries_total")], 2)
        self.assertEqual(found[key("txgeerpc_client_attempts_total")], 6)
        attempts = {
            server: found[key("txgeerpc_client_server_attempts_total", server=server)]
            for server in ADDRESSES
        }
        self.assertEqual(attempts, {**xclient.calls_sent, C: 0})
        self.assertEqual(sum(attempts.values()), 6)
        for name, value in (
            ("txgeerpc_client_server_dial_failures_total", 2),
            ("txgeerpc_client_server_cooldowns_total", 2),
            ("txgeerpc_client_server_failures_total", 0),
        ):
            self.assertEqual(found[key(name, server=C)], value, name)
            self.assertEqual(found[key(name, server=A)], 0, name)
        self.assertEqual(found[key("txgeerpc_client_servers")], 3)
        self.assertEqual(found[key("txgeerpc_client_retry_tokens")], 10)

    def test_failures_in_flight_and_only_listed_servers(self) -> None:
        xclient = self.xclient()
        waiting = xclient.call("Slow.Wait", 0)  # answers in 1 s
        self.flush()
        found = samples(xclient)
        address = next(iter(xclient.calls_sent))
        self.assertEqual(found[key("txgeerpc_client_server_in_flight", server=address)], 1)
        self.clock.advance(1)
        self.flush()
        self.successResultOf(waiting)
        timing_out = xclient.call("Slow.Wait", 0, timeout=0.5)
        self.flush()
        self.clock.advance(0.5)
        self.failureResultOf(timing_out, CallTimeout)
        late = next(server for server in xclient.calls_sent if server != address)
        found = samples(xclient)
        self.assertEqual(found[key("txgeerpc_client_server_failures_total", server=late)], 1)
        self.assertEqual(found[key("txgeerpc_client_server_in_flight", server=late)], 0)
        # A server leaves the list: its label goes (the totals keep its calls).
        self.discovery.update([server for server in ADDRESSES if server != late])
        found = samples(xclient)
        self.assertEqual(found[key("txgeerpc_client_servers")], 2)
        self.assertEqual(found[key("txgeerpc_client_attempts_total")], 2)
        self.assertNotIn(key("txgeerpc_client_server_attempts_total", server=late), found)
        self.assertEqual(
            {labels for name, labels in found if name == "txgeerpc_client_server_failures_total"},
            {frozenset({("server", server)}) for server in ADDRESSES if server != late},
        )
        self.clock.advance(1)  # the timed-out call's handler ends
        self.flush()

    def test_broadcast_and_hedges(self) -> None:
        xclient = self.xclient()
        self.successResultOf(self._flushed(xclient.broadcast("Foo.Sum", Args(1, 2))))
        xclient.hedges_sent, xclient.hedges_won, xclient.hedges_cancelled = 3, 2, 1
        found = samples(xclient)
        self.assertEqual(found[key("txgeerpc_client_broadcasts_total")], 1)
        self.assertEqual(found[key("txgeerpc_client_calls_total")], 0)
        self.assertEqual(found[key("txgeerpc_client_attempts_total")], 3)
        self.assertEqual(
            [found[key(f"txgeerpc_client_{name}_total")] for name in ("hedges", "hedges_won")],
            [3, 2],
        )
        self.assertEqual(found[key("txgeerpc_client_hedges_cancelled_total")], 1)

    def _flushed(self, d):  # type: ignore[no-untyped-def]
        self.flush()
        return d

    def test_off_and_given_registry(self) -> None:
        self.assertIsNone(self.xclient(metrics=False).metrics)
        registry = CollectorRegistry()
        xclient = self.xclient(metrics=registry)
        self.assertIs(xclient.metrics, registry)
        self.assertIn(key("txgeerpc_client_calls_total"), samples(registry))
        # A second XClient's families would collide with the first's.
        self.assertRaises(ValueError, self.xclient, metrics=registry)
