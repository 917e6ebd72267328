"""The dispatcher alone, with a recording sender and no transport."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc._dispatch import Dispatcher
from txgeerpc._service import build_service
from txgeerpc._wire import EMPTY_STRUCT, Header
from txgeerpc.errors import CodecError

from ._helpers import checked_clock


class RecordingSender:
    def __init__(self) -> None:
        self.sent: list[tuple[Header, Any]] = []

    def send_reply(self, header: Header, body: Any, body_type: Any = None) -> None:
        self.sent.append((header, body))


class Manual:
    def __init__(self) -> None:
        self.waiting: list[Deferred[int]] = []
        self.cancelled = 0

    def Wait(self) -> Deferred[int]:
        d: Deferred[int] = Deferred(lambda _: setattr(self, "cancelled", self.cancelled + 1))
        self.waiting.append(d)
        return d

    def Now(self, x: int) -> int:
        return x


def identity(body: object) -> object:
    return body


class DispatcherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.sender = RecordingSender()
        self.service = Manual()
        self.done: list[None] = []
        self.dispatcher = Dispatcher(
            {"Manual": build_service(self.service)},
            self.sender,
            self.clock,
            0,
            lambda: self.done.append(None),
        )

    def test_synchronous_reply_is_immediate_and_not_in_flight(self) -> None:
        self.dispatcher.dispatch(Header("Manual.Now", 1, "junk"), identity, 5)
        self.assertEqual(self.sender.sent, [(Header("Manual.Now", 1, ""), 5)])
        self.assertEqual(self.dispatcher.in_flight, 0)

    def test_asynchronous_reply_counts_in_flight(self) -> None:
        self.dispatcher.dispatch(Header("Manual.Wait", 1), identity, None)
        self.dispatcher.dispatch(Header("Manual.Wait", 2), identity, None)
        self.assertEqual(self.dispatcher.in_flight, 2)
        self.service.waiting[1].callback(7)
        self.assertEqual(self.sender.sent, [(Header("Manual.Wait", 2, ""), 7)])
        self.assertEqual((self.dispatcher.in_flight, len(self.done)), (1, 1))

    def test_unknown_method_never_decodes_body(self) -> None:
        def explode(body: object) -> object:
            raise AssertionError("decoded")

        self.dispatcher.dispatch(Header("Manual.Missing", 3), explode, b"...")
        self.assertEqual(
            self.sender.sent,
            [(Header("Manual.Missing", 3, "rpc server: can't find method Missing"), EMPTY_STRUCT)],
        )

    def test_body_decode_error_is_an_error_reply(self) -> None:
        def broken(body: object) -> object:
            raise CodecError("json: Expecting value")

        self.dispatcher.dispatch(Header("Manual.Now", 4), broken, b"")
        self.assertEqual(self.sender.sent[0][0].error, "json: Expecting value")

    def test_stop_cancels_and_sends_nothing(self) -> None:
        self.dispatcher.dispatch(Header("Manual.Wait", 1), identity, None)
        self.dispatcher.stop()
        self.assertEqual(self.service.cancelled, 1)
        self.assertEqual(self.sender.sent, [])
        self.assertEqual(self.dispatcher.in_flight, 0)


class Timed:
    """Handlers of every shape the plain path (no budget, metadata,
    interceptor or context) must tell apart."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock

    def Slow(self, x: int) -> int:
        self.clock.advance(0.003)  # a 3 ms handler: the 2.5-5 ms bucket
        return x

    def Fired(self, x: int) -> Deferred[int]:
        return succeed(x + 1)

    async def Coroutine(self, x: int) -> int:
        return x + 2

    def Mapping(self, x: int) -> dict[str, int]:
        return _Dict(x=x)

    def Boom(self, x: int) -> int:
        raise ValueError("no")


class _Dict(dict[str, int]):
    pass


class PlainPathTests(SynchronousTestCase):
    """The plain-call fast path counts, times, logs and answers exactly what
    the general path does."""

    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.sender = RecordingSender()
        self.events: list[dict[str, Any]] = []
        self.services = {"Timed": build_service(Timed(self.clock))}
        self.dispatcher = Dispatcher(
            self.services,
            self.sender,
            self.clock,
            0,
            lambda: None,
            peer="p:1",
            access_log=self.events.append,
        )

    def stats(self, name: str) -> Any:
        return self.services["Timed"].methods[name].stats

    def test_synchronous_call_accounting(self) -> None:
        self.dispatcher.dispatch(Header("Timed.Slow", 1), identity, 5, 40)
        stats = self.stats("Slow")
        self.assertEqual(self.sender.sent, [(Header("Timed.Slow", 1, ""), 5)])
        self.assertEqual((stats.calls, stats.in_flight, stats.outcomes), (1, 0, {"ok": 1}))
        self.assertAlmostEqual(stats.total_seconds, 0.003)
        self.assertAlmostEqual(stats.max_seconds, 0.003)
        self.assertEqual(stats.buckets[7], 1)  # LATENCY_BUCKETS[7] == 0.005
        self.assertEqual(sum(stats.buckets), 1)
        [event] = self.events
        self.assertEqual(
            {key: event[key] for key in ("peer", "method", "seq", "outcome", "request_bytes")},
            {"peer": "p:1", "method": "Timed.Slow", "seq": 1, "outcome": "ok", "request_bytes": 40},
        )
        self.assertAlmostEqual(event["duration"], 0.003)
        self.assertIsNone(event["reply_bytes"])  # RecordingSender does not say

    def test_the_fast_path_accounts_as_the_general_one(self) -> None:
        # _call_plain repeats _finish's accounting inline (measured: calling
        # _finish from it costs 2-8 % of the server's CPU per call): the same
        # call through both must leave the same counts and the same event.
        stats = self.stats("Slow")

        def snapshot() -> tuple[int, dict[str, int], float, list[int]]:
            return stats.calls, dict(stats.outcomes), stats.total_seconds, list(stats.buckets)

        self.dispatcher.dispatch(Header("Timed.Slow", 1), identity, 5, 40)
        plain = snapshot()
        plain_event = self.events[-1]
        budgeted = Header("Timed.Slow", 2, "", 10**9)  # a budget: the general path
        self.dispatcher.dispatch(budgeted, identity, 5, 40)
        both = snapshot()
        self.assertEqual(both[0] - plain[0], plain[0])
        self.assertEqual(both[1], {"ok": 2 * plain[1]["ok"]})
        self.assertAlmostEqual(both[2] - plain[2], plain[2])
        self.assertEqual([b - p for b, p in zip(both[3], plain[3], strict=True)], plain[3])
        general_event = self.events[-1]
        self.assertEqual(sorted(general_event), sorted(plain_event))
        for key in ("peer", "method", "outcome", "duration", "request_bytes", "reply_bytes"):
            self.assertEqual(general_event[key], plain_event[key], key)

    def test_deferred_coroutine_and_subclassed_results(self) -> None:
        for seq, name in enumerate(("Fired", "Coroutine", "Mapping"), 1):
            self.dispatcher.dispatch(Header(f"Timed.{name}", seq), identity, 1)
        self.assertEqual(
            self.sender.sent,
            [
                (Header("Timed.Fired", 1, ""), 2),
                (Header("Timed.Coroutine", 2, ""), 3),
                (Header("Timed.Mapping", 3, ""), {"x": 1}),
            ],
        )
        self.assertEqual(self.dispatcher.in_flight, 0)
        for name in ("Fired", "Coroutine", "Mapping"):
            self.assertEqual(self.stats(name).outcomes, {"ok": 1})

    def test_handler_error(self) -> None:
        self.dispatcher.dispatch(Header("Timed.Boom", 9), identity, 1)
        self.assertEqual(self.sender.sent, [(Header("Timed.Boom", 9, "no"), EMPTY_STRUCT)])
        self.assertEqual(self.stats("Boom").outcomes, {"error": 1})
        self.assertEqual(self.events[0]["outcome"], "error")

    def test_a_service_registered_after_a_miss_is_found(self) -> None:
        # Methods found are remembered by name; one not found must not be.
        self.dispatcher.dispatch(Header("Late.Now", 1), identity, 1)
        self.services["Late"] = build_service(Manual(), "Late")
        self.dispatcher.dispatch(Header("Late.Now", 2), identity, 7)
        self.assertEqual(self.sender.sent[0][0].error, "rpc server: can't find service Late")
        self.assertEqual(self.sender.sent[1], (Header("Late.Now", 2, ""), 7))

    def test_a_replaced_handler_function_is_called(self) -> None:
        self.dispatcher.dispatch(Header("Timed.Fired", 1), identity, 1)
        self.services["Timed"].methods["Fired"].function = lambda x: x * 10
        self.dispatcher.dispatch(Header("Timed.Fired", 2), identity, 1)
        self.assertEqual(self.sender.sent[1], (Header("Timed.Fired", 2, ""), 10))
