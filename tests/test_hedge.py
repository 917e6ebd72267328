"""Hedged requests and the retry budget, on a clock: two servers in memory
(the real connect() and server), one of them slow."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Server, connect
from txgeerpc.discovery import StaticDiscovery
from txgeerpc.errors import CallTimeout
from txgeerpc.selection import RandomSelect
from txgeerpc.testing import MemoryNetwork
from txgeerpc.xclient import FailMode, Hedge, RetryBudget, XClient

from ._helpers import checked_clock


class Work:
    """``Work.Do``: answers after this server's delay; counts cancellations."""

    def __init__(self, clock: IReactorTime, delay: float) -> None:
        self._clock = clock
        self.delay = delay
        self.cancelled = 0

    def Do(self, n: int) -> Deferred[int]:
        d = deferLater(self._clock, self.delay, lambda: n)

        def cleanup(failure: Any) -> Any:
            if failure.check(CancelledError):
                self.cancelled += 1
            return failure

        return d.addErrback(cleanup)


def settle(network: MemoryNetwork, d: Deferred[Any]) -> None:
    """Run the network a millisecond at a time until ``d`` has its result
    (not only fired: a retry can pause it on another Deferred)."""
    done: list[bool] = []
    d.addBoth(lambda result: (done.append(True), result)[1])
    while not done:
        network.advance(0.001)


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(int(len(ordered) * 0.99), len(ordered) - 1)]


class TwoServers(SynchronousTestCase):
    """Two servers in memory: ``fast`` answers ``Work.Do`` in 0.01 s,
    ``slow`` in 1 s.  (No tests of its own.)"""

    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.network = MemoryNetwork(self.clock)
        self.addCleanup(self.network.close)
        self.work: dict[str, Work] = {}
        self.servers: dict[str, Server] = {}
        addresses = []
        for name, delay in (("fast", 0.01), ("slow", 1.0)):
            server = Server(self.clock)
            self.work[name] = Work(self.clock, delay)
            server.register(self.work[name])
            port = self.network.listen(server.port_factory())
            addresses.append(f"tcp@{port.address}")
            self.servers[name] = server
        self.fast, self.slow = addresses

    def xclient(self, addresses: list[str] | None = None, **options: Any) -> XClient:
        xclient = XClient(
            StaticDiscovery(addresses or [self.fast, self.slow]),
            lambda address: connect(self.network.reactor, address, connect_timeout=5),
            self.clock,
            selector=RandomSelect(random.Random(7)),
            idempotent=["Work.Do"],
            **options,
        )

        def close() -> None:
            xclient.close()
            self.network.advance(1)

        self.addCleanup(close)
        return xclient

    def timed(self, xclient: XClient, calls: int, **options: Any) -> list[float]:
        """Latencies of ``calls`` calls made one after another."""
        latencies = []
        for n in range(calls):
            started = self.clock.seconds()
            d = xclient.call("Work.Do", n, timeout=5, **options)
            settle(self.network, d)
            self.assertEqual(self.successResultOf(d), n)
            latencies.append(self.clock.seconds() - started)
        return latencies

    def handled(self, name: str) -> tuple[int, int]:
        stats = self.servers[name].services["Work"].methods["Do"].stats
        return stats.calls, stats.in_flight


class HedgeTests(TwoServers):
    def test_unhedged_half_the_calls_wait_for_the_slow_server(self) -> None:
        latencies = self.timed(self.xclient(), 40)
        self.assertGreater(p99(latencies), 0.99)
        self.assertEqual(self.work["slow"].cancelled, 0)

    def test_hedged_p99_stays_near_the_fast_servers_and_the_slow_one_is_cancelled(self) -> None:
        xclient = self.xclient(hedge=Hedge(after=0.05))
        latencies = self.timed(xclient, 40)
        # The fast server answers in 0.01 s; a call that went to the slow one
        # first is hedged at 0.05 s and answered 0.01 s later.
        self.assertLess(p99(latencies), 0.08)
        self.network.advance(0.1)  # the cancellations arrive
        slow_first = self.handled("slow")[0]
        self.assertGreaterEqual(slow_first, 10)  # (of 40, chosen at random)
        self.assertEqual(xclient.hedges_sent, slow_first)
        self.assertEqual(xclient.hedges_won, slow_first)
        self.assertEqual(xclient.hedges_cancelled, slow_first)
        self.assertEqual(self.work["slow"].cancelled, slow_first)
        self.assertEqual(self.handled("slow")[1], 0)
        self.assertEqual(
            self.servers["slow"].services["Work"].methods["Do"].stats.cancelled, slow_first
        )

    def test_a_percentile_hedge_learns_the_delay(self) -> None:
        xclient = self.xclient(hedge=Hedge(percentile=50, after=0.5, min_samples=4))
        first = self.timed(xclient, 4)  # 0.5 s until four latencies are known
        self.assertGreater(max(first), 0.5)
        later = self.timed(xclient, 40)
        self.assertLess(p99(later), 0.05)  # hedged after the median (~0.01 s)
        self.assertGreater(xclient.hedges_won, 19)

    def test_per_call_hedge_and_only_for_idempotent_methods(self) -> None:
        xclient = self.xclient()
        self.assertLess(p99(self.timed(xclient, 10, hedge=Hedge(after=0.05))), 0.08)
        hedged = self.handled("slow")[0]
        self.assertEqual(xclient.hedges_sent, hedged)
        self.assertGreater(hedged, 0)
        xclient._idempotent.clear()
        self.assertGreater(p99(self.timed(xclient, 10, hedge=Hedge(after=0.05))), 0.99)
        self.assertEqual(xclient.hedges_sent, hedged)

    def test_at_most_max_extra_copies_each_to_another_server(self) -> None:
        self.work["fast"].delay = 1.0
        xclient = self.xclient(hedge=Hedge(after=0.1, max_extra=3))
        d = xclient.call("Work.Do", 7, timeout=5)
        self.network.advance(0.15)
        # The first extra copy goes to the server not tried yet.
        self.assertEqual(xclient.hedges_sent, 1)
        self.assertEqual((self.handled("slow")[1], self.handled("fast")[1]), (1, 1))
        self.network.advance(0.5)
        self.assertEqual(xclient.hedges_sent, 3)  # and no more
        self.network.advance(1)
        self.assertEqual(self.successResultOf(d), 7)
        self.assertEqual((xclient.hedges_won, xclient.hedges_cancelled), (0, 3))
        self.network.advance(0.1)
        self.assertEqual(self.handled("slow")[0] + self.handled("fast")[0], 4)
        self.assertEqual(self.work["slow"].cancelled + self.work["fast"].cancelled, 3)

    def test_cancelling_a_hedged_call_cancels_every_copy(self) -> None:
        self.work["fast"].delay = 1.0
        xclient = self.xclient(hedge=Hedge(after=0.05))
        d = xclient.call("Work.Do", 1, timeout=5)
        self.network.advance(0.06)
        self.assertEqual(xclient.hedges_sent, 1)
        self.assertEqual((self.handled("slow")[1], self.handled("fast")[1]), (1, 1))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.network.advance(0.1)
        self.assertEqual((self.handled("slow")[1], self.handled("fast")[1]), (0, 0))
        self.assertEqual((self.work["slow"].cancelled, self.work["fast"].cancelled), (1, 1))


class RetryBudgetTests(SynchronousTestCase):
    def test_failures_cost_successes_refill_and_half_stops(self) -> None:
        budget = RetryBudget(max_tokens=10, token_ratio=0.1)
        self.assertTrue(budget.allows)
        for _ in range(5):
            budget.failed()
        self.assertFalse(budget.allows)  # 5 is not more than half
        for _ in range(10):
            budget.succeeded()
        self.assertTrue(budget.allows)
        for _ in range(200):
            budget.succeeded()
        self.assertEqual(budget.tokens, 10)

    def test_bad_settings_raise(self) -> None:
        for bad in (dict(max_tokens=0), dict(token_ratio=-1)):
            self.assertRaises(ValueError, RetryBudget, **bad)
        self.assertRaises(ValueError, Hedge)
        self.assertRaises(ValueError, Hedge, after=0)
        self.assertRaises(ValueError, Hedge, percentile=100)
        self.assertRaises(ValueError, Hedge, after=1, max_extra=0)


class BudgetInXClientTests(TwoServers):
    def test_the_budget_stops_hedges_when_failures_pile_up_and_refills(self) -> None:
        xclient = self.xclient(hedge=Hedge(after=0.05))
        budget = xclient.retry_budget
        self.assertEqual((budget.max_tokens, budget.token_ratio), (10, 0.1))  # the defaults
        for n in range(6):  # six calls time out: six tokens gone
            d = xclient.call("Work.Do", n, timeout=0.005)
            self.network.advance(0.005)
            self.failureResultOf(d, CallTimeout)
        self.assertEqual(budget.tokens, 4)
        # No hedge now: half the calls wait for the slow server.
        latencies = self.timed(xclient, 10)
        self.assertEqual(xclient.hedges_sent, 0)
        self.assertGreater(p99(latencies), 0.99)
        # Ten successes refilled one token; one more and hedges resume.
        self.assertAlmostEqual(budget.tokens, 5)
        self.assertFalse(budget.allows)
        self.timed(xclient, 1)
        self.assertTrue(budget.allows)
        self.assertLess(p99(self.timed(xclient, 20)), 0.08)
        self.assertGreater(xclient.hedges_sent, 0)

    def test_the_budget_stops_retries_when_failures_pile_up_and_refills(self) -> None:
        xclient = self.xclient([self.slow], mode=FailMode.FAIL_TRY)  # retries: 3
        budget = xclient.retry_budget

        def attempts_of_a_call(timeout: float) -> int:
            before = self.handled("slow")[0]
            d = xclient.call("Work.Do", 1, timeout=timeout)
            settle(self.network, d)
            if timeout < 1:
                self.failureResultOf(d, CallTimeout)
            else:
                self.assertEqual(self.successResultOf(d), 1)
            return self.handled("slow")[0] - before

        self.assertEqual(attempts_of_a_call(0.5), 4)  # four timeouts: 10 -> 6 tokens
        self.assertEqual(budget.tokens, 6)
        self.assertEqual(attempts_of_a_call(0.5), 1)  # 6 -> 5: no more retries
        self.assertEqual(attempts_of_a_call(0.5), 1)  # 5 -> 4
        self.assertEqual(budget.tokens, 4)
        self.work["slow"].delay = 0.01
        for _ in range(21):  # successes refill: 4 + 2.1
            self.assertEqual(attempts_of_a_call(5), 1)
        self.assertAlmostEqual(budget.tokens, 6.1)
        self.work["slow"].delay = 1.0
        self.assertEqual(attempts_of_a_call(0.5), 2)  # one retry again (6.1 -> 5.1 -> 4.1)
        self.network.advance(1)  # the timed-out handlers end

    def test_calls_that_never_reached_a_server_fail_over_whatever_the_budget(self) -> None:
        dead = "tcp@127.0.0.1:31999"  # nobody listens: each dial is refused
        xclient = self.xclient([dead, self.fast], mode=FailMode.FAIL_OVER, cooldown=0)
        xclient.retry_budget.tokens = 0
        for n in range(10):
            d = xclient.call("Work.Do", n, timeout=5)
            self.network.advance(0.02)
            self.assertEqual(self.successResultOf(d), n)
        self.assertAlmostEqual(xclient.retry_budget.tokens, 1)  # ten successes
