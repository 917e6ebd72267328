"""
The server side of a stream, driven byte by byte through StringTransport.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.main import CONNECTION_LOST
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Server
from txgeerpc._messages import MessagePairs
from txgeerpc._wire import Header, Option
from txgeerpc.codec import default_registry

from ._helpers import (
    JSON_OPTION,
    CapturedLogs,
    checked_clock,
    connected_server,
    example_server,
    json_request,
    vector,
)


def replies(data: bytes) -> list[object]:
    """Parse a JSON-codec reply stream into alternating header dicts and bodies."""
    return [json.loads(line) for line in data.split(b"\n") if line]


class Vector02ReplayTests(SynchronousTestCase):
    """Vector 02: the JSON exchange recorded against the reference (extension codec)."""

    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.server = example_server(self.clock)

    def test_replay_matches_reference_and_continues_after_unknown_method(self) -> None:
        client_bytes = vector("02-json-ext-tcp.c2s.bin")
        reference = vector("02-json-ext-tcp.s2c.bin")
        protocol, transport = connected_server(self, self.server)
        protocol.dataReceived(client_bytes)
        ours = transport.value()
        # Everything up to and including the unknown-method error reply is identical.
        unknown_reply_end = reference.index(b"{}\n", reference.index(b"Foo.Nope")) + 3
        self.assertEqual(ours[:unknown_reply_end], reference[:unknown_reply_end])
        # Unlike the reference, no spurious Seq-0 error: the next call simply succeeds.
        self.assertNotIn(b'"Seq":0', ours)
        self.assertEqual(
            ours[unknown_reply_end:],
            b'{"ServiceMethod":"Foo.Sum","Seq":5,"Error":""}\n17\n',
        )
        self.assertFalse(transport.disconnecting)
        self.assertEqual(
            self.flushLoggedErrors(ZeroDivisionError), []
        )  # a domain error: no traceback

    def test_replay_split_at_every_byte(self) -> None:
        client_bytes = vector("02-json-ext-tcp.c2s.bin")
        whole_protocol, whole = connected_server(self, self.server)
        whole_protocol.dataReceived(client_bytes)
        protocol, transport = connected_server(self, self.server)
        for index in range(len(client_bytes)):
            protocol.dataReceived(client_bytes[index : index + 1])
        self.assertEqual(transport.value(), whole.value())
        self.assertEqual(
            self.flushLoggedErrors(ZeroDivisionError), []
        )  # a domain error: no traceback

    def test_option_and_first_request_in_one_segment(self) -> None:
        protocol, transport = connected_server(self, self.server)
        protocol.dataReceived(JSON_OPTION + json_request("Foo.Sum", 1, b'{"Num1":1,"Num2":2}'))
        self.assertEqual(transport.value(), b'{"ServiceMethod":"Foo.Sum","Seq":1,"Error":""}\n3\n')

    def test_every_split_of_option_plus_request(self) -> None:
        stream = JSON_OPTION + json_request("Arith.Multiply", 7, b'{"Num1":6,"Num2":7}')
        expected = b'{"ServiceMethod":"Arith.Multiply","Seq":7,"Error":""}\n42\n'
        for cut in range(1, len(stream)):
            protocol, transport = connected_server(self, self.server)
            protocol.dataReceived(stream[:cut])
            protocol.dataReceived(stream[cut:])
            self.assertEqual(transport.value(), expected, f"split at {cut}")


class NegotiationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.server = example_server(self.clock, handshake_timeout=5)

    def assert_closed_silently(self, data: bytes, log_text: str) -> None:
        protocol, transport = connected_server(self, self.server)
        with CapturedLogs() as logs:
            protocol.dataReceived(data)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(logs.events), 1, logs.texts())
        self.assertIn(log_text, logs.texts()[0])
        # Only the deadline for a peer that never lets the close complete is left.
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(self.server.settings.drain_timeout)
        self.assertTrue(transport.disconnected)

    def test_wrong_magic(self) -> None:
        self.assert_closed_silently(vector("05-bad-magic.c2s.bin"), "invalid magic number 0")

    def test_unknown_codec(self) -> None:
        option = JSON_OPTION.replace(b"application/json", b"application/x-nope")
        self.assert_closed_silently(option, "invalid codec type application/x-nope")

    def test_missing_codec(self) -> None:
        self.assert_closed_silently(b'{"MagicNumber":3927900}\n', "invalid codec type ")

    def test_malformed_json(self) -> None:
        self.assert_closed_silently(b'{"MagicNumber":3927900,,}\n', "options error")

    def test_not_json_at_all(self) -> None:
        self.assert_closed_silently(b"GET / HTTP/1.1\r\n\r\n", "options error")

    def test_silent_peer_dropped_at_handshake_deadline(self) -> None:
        protocol, transport = connected_server(self, self.server)
        protocol.dataReceived(JSON_OPTION[:20])
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        with CapturedLogs() as logs:
            self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        self.assertIn("no Option", logs.texts()[0])
        protocol.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_completed_option_replaces_the_handshake_deadline_with_the_idle_one(self) -> None:
        protocol, transport = connected_server(self, self.server)
        protocol.dataReceived(JSON_OPTION)
        (idle,) = self.clock.getDelayedCalls()
        self.assertEqual(idle.getTime(), self.server.settings.idle_timeout)
        self.clock.advance(self.server.settings.idle_timeout)
        self.assertTrue(transport.disconnecting)

    def test_newline_after_option_in_later_segment_is_dropped(self) -> None:
        protocol, transport = connected_server(self, self.server)
        protocol.dataReceived(JSON_OPTION[:-1])
        protocol.dataReceived(b"\n")
        protocol.dataReceived(json_request("Arith.Echo", 1, b'"hi"'))
        self.assertEqual(
            transport.value(), b'{"ServiceMethod":"Arith.Echo","Seq":1,"Error":""}\n"hi"\n'
        )


class RequestErrorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.server = example_server(self.clock)
        self.protocol, self.transport = connected_server(self, self.server)
        self.protocol.dataReceived(JSON_OPTION)

    def call(self, method: str, seq: int, body: bytes) -> list[object]:
        self.transport.clear()
        self.protocol.dataReceived(json_request(method, seq, body))
        return replies(self.transport.value())

    def test_error_texts_are_geerpc_exact(self) -> None:
        cases = [
            ("NoDot", "rpc server: service/method request ill-formed: NoDot"),
            ("Nope.Sum", "rpc server: can't find service Nope"),
            ("Foo.Nope", "rpc server: can't find method Nope"),
            ("Arith.Divide", "divide by zero"),
        ]
        for seq, (method, text) in enumerate(cases, 1):
            header, body = self.call(method, seq, b'{"Num1":1,"Num2":0}')
            self.assertEqual(header, {"ServiceMethod": method, "Seq": seq, "Error": text})
            self.assertEqual(body, {})
        # ... and the connection goes on.
        self.assertEqual(self.call("Foo.Sum", 9, b'{"Num1":1,"Num2":2}')[1], 3)
        self.assertEqual(
            self.flushLoggedErrors(ZeroDivisionError), []
        )  # a domain error: no traceback

    def test_dotted_service_name_splits_at_last_dot(self) -> None:
        header, _ = self.call("a.b.C", 1, b"null")
        self.assertEqual(header["Error"], "rpc server: can't find service a.b")  # type: ignore[index]

    def test_domain_error_is_one_info_line_without_traceback(self) -> None:
        # Arith.Fail raises ExampleError, an RPCError; Arith.Divide ZeroDivisionError.
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        try:
            header, _body = self.call("Arith.Fail", 1, b'"100% sure <b>"')
            divided, _body = self.call("Arith.Divide", 2, b'{"Num1":1,"Num2":0}')
        finally:
            globalLogPublisher.removeObserver(events.append)
        self.assertEqual(header["Error"], "100% sure <b>")  # type: ignore[index]
        self.assertEqual(divided["Error"], "divide by zero")  # type: ignore[index]
        self.assertNotIn(b"Traceback", self.transport.value())
        self.assertEqual(
            [(event["log_level"], formatEvent(event)) for event in events],
            [
                (
                    LogLevel.info,
                    "rpc server: Arith.Fail from 192.168.1.1:54321 failed: 100% sure <b>",
                ),
                (
                    LogLevel.info,
                    "rpc server: Arith.Divide from 192.168.1.1:54321 failed: divide by zero",
                ),
            ],
        )
        self.assertFalse(any(event.get("log_failure") for event in events))

    def test_unexpected_exception_traceback_once_a_minute_per_method(self) -> None:
        class Buggy:
            def Crash(self, n: int) -> int:
                raise TypeError(f"bug {n}")

            def Other(self, n: int) -> int:
                raise KeyError(n) if n < 0 else AttributeError("other bug")

        self.server.register(Buggy())
        with CapturedLogs() as logs:
            for seq in range(1, 6):
                header, _ = self.call("Buggy.Crash", seq, str(seq).encode())
                self.assertEqual(header["Error"], f"bug {seq}")  # type: ignore[index]
            self.call("Buggy.Other", 6, b"1")  # another method: its own traceback
            self.clock.advance(60)
            self.call("Buggy.Crash", 7, b"7")
        failures = [event for event in logs.events if event.get("log_failure")]
        self.assertEqual(
            [(formatEvent(event).split(" (")[0], event.get("suppressed")) for event in failures],
            [
                ("rpc server: Buggy.Crash from 192.168.1.1:54321 failed: bug 1", 0),
                ("rpc server: Buggy.Other from 192.168.1.1:54321 failed: other bug", 0),
                ("rpc server: Buggy.Crash from 192.168.1.1:54321 failed: bug 7", 4),
            ],
        )
        self.assertEqual(len(logs.events), 7)  # the others: one line each
        self.assertIn("4 tracebacks left out", formatEvent(failures[2]))
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 2)
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)

    def test_wrong_argument_type_is_an_error_reply(self) -> None:
        header, _body = self.call("Arith.Multiply", 1, b'{"Num1":"six","Num2":7}')
        self.assertEqual(
            header["Error"],  # type: ignore[index]
            "rpc server: bad argument for Arith.Multiply: Args.Num1: expected int, got str 'six'",
        )
        self.assertEqual(self.call("Arith.Multiply", 2, b'{"Num1":6,"Num2":7}')[1], 42)

    def test_invalid_json_body_fails_only_its_call(self) -> None:
        self.transport.clear()
        self.protocol.dataReceived(
            json_request("Arith.Multiply", 1, b'{"Num1" 6}')
            + json_request("Arith.Multiply", 2, b'{"Num1":6,"Num2":7}')
        )
        first, _, second, body = replies(self.transport.value())
        self.assertTrue(first["Error"].startswith("json: "))  # type: ignore[index]
        self.assertEqual(
            (second, body), ({"ServiceMethod": "Arith.Multiply", "Seq": 2, "Error": ""}, 42)
        )
        self.assertFalse(self.transport.disconnecting)

    def test_client_supplied_error_is_not_echoed_on_success(self) -> None:
        self.transport.clear()
        self.protocol.dataReceived(
            b'{"ServiceMethod":"Foo.Sum","Seq":4,"Error":"sneaky"}\n{"Num1":1,"Num2":1}\n'
        )
        header, body = replies(self.transport.value())
        self.assertEqual(header, {"ServiceMethod": "Foo.Sum", "Seq": 4, "Error": ""})
        self.assertEqual(body, 2)

    def test_unencodable_reply_becomes_error_reply(self) -> None:
        class Weird:
            def Nan(self) -> float:
                return float("nan")

        self.server.register(Weird())
        with CapturedLogs():
            header, body = self.call("Weird.Nan", 1, b"null")
        self.assertTrue(header["Error"].startswith("rpc server: cannot encode reply"))  # type: ignore[index]
        self.assertEqual(body, {})

    def test_call_counts(self) -> None:
        self.call("Foo.Sum", 1, b"{}")
        self.call("Foo.Sum", 2, b"{}")
        self.call("Foo.Nope", 3, b"{}")
        with CapturedLogs():
            self.call("Arith.Divide", 4, b"{}")
        stats = self.server.services["Foo"].methods["Sum"].stats
        self.assertEqual((stats.calls, stats.errors, stats.in_flight), (2, 0, 0))
        divide = self.server.services["Arith"].methods["Divide"].stats
        self.assertEqual((divide.calls, divide.errors), (1, 1))
        self.flushLoggedErrors(ZeroDivisionError)


class GarbageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.server = example_server(self.clock, max_message_size=100, drain_timeout=3)
        self.protocol, self.transport = connected_server(self, self.server)
        self.protocol.dataReceived(JSON_OPTION)

    def test_garbage_after_option_closes_cleanly(self) -> None:
        with CapturedLogs() as logs:
            self.protocol.dataReceived(b"\x00\x01garbage")
        self.assertTrue(self.transport.disconnecting)
        self.assertIn("read header error", logs.texts()[0])

    def test_replies_before_garbage_in_the_same_segment_are_sent(self) -> None:
        with CapturedLogs():
            self.protocol.dataReceived(
                json_request("Foo.Sum", 1, b'{"Num1":1}')
                + json_request("Arith.Echo", 2, b'"x"')
                + b"@@@"
            )
        self.assertEqual([body for body in replies(self.transport.value())[1::2]], [1, "x"])
        self.assertTrue(self.transport.disconnecting)

    def test_oversized_message_closes_with_a_clear_log(self) -> None:
        with CapturedLogs() as logs:
            self.protocol.dataReceived(b'{"ServiceMethod":"' + b"x" * 200)
        self.assertTrue(self.transport.disconnecting)
        self.assertIn("exceeds the limit of 100 bytes", logs.texts()[0])

    def test_header_of_wrong_shape_closes(self) -> None:
        with CapturedLogs():
            self.protocol.dataReceived(b'[1,2]\n"body"\n')
        self.assertTrue(self.transport.disconnecting)

    def test_in_flight_requests_finish_before_close(self) -> None:
        self.protocol.dataReceived(json_request("Foo.Sleep", 1, b'{"Num1":1,"Num2":1}'))
        with CapturedLogs():
            self.protocol.dataReceived(b"@@@")
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(
            replies(self.transport.value()),
            [{"ServiceMethod": "Foo.Sleep", "Seq": 1, "Error": ""}, 2],
        )
        self.assertTrue(self.transport.disconnecting)
        self.protocol.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_drain_is_bounded(self) -> None:
        self.protocol.dataReceived(json_request("Foo.Sleep", 1, b'{"Num1":60}'))
        with CapturedLogs():
            self.protocol.dataReceived(b"@@@")
        self.clock.advance(3)
        self.assertTrue(self.transport.disconnected)
        self.protocol.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.transport.value(), b"")

    def test_other_connections_unaffected(self) -> None:
        other, other_transport = connected_server(self, self.server)
        other.dataReceived(JSON_OPTION)
        with CapturedLogs():
            self.protocol.dataReceived(b"\xff\xfe")
        other.dataReceived(json_request("Foo.Sum", 1, b'{"Num1":2,"Num2":2}'))
        self.assertEqual(replies(other_transport.value())[1], 4)
        self.assertFalse(other_transport.disconnecting)


class HandleTimeoutTests(SynchronousTestCase):
    def start(self, client_timeout_ns: int, **settings: object) -> None:
        self.clock = checked_clock(self)
        self.server = example_server(self.clock, **settings)  # type: ignore[arg-type]
        self.protocol, self.transport = connected_server(self, self.server)
        self.protocol.dataReceived(
            JSON_OPTION.replace(b'"HandleTimeout":0', b'"HandleTimeout":%d' % client_timeout_ns)
        )

    def test_timeout_reply_text_cancels_handler_and_no_second_reply(self) -> None:
        self.start(250_000_000)
        self.protocol.dataReceived(json_request("Foo.Sleep", 1, b'{"Num1":1,"Num2":2}'))
        self.clock.advance(0.249)
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0.001)
        self.assertEqual(
            replies(self.transport.value()),
            [
                {
                    "ServiceMethod": "Foo.Sleep",
                    "Seq": 1,
                    "Error": "rpc server: request handle timeout: expect within 250ms",
                },
                {},
            ],
        )
        # The sleeping handler was cancelled: nothing is left scheduled ...
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # ... and the connection keeps working.
        self.transport.clear()
        self.protocol.dataReceived(json_request("Arith.Echo", 2, b'"hi"'))
        self.assertEqual(replies(self.transport.value())[1], "hi")

    def test_server_maximum_caps_client_timeout(self) -> None:
        self.start(0, handle_timeout=1.5)
        self.protocol.dataReceived(json_request("Foo.Sleep", 1, b'{"Num1":5}'))
        self.clock.advance(1.5)
        self.assertEqual(
            replies(self.transport.value())[0]["Error"],  # type: ignore[index]
            "rpc server: request handle timeout: expect within 1.5s",
        )

    def test_negative_client_timeout_does_not_fail_every_call(self) -> None:
        self.start(-1)
        self.protocol.dataReceived(json_request("Foo.Sleep", 1, b'{"Num1":2,"Num2":1}'))
        self.clock.advance(2)
        self.assertEqual(replies(self.transport.value())[1], 3)

    def test_coroutine_handler_is_cancelled_on_timeout(self) -> None:
        self.start(1_000_000_000)
        cancelled: list[bool] = []

        class Slow:
            async def Wait(self) -> int:
                waiting: Deferred[int] = Deferred(lambda d: cancelled.append(True))
                return await waiting

        self.server.register(Slow())
        self.protocol.dataReceived(json_request("Slow.Wait", 1, b"null"))
        self.clock.advance(1)
        self.assertEqual(cancelled, [True])
        self.assertIn(b"expect within 1s", self.transport.value())


class ConcurrencyTests(SynchronousTestCase):
    def test_replies_in_completion_order(self) -> None:
        clock = checked_clock(self)
        server = example_server(clock)
        protocol, transport = connected_server(self, server)
        protocol.dataReceived(
            JSON_OPTION
            + json_request("Foo.Sleep", 1, b'{"Num1":3}')
            + json_request("Foo.Sleep", 2, b'{"Num1":1}')
            + json_request("Foo.Sum", 3, b'{"Num1":1}')
        )
        clock.advance(1)
        clock.advance(2)
        seqs = [item["Seq"] for item in replies(transport.value())[::2]]  # type: ignore[index]
        self.assertEqual(seqs, [3, 2, 1])

    def test_in_flight_limit_pauses_reading_and_resumes(self) -> None:
        clock = checked_clock(self)
        server = example_server(clock, max_in_flight=2)
        protocol, transport = connected_server(self, server)
        requests = b"".join(json_request("Foo.Sleep", n, b'{"Num1":1}') for n in range(1, 6))
        protocol.dataReceived(JSON_OPTION + requests)
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(server.services["Foo"].methods["Sleep"].stats.in_flight, 2)
        clock.advance(1)  # two finish, two more start from the buffer
        self.assertEqual(server.services["Foo"].methods["Sleep"].stats.in_flight, 2)
        self.assertEqual(transport.producerState, "paused")
        clock.advance(1)
        clock.advance(1)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(len(replies(transport.value())), 10)

    def test_long_batches_are_answered_in_turns(self) -> None:
        clock = checked_clock(self)
        server = example_server(clock)
        protocol, transport = connected_server(self, server)
        protocol.dataReceived(
            JSON_OPTION + b"".join(json_request("Foo.Sum", n, b"{}") for n in range(1, 41))
        )
        # 16 requests, then the reactor gets a turn; reading waits meanwhile, so
        # buffered requests cannot pile up.  (A Clock runs every turn due at once.)
        self.assertEqual(len(replies(transport.value())) // 2, 16)
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0)
        self.assertEqual(len(replies(transport.value())) // 2, 40)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_connection_lost_cancels_the_next_turn(self) -> None:
        clock = checked_clock(self)
        protocol, _transport = connected_server(self, example_server(clock))
        protocol.dataReceived(
            JSON_OPTION + b"".join(json_request("Foo.Sum", n, b"{}") for n in range(1, 20))
        )
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        protocol.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_full_write_buffer_pauses_reading(self) -> None:
        server = example_server(checked_clock(self))
        protocol, transport = connected_server(self, server)
        protocol.dataReceived(JSON_OPTION)
        self.assertIs(transport.producer, protocol)
        protocol.pauseProducing()  # what the transport does when its buffer fills
        self.assertEqual(transport.producerState, "paused")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_connection_lost_cancels_running_handlers(self) -> None:
        clock = checked_clock(self)
        server = example_server(clock)
        protocol, _transport = connected_server(self, server)
        protocol.dataReceived(JSON_OPTION + json_request("Foo.Sleep", 1, b'{"Num1":10}'))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        protocol.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(server.services["Foo"].methods["Sleep"].stats.in_flight, 0)
        self.assertEqual(server.connections, 0)


class ServerConstructionTests(SynchronousTestCase):
    def test_limits_must_be_positive(self) -> None:
        self.assertRaises(ValueError, Server, Clock(), max_in_flight=0)
        self.assertRaises(ValueError, Server, Clock(), max_message_size=0)


@dataclass
class Positive:
    N: int = 0

    def __post_init__(self) -> None:
        if self.N < 0:
            raise ValueError("N must be positive")


class Checker:
    def Check(self, value: Positive) -> int:
        return value.N


class RobustnessTests(SynchronousTestCase):
    """Handlers and arguments that misbehave must cost one error reply, nothing more."""

    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.server = example_server(self.clock, handle_timeout=1, max_in_flight=1)
        self.protocol, self.transport = connected_server(self, self.server)
        self.protocol.dataReceived(JSON_OPTION)

    def test_unencodable_huge_int_reply(self) -> None:
        class Huge:
            def Big(self) -> int:
                return 10**5000

        self.server.register(Huge())
        with CapturedLogs():
            self.protocol.dataReceived(json_request("Huge.Big", 1, b"null"))
        header, body = replies(self.transport.value())
        self.assertEqual(body, {})
        self.assertIn("cannot encode reply", header["Error"])  # type: ignore[index]
        self.transport.clear()
        self.protocol.dataReceived(json_request("Foo.Sum", 2, b'{"Num1":1}'))
        self.assertEqual(replies(self.transport.value())[1], 1)

    def test_handler_raising_base_exception(self) -> None:
        class Bail(BaseException):
            pass

        class Bailing:
            def Out(self) -> int:
                raise Bail("bailing out")

        self.server.register(Bailing())
        with CapturedLogs():
            self.protocol.dataReceived(
                json_request("Bailing.Out", 1, b"null") + json_request("Foo.Sum", 2, b"{}")
            )
        first, _, second, body = replies(self.transport.value())
        self.assertEqual(first["Error"], "bailing out")  # type: ignore[index]
        self.assertEqual((second["Seq"], body), (2, 0))  # type: ignore[index]
        stats = self.server.services["Bailing"].methods["Out"].stats
        self.assertEqual((stats.calls, stats.errors, stats.in_flight), (1, 1, 0))
        self.assertEqual(len(self.flushLoggedErrors(Bail)), 1)

    def test_argument_validation_raising_anything(self) -> None:
        self.server.register(Checker())
        with CapturedLogs():
            self.protocol.dataReceived(json_request("Checker.Check", 1, b'{"N":-1}'))
        header, _ = replies(self.transport.value())
        self.assertEqual(
            header["Error"],  # type: ignore[index]
            "rpc server: bad argument for Checker.Check: N must be positive",
        )
        self.assertEqual(self.flushLoggedErrors(ValueError), [])  # a domain error: one line
        self.assertFalse(self.transport.disconnecting)

    def test_already_fired_but_paused_deferred_is_tracked(self) -> None:
        lock = DeferredLock()

        class Locked:
            def Run(self) -> Deferred[int]:
                return lock.run(lambda: deferLater(self_clock, 5, lambda: 7))

        self_clock = self.clock
        self.server.register(Locked())
        self.protocol.dataReceived(
            json_request("Locked.Run", 1, b"null") + json_request("Foo.Sum", 2, b"{}")
        )
        # Counted as in flight: the limit of 1 holds the second request back ...
        self.assertEqual(self.transport.producerState, "paused")
        self.assertEqual(self.transport.value(), b"")
        # ... and the handle timeout applies and cancels the work.
        self.clock.advance(1)
        first, _, second, body = replies(self.transport.value())
        self.assertIn("handle timeout", first["Error"])  # type: ignore[index]
        self.assertEqual((second["Seq"], body), (2, 0))  # type: ignore[index]

    def test_shared_deferred_keeps_its_value_for_everyone(self) -> None:
        cached: Deferred[int] = Deferred()

        class Cache:
            def Get(self) -> Deferred[int]:
                return cached

        self.server.register(Cache())
        other, other_transport = connected_server(self, self.server)
        other.dataReceived(JSON_OPTION)
        self.protocol.dataReceived(json_request("Cache.Get", 1, b"null"))
        other.dataReceived(json_request("Cache.Get", 1, b"null"))
        cached.callback(5)
        self.assertEqual(replies(self.transport.value())[1], 5)
        self.assertEqual(replies(other_transport.value())[1], 5)
        self.assertEqual(self.successResultOf(cached), 5)

    def test_paused_for_full_write_buffer_runs_nothing_new(self) -> None:
        self.protocol.pauseProducing()
        self.protocol.dataReceived(json_request("Foo.Sum", 1, b"{}"))
        self.assertEqual(self.transport.value(), b"")
        self.protocol.resumeProducing()
        self.assertEqual(replies(self.transport.value())[1], 0)

    def test_close_after_protocol_error_unregisters_producer(self) -> None:
        self.protocol.pauseProducing()
        with CapturedLogs():
            self.protocol.dataReceived(b"@@@")
            self.protocol.resumeProducing()
        self.assertIsNone(self.transport.producer)
        self.assertTrue(self.transport.disconnecting)


class CodecNameTests(SynchronousTestCase):
    def test_aliases_are_for_humans_not_the_wire(self) -> None:
        server = example_server(checked_clock(self))
        protocol, transport = connected_server(self, server)
        with CapturedLogs() as logs:
            protocol.dataReceived(JSON_OPTION.replace(b"application/json", b"json"))
        self.assertTrue(transport.disconnecting)
        self.assertIn("rpc server: invalid codec type json", logs.texts()[0])


class RecordingTCP(tcp.Connection):
    """A TCP transport (for the isinstance check) that records what goes
    through ``write`` (buffered for the reactor) and what its socket sent."""

    def __init__(self) -> None:  # no socket, no reactor
        self.written: list[bytes] = []
        self.sent: list[bytes] = []
        self.connected = True
        self.disconnecting = False
        self.dataBuffer = b""
        self._tempDataBuffer: list[bytes] = []
        self._writeDisconnected = False
        self.takes: int | None = None  # bytes the socket takes per send (None: all)
        self.outcome: object = None  # what a send returns instead, if set

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 4321)

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writeSomeData(self, data: bytes) -> object:
        if self.outcome is not None:
            return self.outcome
        taken = data[: self.takes] if self.takes is not None else data
        self.sent.append(bytes(taken))
        return len(taken)

    def loseConnection(self, reason: object = None) -> None:
        self.disconnecting = True

    def abortConnection(self) -> None:
        self.disconnecting = True


class SendAtOnceTests(SynchronousTestCase):
    """On TCP the replies of a read are sent before dataReceived returns,
    straight to the socket (no epoll registration for writing), not on the
    reactor's next turn; anything the socket does not take goes through
    ``write`` for the reactor."""

    def connect(self) -> tuple[Any, RecordingTCP]:
        clock = checked_clock(self)
        protocol = example_server(clock).factory().buildProtocol(None)
        transport = RecordingTCP()
        protocol.makeConnection(transport)
        protocol.dataReceived(JSON_OPTION)
        self.addCleanup(protocol.connectionLost, connectionDone)
        return protocol, transport

    def multiply(self, protocol: Any, *seqs: int) -> None:
        protocol.dataReceived(
            b"".join(
                json_request("Arith.Multiply", n, b'{"Num1":%d,"Num2":2}' % n) for n in seqs
            )
        )

    def test_replies_of_a_read_sent_at_once_in_one_send(self) -> None:
        protocol, transport = self.connect()
        self.multiply(protocol, 1, 2)
        self.assertEqual(transport.written, [])
        [sent] = transport.sent
        self.assertEqual(replies(sent)[1::2], [2, 4])

    def test_what_the_socket_does_not_take_goes_to_the_reactor(self) -> None:
        protocol, transport = self.connect()
        transport.takes = 10
        self.multiply(protocol, 1, 2)
        [sent] = transport.sent
        [rest] = transport.written
        self.assertEqual(len(sent), 10)
        self.assertEqual(replies(sent + rest)[1::2], [2, 4])

    def test_a_send_that_meets_a_lost_connection_goes_to_the_reactor(self) -> None:
        protocol, transport = self.connect()
        transport.outcome = CONNECTION_LOST
        self.multiply(protocol, 1)
        self.assertEqual(transport.sent, [])
        [written] = transport.written  # the reactor's send finds the error and closes
        self.assertEqual(replies(written)[1::2], [2])

    def test_after_bytes_already_buffered_or_under_tls_the_reactor_sends(self) -> None:
        for field, value in [("dataBuffer", b"x"), ("_tempDataBuffer", [b"x"]), ("TLS", True)]:
            protocol, transport = self.connect()
            setattr(transport, field, value)
            self.multiply(protocol, 1)
            self.assertEqual(transport.sent, [], field)  # order kept: after the buffer
            self.assertEqual(len(transport.written), 1, field)


class SendsWhen(RecordingTCP):
    """A TCP transport that calls ``on_send`` as its socket takes a send."""

    def __init__(self) -> None:
        super().__init__()
        self.on_send: Any = None

    def writeSomeData(self, data: bytes) -> object:
        sent = super().writeSomeData(data)
        if self.on_send is not None:
            self.on_send()
        return sent


class LoneRequestTests(SynchronousTestCase):
    """A read holding one request alone (one call in flight: every read) has
    its reply sent the moment it is made, before the call's accounting, and
    no next request asked of the decoder (``ServerProtocol._alone``).  In a
    binary codec (msgpack here): the plain JSON stream's decoder holds a
    value's newline until the next value, so it is never between messages
    after a request and always takes the general path."""

    def connect(self, **settings: Any) -> tuple[Any, SendsWhen, Server]:
        server = example_server(checked_clock(self), **settings)
        protocol = server.factory().buildProtocol(None)
        transport = SendsWhen()
        protocol.makeConnection(transport)
        protocol.dataReceived(Option(codec_type="application/msgpack").to_json())
        self.addCleanup(protocol.connectionLost, connectionDone)
        return protocol, transport, server

    def requests(self, *seqs: int) -> bytes:
        encoder = default_registry.get("msgpack").new_encoder()
        return b"".join(
            encoder.encode(Header("Arith.Multiply", seq, ""), {"Num1": seq, "Num2": 2})
            for seq in seqs
        )

    def answers(self, transport: SendsWhen) -> list[tuple[int, object]]:
        decoder = default_registry.get("msgpack").new_decoder(1 << 20)
        decoder.feed(b"".join(transport.sent + transport.written))
        pairs = MessagePairs(decoder)
        found = []
        while (pair := pairs.next_pair()) is not None:
            found.append((pair[0][1], decoder.decode_body(pair[1])))
        return found

    def test_sent_before_the_calls_accounting(self) -> None:
        protocol, transport, server = self.connect()
        stats = server.services["Arith"].methods["Multiply"].stats
        seen: list[tuple[int, int]] = []
        transport.on_send = lambda: seen.append((stats.outcomes.get("ok", 0), sum(stats.buckets)))
        for seq in (1, 2, 3):
            protocol.dataReceived(self.requests(seq))
        self.assertEqual(seen, [(0, 0), (1, 1), (2, 2)])  # each sent before it was counted
        self.assertEqual((stats.outcomes["ok"], sum(stats.buckets), stats.calls), (3, 3, 3))
        self.assertEqual(self.answers(transport), [(1, 2), (2, 4), (3, 6)])
        self.assertEqual(transport.written, [])

    def test_requests_of_one_read_still_share_one_send(self) -> None:
        protocol, transport, _ = self.connect()
        protocol.dataReceived(self.requests(1, 2, 3))
        self.assertEqual(len(transport.sent), 1)
        self.assertEqual(self.answers(transport), [(1, 2), (2, 4), (3, 6)])

    def test_a_request_and_part_of_the_next(self) -> None:
        protocol, transport, _ = self.connect()
        data = self.requests(1, 2)
        protocol.dataReceived(data[:-3])
        self.assertEqual(self.answers(transport), [(1, 2)])
        protocol.dataReceived(data[-3:])
        self.assertEqual(self.answers(transport), [(1, 2), (2, 4)])

    def test_a_request_fed_while_the_reply_is_sent_is_answered(self) -> None:
        # (a transport that delivers synchronously: the peer's next call
        # arrives inside the send of this reply)
        protocol, transport, _ = self.connect()
        following = [self.requests(2)]
        transport.on_send = lambda: following and protocol.dataReceived(following.pop())
        protocol.dataReceived(self.requests(1))
        self.assertEqual(self.answers(transport), [(1, 2), (2, 4)])

    def test_access_log_request_sizes(self) -> None:
        events: list[dict[str, Any]] = []
        protocol, _, _ = self.connect(access_log=events.append)
        sizes = []
        for seq in (1, 2, 300):
            request = self.requests(seq)
            sizes.append(len(request))
            protocol.dataReceived(request)
        protocol.dataReceived(self.requests(4, 5))
        sizes += [len(self.requests(4)), len(self.requests(5))]
        self.assertEqual([event["request_bytes"] for event in events], sizes)
        self.assertEqual([event["outcome"] for event in events], ["ok"] * 5)
