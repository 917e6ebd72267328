"""The dispatcher alone, with a recording sender and no transport."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
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
