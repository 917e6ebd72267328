"""
The client's timeouts: one timer per connection (txgeerpc._pending), pinned to
what a ``Deferred.addTimeout`` per call (the general mechanism it replaces)
does on the same clock.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Client, Option
from txgeerpc._client_protocol import ClientProtocol
from txgeerpc._pending import PendingCalls
from txgeerpc._wire import CANCEL, EXTENSION_VERSION, HELLO, Header
from txgeerpc.codec import default_registry
from txgeerpc.errors import CallTimeout, ConnectionShutdown

from ._helpers import checked_clock

_TIMEOUTS = (0.1, 0.25, 0.3, 0.7, 1, 1.7, 2.5)
_STEPS = (0, 0.05, 0.1, 0.2, 0.3, 0.7)


def _reply(seq: int, body: bytes = b"1") -> bytes:
    return b'{"ServiceMethod":"M.N","Seq":%d,"Error":""}\n%s\n' % (seq, body)


class ConnectionTimerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        option = Option(codec_type="application/json", extension=EXTENSION_VERSION)
        self.protocol = ClientProtocol(
            default_registry.get("json"), option, self.clock, max_message_size=10_000
        )
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        encoder = default_registry.get("json").new_encoder()
        self.protocol.dataReceived(encoder.encode(Header(HELLO, 0, ""), None))
        self.assertIs(self.protocol.speaks_extension, True)
        self.client = Client(self.protocol)

    def test_each_call_times_out_at_its_own_deadline_with_one_timer(self) -> None:
        # Calls with different timeouts, made at different times: each fails
        # exactly when its deadline comes (not a step before), in deadline
        # order, while the connection never has more than one timer.
        failed: dict[int, float] = {}

        def when(failure: Failure, index: int) -> Failure:
            failed[index] = self.clock.seconds()
            return failure

        made = []
        for index, timeout in enumerate((1.7, 0.3, 2.5, 0.3, 1.0)):
            d = self.client.call(f"S.M{index}", None, timeout=timeout)
            made.append((d.addErrback(when, index), timeout, index))
            self.assertEqual(len(self.clock.getDelayedCalls()), 1)
            self.clock.advance(0.1)
        deadlines = {index: 0.1 * index + timeout for _, timeout, index in made}
        while len(failed) < len(made):
            self.assertLessEqual(len(self.clock.getDelayedCalls()), 1)
            self.clock.advance(0.05)
        for d, timeout, index in made:
            error = self.failureResultOf(d, CallTimeout).value
            self.assertEqual((error.service_method, error.timeout), (f"S.M{index}", timeout))
            # The first step of the clock at or past its deadline.
            self.assertTrue(
                deadlines[index] <= failed[index] < deadlines[index] + 0.05 + 1e-9,
                (index, deadlines[index], failed[index]),
            )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_timeout_cancels_on_the_server_and_drops_the_late_reply(self) -> None:
        trailers: dict[str, str | bytes] = {}
        d = self.client.call("S.Slow", None, timeout=2, trailers=trailers)
        answered = self.client.call("S.Fast", None, timeout=2)
        self.transport.clear()
        self.protocol.dataReceived(_reply(2))
        self.assertEqual(self.successResultOf(answered), 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # S.Slow's still
        self.clock.advance(2)
        self.failureResultOf(d, CallTimeout)
        self.assertIn(b'"ServiceMethod":"%s","Seq":1' % CANCEL.encode(), self.transport.value())
        self.assertEqual((self.client.pending, self.protocol._trailer_sinks), (0, {}))
        self.protocol.dataReceived(_reply(1))  # late: dropped
        self.assertTrue(self.client.available)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_callback_may_cancel_a_call_due_at_the_same_moment(self) -> None:
        # Two calls due together: the first one's errback cancels the
        # second, which fails with CancelledError (as with a timer each),
        # not twice.
        first = self.client.call("S.A", None, timeout=1)
        second = self.client.call("S.B", None, timeout=1)
        first.addErrback(lambda f: second.cancel())
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(first))
        self.failureResultOf(second, CancelledError)
        self.assertEqual((self.client.pending, self.clock.getDelayedCalls()), (0, []))

    def test_a_call_made_by_a_timed_out_calls_errback_gets_its_own_deadline(self) -> None:
        later: list[Deferred[Any]] = []
        waiting = self.client.call("S.Waiting", None, timeout=3)
        first = self.client.call("S.A", None, timeout=1)

        def call_again(failure: Failure) -> Failure:
            later.append(self.client.call("S.B", None, timeout=0.5))
            return failure

        first.addErrback(call_again)
        self.clock.advance(1)
        self.failureResultOf(first, CallTimeout)
        self.clock.advance(0.4)
        self.assertNoResult(later[0])
        self.clock.advance(0.1)
        self.assertEqual(self.failureResultOf(later[0], CallTimeout).value.service_method, "S.B")
        self.assertNoResult(waiting)
        self.clock.advance(1.5)
        self.failureResultOf(waiting, CallTimeout)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_close_and_connection_loss_leave_no_timer(self) -> None:
        d = self.client.call("S.A", None, timeout=5)
        self.client.close()
        self.failureResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class TableTests(SynchronousTestCase):
    def test_the_timer_is_never_later_than_the_deadline(self) -> None:
        # After the timer fires for one call, it is set for the next one's
        # deadline: 1.7 here, where 0.6 + (1.7 - 0.6) is 1.7000000000000002.
        # A clock at exactly 1.7 (the time a DelayedCall per call would
        # have) times that call out.
        clock = Clock()
        table = PendingCalls(clock=clock)
        clock.advance(0.1)
        _, first = table.register("S.A", None)
        table.time_out(first, 0.5)
        clock.advance(0.1)
        _, second = table.register("S.B", None)
        table.time_out(second, 1.5)
        clock.advance(0.6 - 0.2)
        self.failureResultOf(first.deferred, CallTimeout)
        clock.advance(1.0 - 0.6)
        clock.advance(0.7)
        self.assertEqual(clock.seconds(), 0.2 + 1.5)
        self.failureResultOf(second.deferred, CallTimeout)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_the_timer_skips_the_deadlines_of_answered_calls(self) -> None:
        clock = Clock()
        table = PendingCalls(clock=clock)
        calls = []
        for timeout in (1, 2, 3, 5):
            _, call = table.register("S.M", None)
            table.time_out(call, timeout)
            calls.append(call)
        table.pop(2)
        table.pop(3)
        clock.advance(1)
        self.failureResultOf(calls[0].deferred, CallTimeout)
        [timer] = clock.getDelayedCalls()
        self.assertEqual(timer.getTime(), 5)  # not 2, then 3, then 5
        clock.advance(4)
        self.failureResultOf(calls[3].deferred, CallTimeout)
        self.assertEqual((len(table), clock.getDelayedCalls()), (0, []))

    def test_answered_calls_deadlines_do_not_pile_up(self) -> None:
        # 128 in flight, each answered long before its 10 s timeout: the
        # deadlines of answered calls are dropped as the heap grows, so it
        # stays within twice the live calls plus a constant.
        clock = Clock()
        table = PendingCalls(clock=clock)
        live = []
        for _ in range(128):
            _, call = table.register("S.M", None)
            table.time_out(call, 10)
            live.append(call.seq)
        for _ in range(10_000):
            table.pop(live.pop(0))
            _, call = table.register("S.M", None)
            table.time_out(call, 10)
            live.append(call.seq)
            clock.advance(0.0001)
        self.assertLessEqual(len(table._deadlines), 2 * 128 + 64 + 1)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        failures: list[Failure] = []
        for seq in live:
            table.calls[seq].deferred.addErrback(failures.append)
        table.fail_all(ConnectionShutdown)
        self.assertEqual(len(failures), 128)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_pinned_to_a_timer_per_call(self) -> None:
        # Random calls, timeouts, answers, cancels and clock steps, seeded:
        # after every step, each call's outcome (and the time it came) is
        # what Deferred.addTimeout on the same clock gives a twin Deferred.
        for seed in range(40):
            self._run_twins(random.Random(seed))

    def _run_twins(self, rng: random.Random) -> None:
        clock = Clock()
        cancels: list[int] = []
        table = PendingCalls(cancels.append, clock)
        calls: dict[int, Any] = {}
        twins: dict[int, Deferred[Any]] = {}
        outcomes: dict[int, tuple[str, float]] = {}
        expected: dict[int, tuple[str, float]] = {}

        def record(into: dict[int, tuple[str, float]], seq: int) -> Any:
            def outcome(result: Any) -> None:
                if isinstance(result, Failure):
                    kind = "timeout" if result.check(CallTimeout, TimeoutError) else "cancelled"
                else:
                    kind = "answered"
                into[seq] = (kind, clock.seconds())

            return outcome

        for _ in range(60):
            action = rng.random()
            if action < 0.4:
                timeout = rng.choice(_TIMEOUTS)
                seq, call = table.register("S.M", None)
                table.time_out(call, timeout)
                calls[seq] = call
                call.deferred.addBoth(record(outcomes, seq))
                twin: Deferred[Any] = Deferred()
                twin.addTimeout(timeout, clock)
                twin.addBoth(record(expected, seq))
                twins[seq] = twin
            elif action < 0.6 and table.calls:
                seq = rng.choice(sorted(table.calls))
                popped = table.pop(seq)
                assert popped is not None
                popped.deferred.callback(None)
                twins[seq].callback(None)
            elif action < 0.65 and table.calls:
                seq = rng.choice(sorted(table.calls))
                calls[seq].deferred.cancel()
                twins[seq].cancel()
            else:
                clock.advance(rng.choice(_STEPS))
            self.assertEqual(outcomes, expected)
        clock.advance(10)
        self.assertEqual(outcomes, expected)
        self.assertEqual(len(outcomes), len(calls))
        self.assertEqual(clock.getDelayedCalls(), [])
        # Every call that timed out or was cancelled, and only those, was
        # reported to on_cancel (the server is told).
        self.assertEqual(
            sorted(cancels),
            sorted(seq for seq, (kind, _) in outcomes.items() if kind != "answered"),
        )
