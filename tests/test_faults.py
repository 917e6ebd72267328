"""Resilience in memory: the client's and the server's typed-error guarantees
under injected faults, through the real connect() and the one-port factory."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Client, connect
from txgeerpc.errors import CallTimeout, ConnectionShutdown, UnexpectedDisconnect
from txgeerpc.examples import Args
from txgeerpc.testing import MemoryConnection, MemoryNetwork
from txgeerpc.testing._memory import BUFFER_SIZE

from ._helpers import checked_clock, example_server


class FaultTests(SynchronousTestCase):
    scheme = "tcp"

    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.network = MemoryNetwork(self.clock)
        self.faults = self.network.faults
        self.server = example_server(self.clock, max_in_flight=1024)
        self.port = self.network.listen(self.server.port_factory())
        self.addCleanup(self.network.close)
        d = connect(self.network.reactor, f"{self.scheme}@{self.port.address}", connect_timeout=5)
        self.network.flush()
        self.client: Client = self.successResultOf(d)
        [self.connection] = self.network.connections
        self.warm_up()

    def warm_up(self) -> None:
        """One call first: gob sends its type definitions with the first reply."""
        self.assertEqual(self.call("Arith.Echo", "warm"), "warm")

    def call(self, method: str, argument: Any) -> Any:
        d = self.client.call(method, argument, timeout=5)
        self.network.flush()
        return self.successResultOf(d)

    def close(self) -> None:
        """Without faults, close the client: the server sees the connection go
        and nothing is left."""
        self.faults.clear()
        self.client.close()
        self.network.advance(5)  # bytes already under latency arrive
        self.assertEqual((self.server.connections, self.network.connections), (0, []))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_blackholed_reply_times_out_and_leaves_nothing_pending(self) -> None:
        self.faults.to_client.blackhole = True
        d = self.client.call("Arith.Echo", "lost", timeout=3)
        self.network.advance(2.9)
        self.assertNoResult(d)
        self.assertEqual(self.server.services["Arith"].methods["Echo"].stats.calls, 2)
        self.network.advance(0.1)
        self.assertEqual(self.failureResultOf(d, CallTimeout).value.timeout, 3)
        self.assertEqual(self.client.pending, 0)
        self.assertGreater(self.connection.to_client.dropped, 0)
        self.close()

    def test_a_blackholed_request_times_out_and_never_runs(self) -> None:
        self.faults.to_server.blackhole = True
        d = self.client.call("Arith.Echo", "lost", timeout=3)
        self.network.advance(3)
        self.failureResultOf(d, CallTimeout)
        self.assertEqual(self.client.pending, 0)
        self.assertEqual(self.server.services["Arith"].methods["Echo"].stats.calls, 1)
        self.close()

    def test_a_reset_fails_pending_calls_with_unexpected_disconnect(self) -> None:
        calls = [self.client.call("Foo.Sleep", Args(10), timeout=60) for _ in range(3)]
        self.network.flush()
        self.assertEqual(self.server.services["Foo"].methods["Sleep"].stats.in_flight, 3)
        self.faults.reset()
        self.network.flush()
        for d in calls:
            self.failureResultOf(d, UnexpectedDisconnect)
        self.assertFalse(self.client.available)
        self.failureResultOf(self.client.call("Foo.Sum", Args()), ConnectionShutdown)
        self.assertEqual(self.server.services["Foo"].methods["Sleep"].stats.in_flight, 0)
        self.close()

    def test_a_reply_cut_mid_frame_is_never_delivered_in_part(self) -> None:
        text = "x" * 300
        before = self.connection.to_client.forwarded
        self.assertEqual(self.call("Arith.Echo", text), text)
        reply = self.connection.to_client.forwarded - before
        # The next reply arrives whole; the one after is cut in its middle.
        self.faults.to_client.cut_after = reply + reply // 2
        first = self.client.call("Arith.Echo", text, timeout=5)
        second = self.client.call("Arith.Echo", text, timeout=5)
        self.network.flush()
        self.assertEqual(self.successResultOf(first), text)
        self.failureResultOf(second, UnexpectedDisconnect)
        self.assertEqual(self.client.pending, 0)
        self.close()

    def test_a_request_cut_mid_frame_is_not_run(self) -> None:
        self.faults.to_server.cut_after = 10
        d = self.client.call("Arith.Echo", "y" * 100, timeout=5)
        self.network.flush()
        self.failureResultOf(d, UnexpectedDisconnect)
        self.assertEqual(self.server.services["Arith"].methods["Echo"].stats.calls, 1)
        self.close()

    def test_latency_delays_but_does_not_break(self) -> None:
        self.faults.to_server.latency = 1
        self.faults.to_client.latency = 2
        slow = self.client.call("Arith.Echo", "late", timeout=10)
        too_slow = self.client.call("Arith.Echo", "too late", timeout=2.5)
        self.network.advance(2.5)
        self.failureResultOf(too_slow, CallTimeout)
        self.assertNoResult(slow)
        self.network.advance(0.5)
        self.assertEqual(self.successResultOf(slow), "late")
        self.faults.to_client.latency = 0  # changed on the live connection
        quick = self.client.call("Arith.Echo", "quick", timeout=10)
        self.network.advance(1)
        self.assertEqual(self.successResultOf(quick), "quick")
        self.assertEqual(self.client.pending, 0)
        self.close()

    def test_pause_holds_bytes_until_resumed(self) -> None:
        self.faults.pause()
        d = self.client.call("Arith.Echo", "held", timeout=60)
        self.network.advance(30)
        self.assertNoResult(d)
        self.assertEqual(self.server.services["Arith"].methods["Echo"].stats.calls, 1)
        self.faults.resume()
        self.network.flush()
        self.assertEqual(self.successResultOf(d), "held")
        self.close()

    def test_a_slow_reader_makes_the_server_stop_reading(self) -> None:
        server_side = self.connection.server
        text = "z" * 2000
        before = self.connection.to_client.forwarded
        self.assertEqual(self.call("Arith.Echo", text), text)
        reply = self.connection.to_client.forwarded - before
        before += reply
        calls = [self.client.call("Arith.Echo", text, timeout=600) for _ in range(400)]
        self.faults.to_client.slow_reader(1000, interval=0.125)
        most_buffered = 0
        paused_at = None
        for step in range(80):
            self.network.advance(0.125)
            most_buffered = max(most_buffered, server_side.buffered)
            if paused_at is None and not server_side.reading:
                paused_at = step
        # The server's writes filled its transport: it stopped reading, so
        # requests wait in the network and in the client, not in the server.
        self.assertIsNotNone(paused_at)
        self.assertTrue(server_side.producer_paused)
        self.assertFalse(server_side.reading)
        answered = self.server.services["Arith"].methods["Echo"].stats.calls - 2
        self.assertLess(answered, 400)
        self.assertGreater(self.connection.to_server.queued + self.connection.client.buffered, 0)
        self.assertLess(most_buffered, 2 * BUFFER_SIZE)
        # 1000 bytes at 0 s and every 1/8 s up to 10 s; whole replies complete calls.
        self.assertEqual(self.connection.to_client.forwarded - before, 1000 * 81)
        self.assertEqual(sum(1 for d in calls if d.called), 1000 * 81 // reply)
        # A reader that keeps up again: everything is answered.
        self.faults.to_client.clear()
        self.network.flush()
        self.assertEqual([self.successResultOf(d) for d in calls], [text] * 400)
        self.assertTrue(server_side.reading)
        self.close()

    def test_faults_apply_to_connections_made_later(self) -> None:
        self.faults.to_client.latency = 1
        d: Deferred[Client] = connect(
            self.network.reactor, f"{self.scheme}@{self.port.address}", connect_timeout=5
        )
        self.network.advance(1)  # over HTTP, the 200 line takes that long
        other = self.successResultOf(d)
        call = other.call("Arith.Echo", "second", timeout=5)
        self.network.advance(0.9)
        self.assertNoResult(call)
        self.network.advance(0.1)
        self.assertEqual(self.successResultOf(call), "second")
        self.assertEqual(self.faults.connections, 2)
        other.close()
        self.close()


class HTTPConnectFaultTests(FaultTests):
    """The same over ``CONNECT``: the faults apply to the HTTP exchange too."""

    scheme = "http"

    def test_the_connect_exchange_takes_the_round_trip(self) -> None:
        self.faults.to_server.latency = 1
        self.faults.to_client.latency = 1
        d = connect(self.network.reactor, f"http@{self.port.address}", connect_timeout=5)
        self.network.advance(1.9)
        self.assertNoResult(d)
        self.network.advance(0.1)
        other = self.successResultOf(d)
        other.close()
        self.close()


class MemoryConnectionTypeTests(SynchronousTestCase):
    def test_connections_are_exposed(self) -> None:
        clock = checked_clock(self)
        network = MemoryNetwork(clock)
        port = network.listen(example_server(clock).port_factory())
        d = connect(network.reactor, f"tcp@{port.address}")
        network.flush()
        client = self.successResultOf(d)
        [connection] = network.connections
        self.assertIsInstance(connection, MemoryConnection)
        self.assertEqual(connection.server.getHost(), port.getHost())
        self.assertEqual(connection.client.getPeer(), port.getHost())
        client.close()
        network.close()
