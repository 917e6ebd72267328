"""The XClient over in-memory servers: selection, fail modes, broadcast."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

import txgeerpc.xclient
from txgeerpc import Client, Server
from txgeerpc._pool import ClientPool
from txgeerpc.discovery import StaticDiscovery
from txgeerpc.errors import (
    CallTimeout,
    ConnectFailed,
    ConnectionShutdown,
    ConnectTimeout,
    NoServers,
    RemoteError,
)
from txgeerpc.examples import Args, Record, register_examples
from txgeerpc.registry import RegistryDiscovery
from txgeerpc.selection import ConsistentHash, PowerOfTwoChoices, RoundRobinSelect
from txgeerpc.testing import InMemoryConnection, connect_in_memory
from txgeerpc.xclient import FailMode, XClient

from ._helpers import checked_clock

ADDRESSES = ["tcp@a:1", "tcp@b:1", "tcp@c:1"]


class Slow:
    """``Slow.Wait`` answers after ``delay`` seconds; ``Slow.Boom`` fails on one server."""

    def __init__(self, clock: Any, name: str, delay: float, boom: bool) -> None:
        self._clock, self._name, self._delay, self._boom = clock, name, delay, boom

    def Wait(self, arg: Any) -> Deferred[str]:
        return deferLater(self._clock, self._delay, lambda: self._name)

    def Boom(self, arg: Any) -> Any:
        if self._boom:
            raise ValueError(f"boom on {self._name}")
        return deferLater(self._clock, 100, lambda: self._name)


class RecordingClient:
    """Stands for a :class:`Client`: records each call and lets the test answer it."""

    def __init__(self) -> None:
        self.available = True
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.replies: list[Deferred[Any]] = []

    @property
    def pending(self) -> int:
        return len([reply for reply in self.replies if not reply.called])

    def call(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        self.calls.append((args, kwargs))
        self.replies.append(Deferred())
        return self.replies[-1]

    def close(self) -> Deferred[None]:
        self.available = False
        return succeed(None)

    def when_going_away(self) -> Deferred[None]:
        return Deferred()  # this server never stops


class XClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.servers: dict[str, Server] = {}
        self.connections: list[InMemoryConnection] = []
        self.down: set[str] = set()
        self.by_address: dict[str, InMemoryConnection] = {}
        for address in ADDRESSES:
            server = Server(self.clock)
            register_examples(server)
            server.register(Slow(self.clock, address, 1, address == "tcp@b:1"), name="Slow")
            self.servers[address] = server
        self.discovery = StaticDiscovery(ADDRESSES)

    def dial(self, address: str) -> Deferred[Client]:
        if address in self.down:
            return fail(ConnectFailed(ConnectionRefusedError()))
        connection = connect_in_memory(self.servers[address], clock=self.clock)
        self.connections.append(connection)
        self.by_address[address] = connection
        self.addCleanup(connection.close)
        return succeed(connection.client)

    def flush(self) -> None:
        for connection in self.connections:
            connection.flush()

    def xclient(self, **kwargs: Any) -> XClient:
        xclient = XClient(
            self.discovery,
            self.dial,
            self.clock,
            selector=RoundRobinSelect(random.Random(1)),
            **kwargs,
        )
        return xclient

    def calls_per_server(self) -> dict[str, int]:
        return {
            address: server.services["Foo"].methods["Sum"].stats.calls
            for address, server in self.servers.items()
        }

    def sum_calls(self, xclient: XClient, count: int) -> list[Any]:
        results = []
        for n in range(count):
            d = xclient.call("Foo.Sum", Args(n, 1))
            self.flush()
            self.clock.advance(1)  # any backoff
            self.flush()
            results.append(d)
        return results

    def test_round_robin_spreads_evenly_and_reuses_connections(self) -> None:
        xclient = self.xclient()
        results = self.sum_calls(xclient, 30)
        self.assertEqual([self.successResultOf(d) for d in results], [n + 1 for n in range(30)])
        self.assertEqual(set(self.calls_per_server().values()), {10})
        self.assertEqual(xclient.calls_sent, self.calls_per_server())
        self.assertEqual(len(self.connections), 3)

    def test_fail_over_hides_a_dead_server_fail_fast_does_not(self) -> None:
        self.down.add("tcp@b:1")
        over = self.sum_calls(self.xclient(mode=FailMode.FAIL_OVER), 9)
        self.assertEqual([self.successResultOf(d) for d in over], [n + 1 for n in range(9)])
        outcomes: list[Any] = []
        for d in self.sum_calls(self.xclient(mode=FailMode.FAIL_FAST), 9):
            d.addBoth(outcomes.append)
        failures = [outcome for outcome in outcomes if not isinstance(outcome, int)]
        self.assertEqual(len(failures), 3)  # only the calls that went to b
        self.assertTrue(all(failure.check(ConnectFailed) for failure in failures))

    def test_a_server_leaving_finishes_its_running_calls_first(self) -> None:
        xclient = self.xclient(mode=FailMode.FAIL_FAST)
        self.discovery.update(["tcp@a:1"])
        running = xclient.call("Slow.Wait", None)
        self.flush()
        self.assertEqual(xclient.in_flight("tcp@a:1"), 1)
        self.discovery.update(["tcp@c:1"])  # a leaves while its call runs
        self.assertEqual(xclient.connections, [])
        self.assertTrue(self.by_address["tcp@a:1"].client.available)  # draining, not closed
        self.clock.advance(1)
        self.flush()
        self.assertEqual(self.successResultOf(running), "tcp@a:1")
        self.assertFalse(self.by_address["tcp@a:1"].client.available)  # closed once done
        self.assertEqual(xclient.in_flight("tcp@a:1"), 0)

    def test_power_of_two_choices_counts_this_xclients_calls(self) -> None:
        selector = PowerOfTwoChoices(rng=random.Random(3))
        xclient = XClient(self.discovery, self.dial, self.clock, selector=selector)
        self.assertEqual(selector.in_flight, xclient.in_flight)
        calls = [xclient.call("Slow.Wait", None) for _ in range(6)]
        self.flush()
        # Each pick avoids the busier of its two: the load stays even.
        self.assertEqual(sorted(xclient.in_flight(a) for a in ADDRESSES), [2, 2, 2])
        self.clock.advance(1)
        self.flush()
        self.assertEqual(len([self.successResultOf(d) for d in calls]), 6)

    def test_failing_over_to_an_untried_server_does_not_wait(self) -> None:
        self.down.update({"tcp@a:1", "tcp@b:1"})
        xclient = self.xclient(mode=FailMode.FAIL_OVER, cooldown=0)
        for n in range(3):  # starting at each server in turn
            d = xclient.call("Foo.Sum", Args(n, 1))
            self.flush()
            self.assertEqual(self.successResultOf(d), n + 1)  # no time has passed
        self.assertEqual(self.calls_per_server()["tcp@c:1"], 3)

    def test_a_call_that_may_have_run_is_retried_only_if_idempotent(self) -> None:
        for idempotent, expected in [((), CallTimeout), (("Slow.Wait",), None)]:
            self.discovery.update(["tcp@a:1"])
            slow = self.servers["tcp@a:1"].services["Slow"].instance
            slow._delay = 5  # longer than the call timeout
            xclient = self.xclient(mode=FailMode.FAIL_TRY, retries=1, idempotent=idempotent)
            d = xclient.call("Slow.Wait", None, timeout=1)
            self.flush()
            self.clock.advance(1)  # times out
            slow._delay = 0.5
            self.clock.advance(0.05)  # backoff over; a retry is sent (if allowed)
            self.flush()
            self.clock.advance(0.5)
            self.flush()
            self.clock.advance(5)  # the first, abandoned handler ends
            self.flush()
            if expected is None:
                self.assertEqual(self.successResultOf(d), "tcp@a:1")
            else:
                self.failureResultOf(d, expected)

    def test_a_call_failing_on_a_ready_connection_is_retried(self) -> None:
        self.discovery.update(["tcp@a:1"])
        slow = self.servers["tcp@a:1"].services["Slow"].instance
        xclient = self.xclient(mode=FailMode.FAIL_TRY, retries=1, idempotent={"Slow.Wait"})
        warm = xclient.call("Foo.Sum", Args(1, 1))
        self.flush()
        self.assertEqual(self.successResultOf(warm), 2)
        slow._delay = 5
        d = xclient.call("Slow.Wait", None, timeout=1)  # the connection is up already
        self.flush()
        self.clock.advance(1)  # times out
        slow._delay = 0.5
        self.clock.advance(0.05)  # backoff over: retried
        self.flush()
        self.clock.advance(0.5)
        self.flush()
        self.assertEqual(self.successResultOf(d), "tcp@a:1")
        self.assertEqual((xclient.calls_sent["tcp@a:1"], xclient.in_flight("tcp@a:1")), (3, 0))
        self.clock.advance(5)  # the abandoned first handler ends
        self.flush()

    def test_broadcast(self) -> None:
        xclient = self.xclient()
        d = xclient.broadcast("Slow.Wait")
        self.flush()
        self.clock.advance(1)
        self.flush()
        self.assertIn(self.successResultOf(d), ADDRESSES)
        # One fails at once: the broadcast fails and the others are cancelled.
        d = xclient.broadcast("Slow.Boom")
        self.flush()
        self.assertIn("boom on tcp@b:1", self.failureResultOf(d, RemoteError).value.message)
        self.assertEqual(self.flushLoggedErrors(ValueError), [])  # a domain error: one line
        self.assertEqual([c.client.pending for c in self.connections], [0, 0, 0])
        self.clock.advance(100)
        self.flush()
        self.discovery.update([])
        self.failureResultOf(xclient.broadcast("Slow.Wait"), NoServers)
        self.failureResultOf(xclient.call("Foo.Sum", Args()), NoServers)

    def test_connections_close_when_their_server_leaves(self) -> None:
        xclient = self.xclient()
        self.sum_calls(xclient, 3)
        self.assertEqual(xclient.connections, ADDRESSES)
        self.discovery.update(ADDRESSES[:2])
        self.flush()
        self.assertEqual(xclient.connections, ADDRESSES[:2])
        self.assertFalse(self.by_address["tcp@c:1"].client.available)
        self.assertTrue(self.by_address["tcp@a:1"].client.available)
        closed = xclient.close()
        self.flush()
        self.successResultOf(closed)
        self.assertEqual(self.discovery._listeners, [])  # a closed XClient stops listening


class XClientCallTests(SynchronousTestCase):
    def test_every_attempt_sends_the_call_as_asked(self) -> None:
        """The call is one value: the first attempt, a retry (from a dial
        or from a ready connection) and a broadcast all send the same."""
        clock = checked_clock(self)
        recording = RecordingClient()
        xclient = XClient(
            StaticDiscovery(["tcp@a:1"]),
            lambda address: succeed(recording),
            clock,
            mode=FailMode.FAIL_TRY,
            idempotent={"Records.Echo"},
        )
        types = {"result_type": Record, "argument_type": Record}
        asked = (("Records.Echo", {"Name": "x"}), {"timeout": 5, **types})

        def call() -> Deferred[Any]:
            return xclient.call("Records.Echo", {"Name": "x"}, timeout=5, **types)

        dialled = call()  # the slow path: no connection yet
        recording.replies[0].errback(ConnectionShutdown())  # may have run: retried
        clock.advance(0.05)
        recording.replies[1].callback("one")
        ready = call()  # the fast path
        recording.replies[2].errback(CallTimeout("Records.Echo", 5))
        clock.advance(0.05)
        recording.replies[3].callback("two")
        everyone = xclient.broadcast("Records.Echo", {"Name": "x"}, timeout=5, **types)
        recording.replies[4].callback("three")
        self.assertEqual(
            [self.successResultOf(d) for d in (dialled, ready, everyone)], ["one", "two", "three"]
        )
        self.assertEqual(recording.calls, [asked] * 5)
        self.assertEqual(xclient.calls_sent, {"tcp@a:1": 5})
        self.successResultOf(xclient.close())

    def test_exports(self) -> None:
        self.assertEqual(
            sorted(txgeerpc.xclient.__all__),
            ["Dial", "FailMode", "Hedge", "RetryBudget", "XClient"],
        )
        for name in txgeerpc.xclient.__all__:
            self.assertTrue(hasattr(txgeerpc.xclient, name), name)


class XClientEdgeTests(SynchronousTestCase):
    """What an independent review found."""

    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.dials: list[Deferred[Client]] = []

    def pending_dial(self, address: str) -> Deferred[Client]:
        dial: Deferred[Client] = Deferred()
        self.dials.append(dial)
        return dial

    def refused_then_backing_off(self) -> XClient:
        """An XClient whose every dial is refused, retrying after 5 s."""
        return XClient(
            StaticDiscovery(["tcp@a:1"]),
            lambda address: fail(ConnectFailed("refused")),
            self.clock,
            mode=FailMode.FAIL_TRY,
            backoff=5,
            cooldown=0,
        )

    def serve(self, slow: float | None = None) -> InMemoryConnection:
        """A connection to an in-memory server of the examples (and
        ``Slow.Wait`` answering after ``slow`` seconds)."""
        server = Server(self.clock)
        register_examples(server)
        if slow is not None:
            server.register(Slow(self.clock, "tcp@b:1", slow, False), name="Slow")
        connection = connect_in_memory(server, clock=self.clock)
        self.addCleanup(connection.close)
        return connection

    def test_close_fails_calls_waiting_to_retry(self) -> None:
        xclient = XClient(
            StaticDiscovery(["tcp@a:1"]), self.pending_dial, self.clock, mode=FailMode.FAIL_TRY
        )
        d = xclient.call("Foo.Sum", Args())
        self.dials[0].errback(ConnectFailed("refused"))
        xclient.close()
        self.clock.advance(1)  # the backoff ends after the close
        self.failureResultOf(d, ConnectionShutdown)
        self.assertEqual(len(self.dials), 1)  # no dial after close
        self.failureResultOf(xclient.broadcast("Foo.Sum"), ConnectionShutdown)

    def test_a_server_leaving_while_dialled_fails_over(self) -> None:
        discovery = StaticDiscovery(["tcp@a:1"])
        xclient = XClient(discovery, self.pending_dial, self.clock, mode=FailMode.FAIL_OVER)
        d = xclient.call("Foo.Sum", Args())
        discovery.update(["tcp@b:1"])
        self.clock.advance(1)
        self.assertEqual(len(self.dials), 2)  # b is dialled
        self.assertNoResult(d)
        for _ in range(3):  # b refuses every retry
            self.dials[-1].errback(ConnectFailed("refused"))
            self.clock.advance(10)
        self.failureResultOf(d, ConnectFailed)
        self.assertEqual(len(self.dials), 4)  # a once, b three times (retries=3)

    def test_a_dial_that_raises_does_not_block_the_address(self) -> None:
        attempts: list[str] = []

        def broken(address: str) -> Deferred[Client]:
            attempts.append(address)
            raise ValueError("no")

        xclient = XClient(StaticDiscovery(["tcp@a:1"]), broken, self.clock)
        self.failureResultOf(xclient.call("Foo.Sum", Args()), ValueError)
        self.failureResultOf(xclient.call("Foo.Sum", Args()), ValueError)
        self.assertEqual((attempts, xclient.connections), (["tcp@a:1", "tcp@a:1"], []))

    def test_the_timeout_covers_a_hung_dial(self) -> None:
        fast = XClient(StaticDiscovery(["tcp@a:1"]), self.pending_dial, self.clock)
        d = fast.call("Foo.Sum", Args(), timeout=2)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, ConnectTimeout)  # within its timeout, never sent
        self.assertEqual(fast.connections, ["tcp@a:1"])  # the dial goes on for the cache
        self.assertEqual(fast._pool._waiting["tcp@a:1"], [])  # the waiter is forgotten
        self.successResultOf(fast.close())

        connection = self.serve()
        over = XClient(
            StaticDiscovery(["tcp@a:1", "tcp@b:1"]),
            lambda address: (
                self.pending_dial(address) if address == "tcp@a:1" else succeed(connection.client)
            ),
            self.clock,
            selector=RoundRobinSelect(random.Random(0)),  # starts at a
            mode=FailMode.FAIL_OVER,
        )
        d = over.call("Foo.Sum", Args(2, 3), timeout=2)
        self.clock.advance(2)  # a's dial hangs: over to b
        self.clock.advance(1)  # backoff
        connection.flush()
        self.assertEqual(self.successResultOf(d), 5)
        closed = over.close()
        connection.flush()
        self.successResultOf(closed)

    def test_a_server_that_refuses_is_passed_over_for_a_while(self) -> None:
        attempts: list[str] = []

        def dial(address: str) -> Deferred[Client]:
            attempts.append(address)
            if address == "tcp@b:1":
                return fail(ConnectFailed("refused"))
            return self.pending_dial(address)

        xclient = XClient(
            StaticDiscovery(["tcp@a:1", "tcp@b:1"]),
            dial,
            self.clock,
            selector=RoundRobinSelect(random.Random(0)),
            cooldown=1,
            max_cooldown=3,
        )
        calls: list[Deferred[Any]] = []

        def call(count: int) -> int:
            for _ in range(count):
                d = xclient.call("Foo.Sum", Args())
                d.addErrback(lambda failure: failure.trap(ConnectFailed, ConnectionShutdown))
                calls.append(d)
            return attempts.count("tcp@b:1")

        self.assertEqual(call(4), 1)  # refused once, then passed over
        for period in (1, 2, 3):  # doubling, capped at max_cooldown
            before = attempts.count("tcp@b:1")
            self.clock.advance(period - 0.01)
            self.assertEqual(call(4), before)  # still passed over
            self.clock.advance(0.01)
            self.assertEqual(call(2), before + 1)  # tried again (and refused)
        closed = xclient.close()
        self.successResultOf(closed)
        for d in calls:
            self.successResultOf(d)

    def test_a_short_timeout_leaves_a_shared_dial_alone(self) -> None:
        xclient = XClient(StaticDiscovery(["tcp@a:1"]), self.pending_dial, self.clock)
        patient = xclient.call("Foo.Sum", Args(), timeout=30)
        hasty = xclient.call("Foo.Sum", Args(), timeout=0.5)
        self.clock.advance(0.5)
        self.failureResultOf(hasty, ConnectTimeout)
        self.assertEqual(len(self.dials), 1)
        self.assertFalse(self.dials[0].called)  # not cancelled: the patient call still waits
        self.assertNoResult(patient)
        self.assertFalse(xclient._pool.cooling)  # a slow dial is no failed dial
        self.successResultOf(xclient.close())
        self.failureResultOf(patient, ConnectionShutdown)

    def test_close_ends_a_backoff_at_once(self) -> None:
        xclient = self.refused_then_backing_off()
        d = xclient.call("Foo.Sum", Args())
        self.assertNoResult(d)  # waiting 5 s before retrying
        self.successResultOf(xclient.close())
        self.failureResultOf(d, ConnectionShutdown)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_call_made_before_the_first_list_waits_for_it(self) -> None:
        class Slow(StaticDiscovery):
            def __init__(self) -> None:
                super().__init__()
                self.first: Deferred[None] = Deferred()

            def ready(self) -> Deferred[None]:
                return self.first

        connection = self.serve()
        discovery = Slow()
        xclient = XClient(discovery, lambda address: succeed(connection.client), self.clock)
        d = xclient.call("Foo.Sum", Args(1, 2))
        broadcast = xclient.broadcast("Foo.Sum", Args(3, 4))
        late = xclient.call("Foo.Sum", Args(), timeout=1)
        self.clock.advance(1)
        self.failureResultOf(late, NoServers)  # bounded by its timeout
        discovery.update(["tcp@b:1"])
        discovery.first.callback(None)
        connection.flush()
        self.assertEqual(self.successResultOf(d), 3)
        self.assertEqual(self.successResultOf(broadcast), 7)
        closed = xclient.close()
        connection.flush()
        self.successResultOf(closed)

    def test_close_ends_retries_that_would_start_after_it(self) -> None:
        connection = self.serve(slow=5)
        xclient = XClient(
            StaticDiscovery(["tcp@b:1"]),
            lambda address: succeed(connection.client),
            self.clock,
            mode=FailMode.FAIL_TRY,
            idempotent={"Slow.Wait"},
            backoff=5,
        )
        d = xclient.call("Slow.Wait", None)  # idempotent: a lost connection would be retried
        connection.flush()
        closed = xclient.close()
        connection.flush()
        self.successResultOf(closed)
        self.failureResultOf(d, ConnectionShutdown)  # at once, no retry
        self.clock.advance(5)  # the server's handler ends; nothing else is scheduled
        connection.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelling_a_call_during_its_backoff_is_a_cancel(self) -> None:
        xclient = self.refused_then_backing_off()
        d = xclient.call("Foo.Sum", Args())
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_bad_timeouts_raise_as_in_client_call(self) -> None:
        """The rule of Client.call: a bad argument raises at once, whatever
        state the XClient is in (warm, still without a list, closed)."""
        connection = self.serve()
        xclient = XClient(
            StaticDiscovery(["tcp@b:1"]), lambda address: succeed(connection.client), self.clock
        )
        warm = xclient.call("Foo.Sum", Args(1, 1))
        connection.flush()
        self.successResultOf(warm)
        for timeout in (0, -1, float("nan")):
            with self.assertRaises(ValueError):
                connection.client.call("Foo.Sum", Args(), timeout=timeout)
            with self.assertRaises(ValueError):
                xclient.call("Foo.Sum", Args(), timeout=timeout)
            with self.assertRaises(ValueError):
                xclient.broadcast("Foo.Sum", Args(), timeout=timeout)
        self.assertEqual(xclient.in_flight("tcp@b:1"), 0)
        self.assertEqual(xclient.calls_sent["tcp@b:1"], 1)  # the warm-up only
        unlisted = XClient(StaticDiscovery([]), self.pending_dial, self.clock)
        closed_client = XClient(StaticDiscovery(["tcp@b:1"]), self.pending_dial, self.clock)
        self.successResultOf(closed_client.close())
        for client in (unlisted, closed_client):
            with self.assertRaises(ValueError):
                client.call("Foo.Sum", Args(), timeout=0)
            with self.assertRaises(ValueError):
                client.broadcast("Foo.Sum", Args(), timeout=0)
        self.assertEqual((self.dials, self.clock.getDelayedCalls()), ([], []))
        closed = xclient.close()
        connection.flush()
        self.successResultOf(closed)
        self.successResultOf(unlisted.close())

    def test_what_the_selector_raises_fails_the_deferred(self) -> None:
        """The selector answers for the list of the moment (perhaps only once
        it is known, or at a retry): its errors come through the Deferred."""
        connection = self.serve()
        hashing = XClient(
            StaticDiscovery(["tcp@b:1", "tcp@c:1"]),
            lambda address: succeed(connection.client),
            self.clock,
            selector=ConsistentHash(),
        )
        self.failureResultOf(hashing.call("Foo.Sum", Args()), ValueError)  # no key
        self.assertEqual(hashing.calls_sent, {})
        closed = hashing.close()
        connection.flush()
        self.successResultOf(closed)

    def test_waiting_for_the_first_list_ends_with_close_or_a_stopped_discovery(self) -> None:
        class Never(StaticDiscovery):
            def ready(self) -> Deferred[None]:
                return Deferred()

        xclient = XClient(Never(), self.pending_dial, self.clock)
        d = xclient.call("Foo.Sum", Args())
        broadcast = xclient.broadcast("Foo.Sum", Args())
        self.successResultOf(xclient.close())
        self.failureResultOf(d, ConnectionShutdown)
        self.failureResultOf(broadcast, ConnectionShutdown)
        self.assertEqual(self.dials, [])

        never_started = RegistryDiscovery(self.clock, lambda *a: Deferred(), "http://r/")
        idle = XClient(never_started, self.pending_dial, self.clock)
        self.failureResultOf(idle.call("Foo.Sum", Args()), NoServers)  # at once

    def test_the_wait_for_the_first_list_counts_against_the_timeout(self) -> None:
        class Late(StaticDiscovery):
            def __init__(self) -> None:
                super().__init__()
                self.first: Deferred[None] = Deferred()

            def ready(self) -> Deferred[None]:
                return self.first

        discovery = Late()
        xclient = XClient(discovery, self.pending_dial, self.clock)
        d = xclient.call("Foo.Sum", Args(), timeout=2)
        self.clock.advance(1.5)
        discovery.update(["tcp@a:1"])
        discovery.first.callback(None)
        self.clock.advance(0.49)
        self.assertNoResult(d)
        self.clock.advance(0.01)  # 2 s in all, not 1.5 + 2
        self.failureResultOf(d, ConnectTimeout)
        self.successResultOf(xclient.close())

    def test_fail_try_does_not_redial_a_server_that_left(self) -> None:
        discovery = StaticDiscovery(["tcp@a:1", "tcp@b:1"])
        xclient = XClient(
            discovery,
            self.pending_dial,
            self.clock,
            selector=RoundRobinSelect(random.Random(0)),  # starts at a
            mode=FailMode.FAIL_TRY,
        )
        d = xclient.call("Foo.Sum", Args())
        discovery.update(["tcp@b:1"])  # a leaves while dialled: its waiter fails over...
        self.clock.advance(1)
        self.assertEqual(len(self.dials), 2)  # ...to b, not to a again
        connection = self.serve()
        self.dials[1].callback(connection.client)
        connection.flush()
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(xclient.connections, ["tcp@b:1"])
        closed = xclient.close()
        connection.flush()
        self.successResultOf(closed)


class ClientPoolTests(SynchronousTestCase):
    """The XClient's connections, one per address."""

    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.servers = ["tcp@a:1", "tcp@b:1"]
        self.dials: list[Deferred[Client]] = []
        self.cancelled: list[Deferred[Client]] = []
        self.pool = ClientPool(
            self.dial, lambda: self.servers, self.clock, cooldown=1, max_cooldown=3
        )

    def dial(self, address: str) -> Deferred[Client]:
        dial: Deferred[Client] = Deferred(self.cancelled.append)
        self.dials.append(dial)
        return dial

    def connection(self) -> InMemoryConnection:
        server = Server(self.clock)
        register_examples(server)
        connection = connect_in_memory(server, clock=self.clock)
        self.addCleanup(connection.close)
        return connection

    def test_one_dial_serves_every_waiter_then_the_cache(self) -> None:
        first, second = self.pool.client("tcp@a:1"), self.pool.client("tcp@a:1")
        self.assertEqual((len(self.dials), self.pool.connections), (1, ["tcp@a:1"]))
        self.assertIsNone(self.pool.cached("tcp@a:1"))
        connection = self.connection()
        self.dials[0].callback(connection.client)
        self.assertIs(self.successResultOf(first), connection.client)
        self.assertIs(self.successResultOf(second), connection.client)
        self.assertIs(self.pool.cached("tcp@a:1"), connection.client)
        self.assertIs(self.successResultOf(self.pool.client("tcp@a:1")), connection.client)
        self.assertEqual(len(self.dials), 1)

    def test_a_dead_client_is_dropped_and_dialled_again(self) -> None:
        connection = self.connection()
        first = self.pool.client("tcp@a:1")
        self.dials[0].callback(connection.client)
        self.successResultOf(first)
        connection.client.close()
        connection.flush()
        self.assertIsNone(self.pool.cached("tcp@a:1"))
        again = self.pool.client("tcp@a:1")
        self.assertEqual(len(self.dials), 2)
        self.assertNoResult(again)

    def test_a_cancelled_waiter_is_forgotten_while_the_dial_goes_on(self) -> None:
        patient, hasty = self.pool.client("tcp@a:1"), self.pool.client("tcp@a:1")
        hasty.cancel()
        self.failureResultOf(hasty, CancelledError)
        self.assertFalse(self.dials[0].called)
        connection = self.connection()
        self.dials[0].callback(connection.client)
        self.assertIs(self.successResultOf(patient), connection.client)
        self.assertIs(self.pool.cached("tcp@a:1"), connection.client)

    def test_a_failed_dial_fails_its_waiters_and_cools_the_address(self) -> None:
        self.assertEqual((self.pool.cooling, self.pool.warm(self.servers)), (False, self.servers))
        for period in (1, 2, 3, 3):  # doubling, up to max_cooldown
            waiting = self.pool.client("tcp@a:1")
            self.dials[-1].errback(ConnectFailed("refused"))
            self.failureResultOf(waiting, ConnectFailed)
            self.assertEqual(self.pool.connections, [])
            self.assertEqual(self.pool.warm(self.servers), ["tcp@b:1"])
            self.clock.advance(period - 0.01)
            self.assertEqual(self.pool.warm(self.servers), ["tcp@b:1"])
            self.clock.advance(0.01)
            self.assertEqual(self.pool.warm(self.servers), self.servers)
        self.pool.keep(["tcp@b:1"])  # a leaves: its cooldown is forgotten
        self.assertFalse(self.pool.cooling)

    def test_a_server_leaving_fails_the_calls_waiting_for_its_dial(self) -> None:
        waiting = self.pool.client("tcp@a:1")
        self.pool.keep(["tcp@b:1"])
        self.failureResultOf(waiting, ConnectFailed)  # never sent: fail-over may retry
        self.assertEqual(self.cancelled, self.dials)
        self.assertEqual(self.pool.connections, [])

    def test_a_dial_ending_after_its_server_left_is_not_kept(self) -> None:
        waiting = self.pool.client("tcp@a:1")
        self.servers = []  # gone without telling (as a listener might learn late)
        connection = self.connection()
        self.dials[0].callback(connection.client)
        self.assertIs(self.successResultOf(waiting), connection.client)  # its waiter is served
        self.assertEqual(self.pool.connections, [])  # but nothing is cached
        self.assertFalse(connection.client.available)  # and, idle, it is closed

    def test_close_closes_every_connection_and_fails_the_waiters(self) -> None:
        connection = self.connection()
        ready = self.pool.client("tcp@a:1")
        self.dials[0].callback(connection.client)
        self.successResultOf(ready)
        waiting = self.pool.client("tcp@b:1")
        closed = self.pool.close()
        connection.flush()
        self.successResultOf(closed)
        self.failureResultOf(waiting, ConnectionShutdown)
        self.assertEqual(self.cancelled, [self.dials[1]])
        self.assertFalse(connection.client.available)
        self.assertEqual(self.pool.connections, [])
        self.failureResultOf(self.pool.client("tcp@a:1"), ConnectionShutdown)
        self.assertEqual(len(self.dials), 2)
