"""
The client side: pending calls, timeouts, cancellation, disconnects, connect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Client, Header, Option, connect
from txgeerpc._client_protocol import ClientProtocol
from txgeerpc.codec import default_registry
from txgeerpc.errors import (
    CallTimeout,
    CodecError,
    ConnectFailed,
    ConnectionShutdown,
    ConnectTimeout,
    InvalidAddress,
    RemoteError,
    UnexpectedDisconnect,
    UnsupportedCodec,
)
from txgeerpc.examples import Args
from txgeerpc.testing import MemoryNetwork, connect_in_memory

from ._helpers import checked_clock, example_server


def reply(seq: int, body: bytes, error: str = "", method: str = "Foo.Sum") -> bytes:
    return b'{"ServiceMethod":"%s","Seq":%d,"Error":"%s"}\n%s\n' % (
        method.encode(),
        seq,
        error.encode(),
        body,
    )


class ClientProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        option = Option(codec_type="application/json")
        self.protocol = ClientProtocol(
            default_registry.get("json"), option, self.clock, max_message_size=1000
        )
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.client = Client(self.protocol)

    def test_option_written_first_widened_to_512_bytes(self) -> None:
        # Go's fields in Go's order, spaces before the closing brace, no newline
        # (docs/protocol.md 3.3, vectors 17 and 18).
        written = self.transport.value()
        self.assertEqual(len(written), 512)
        self.assertEqual(
            written.rstrip(b"}").rstrip(b" ") + b"}",
            b'{"MagicNumber":3927900,"CodecType":"application/json",'
            b'"ConnectTimeout":10000000000,"HandleTimeout":0}',
        )
        self.assertTrue(written.endswith(b" }"))

    def test_seq_from_one_and_multiplexed_out_of_order(self) -> None:
        self.transport.clear()
        first = self.client.call("Foo.Sum", Args(1, 2))
        second = self.client.call("Arith.Echo", "hi")
        self.assertEqual(
            self.transport.value(),
            b'{"ServiceMethod":"Foo.Sum","Seq":1,"Error":""}\n{"Num1":1,"Num2":2}\n'
            b'{"ServiceMethod":"Arith.Echo","Seq":2,"Error":""}\n"hi"\n',
        )
        self.assertEqual(self.client.pending, 2)
        self.protocol.dataReceived(reply(2, b'"hi"'))
        self.assertEqual(self.successResultOf(second), "hi")
        self.assertNoResult(first)
        self.protocol.dataReceived(reply(1, b"3"))
        self.assertEqual(self.successResultOf(first), 3)
        self.assertEqual(self.client.pending, 0)

    def test_reply_split_at_every_byte(self) -> None:
        data = reply(1, b'{"Num1":4,"Num2":5}')
        d = self.client.call("Foo.Sum", None, result_type=Args)
        for index in range(len(data)):
            self.protocol.dataReceived(data[index : index + 1])
        self.assertEqual(self.successResultOf(d), Args(4, 5))

    def test_remote_error(self) -> None:
        d = self.client.call("Arith.Divide", Args(1, 0))
        self.protocol.dataReceived(reply(1, b"{}", "100% divide by zero"))
        failure = self.failureResultOf(d, RemoteError)
        self.assertEqual(failure.value.message, "100% divide by zero")

    def test_timeout_removes_call_and_late_reply_is_dropped(self) -> None:
        d = self.client.call("Foo.Sleep", Args(5), timeout=2)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        failure = self.failureResultOf(d, CallTimeout)
        self.assertEqual(failure.value.service_method, "Foo.Sleep")
        self.assertEqual(self.client.pending, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # The late reply is dropped and does not disturb the next call.
        later = self.client.call("Foo.Sum", Args(1, 1))
        self.protocol.dataReceived(reply(1, b"6") + reply(2, b"2"))
        self.assertEqual(self.successResultOf(later), 2)
        self.assertTrue(self.client.available)

    def test_reply_before_timeout_cancels_timer(self) -> None:
        d = self.client.call("Foo.Sum", Args(1, 1), timeout=5)
        self.protocol.dataReceived(reply(1, b"2"))
        self.assertEqual(self.successResultOf(d), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel_removes_call(self) -> None:
        d = self.client.call("Foo.Sum", Args(1, 1))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.client.pending, 0)
        self.protocol.dataReceived(reply(1, b"2"))
        self.assertTrue(self.client.available)

    def test_undecodable_reply_fails_only_its_call(self) -> None:
        bad = self.client.call("Foo.Sum", None, result_type=int)
        good = self.client.call("Arith.Echo", "x")
        self.protocol.dataReceived(reply(1, b'"not an int"') + reply(2, b'"x"'))
        failure = self.failureResultOf(bad, CodecError)
        self.assertIn("expected int", str(failure.value))
        self.assertEqual(self.successResultOf(good), "x")
        self.assertTrue(self.client.available)

    def test_invalid_json_reply_body_fails_only_its_call(self) -> None:
        bad = self.client.call("Arith.Echo", "x")
        good = self.client.call("Arith.Echo", "y")
        self.protocol.dataReceived(reply(1, b'{"a" 1}') + reply(2, b'"y"'))
        self.assertIn("reading body json:", str(self.failureResultOf(bad, CodecError).value))
        self.assertEqual(self.successResultOf(good), "y")
        self.assertTrue(self.client.available)

    def test_reply_conversion_raising_anything_fails_only_its_call(self) -> None:
        @dataclass
        class Checked:
            Num1: int = 0

            def __post_init__(self) -> None:
                if self.Num1 < 0:
                    raise ValueError("Num1 must not be negative")

        bad = self.client.call("Foo.Sum", None, result_type=Checked)
        good = self.client.call("Foo.Sum", None, result_type=Checked)
        self.protocol.dataReceived(reply(1, b'{"Num1":-1}') + reply(2, b'{"Num1":1}'))
        self.assertIn("must not be negative", str(self.failureResultOf(bad, CodecError).value))
        self.assertEqual(self.successResultOf(good), Checked(1))

    def test_errback_retrying_during_garbage_fails_cleanly(self) -> None:
        retries: list[Deferred[Any]] = []

        def retry(failure: Failure) -> None:
            retries.append(self.client.call("Foo.Sum", Args()))

        self.client.call("Foo.Sum", Args()).addErrback(retry)
        self.protocol.dataReceived(b"\x00garbage")
        self.failureResultOf(retries[0], ConnectionShutdown)
        self.assertEqual(self.client.pending, 0)

    def test_bad_arguments(self) -> None:
        self.assertRaises(ValueError, self.client.call, "Foo.Sum", 1, timeout=-1)
        self.assertRaises(ValueError, self.client.call, "Foo.Sum", 1, timeout=0)
        huge = self.client.call("Arith.Echo", 10**5000)
        self.failureResultOf(huge, CodecError)
        self.assertEqual(self.client.pending, 0)

    def test_garbage_reply_stream_fails_all_pending(self) -> None:
        calls = [self.client.call("Foo.Sum", Args(n, n)) for n in range(3)]
        self.protocol.dataReceived(b"\x00garbage")
        for d in calls:
            failure = self.failureResultOf(d, UnexpectedDisconnect)
            self.assertIsInstance(failure.value.reason, CodecError)
        self.assertTrue(self.transport.disconnecting)

    def test_oversized_reply_fails_all_pending(self) -> None:
        d = self.client.call("Arith.Echo", "x")
        self.protocol.dataReceived(b'{"ServiceMethod":"' + b"a" * 2000)
        self.failureResultOf(d, UnexpectedDisconnect)

    def test_connection_lost_fails_every_pending_call(self) -> None:
        calls = [self.client.call("Foo.Sleep", Args(n)) for n in range(3)]
        self.protocol.connectionLost(Failure(ConnectionLost("gone")))
        for d in calls:
            failure = self.failureResultOf(d, UnexpectedDisconnect)
            self.assertIn("gone", str(failure.value))
        self.assertFalse(self.client.available)
        self.failureResultOf(self.client.call("Foo.Sum", Args()), ConnectionShutdown)

    def test_close_fails_pending_with_shutdown_and_fires_when_closed(self) -> None:
        pending = self.client.call("Foo.Sleep", Args(1))
        closed = self.client.close()
        self.failureResultOf(pending, ConnectionShutdown)
        self.assertNoResult(closed)
        self.assertTrue(self.transport.disconnecting)
        self.failureResultOf(self.client.call("Foo.Sum", Args()), ConnectionShutdown)
        self.protocol.connectionLost(Failure(ConnectionLost()))
        self.assertIsNone(self.successResultOf(closed))
        self.assertIsNone(self.successResultOf(self.client.close()))

    def test_unencodable_argument_fails_call_and_registers_nothing(self) -> None:
        self.transport.clear()
        d = self.client.call("Foo.Sum", float("inf"))
        self.failureResultOf(d, CodecError)
        self.assertEqual(self.client.pending, 0)
        self.assertEqual(self.transport.value(), b"")
        next_call = self.client.call("Arith.Echo", "ok")
        self.assertIn(b'"Seq":2', self.transport.value())
        self.protocol.dataReceived(reply(2, b'"ok"'))
        self.assertEqual(self.successResultOf(next_call), "ok")


class CountingTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


class BatchedWriteTests(SynchronousTestCase):
    """Calls made while a read is handled (its replies' callbacks) are
    written once, at the end of that read, not one write each."""

    def setUp(self) -> None:
        option = Option(codec_type="application/json")
        self.protocol = ClientProtocol(
            default_registry.get("json"), option, checked_clock(self), max_message_size=1000
        )
        self.transport = CountingTransport()
        self.protocol.makeConnection(self.transport)
        self.client = Client(self.protocol)
        self.transport.clear()

    def again(self, result: object) -> None:
        self.client.call("Foo.Sum", Args(1, 2))

    def test_calls_made_by_a_read_are_one_write(self) -> None:
        for _ in range(5):
            self.client.call("Foo.Sum", Args(1, 2)).addCallback(self.again)
        self.transport.clear()
        self.transport.writes = 0
        self.protocol.dataReceived(b"".join(reply(seq, b"3") for seq in range(1, 6)))
        self.assertEqual(self.transport.writes, 1)
        self.assertEqual(
            self.transport.value(),
            b"".join(
                b'{"ServiceMethod":"Foo.Sum","Seq":%d,"Error":""}\n{"Num1":1,"Num2":2}\n' % seq
                for seq in range(6, 11)
            ),
        )

    def test_one_in_flight_is_written_before_the_read_returns(self) -> None:
        # No latency added: the next call is on the wire when dataReceived returns.
        self.client.call("Foo.Sum", Args(1, 2)).addCallback(self.again)
        self.transport.clear()
        self.protocol.dataReceived(reply(1, b"3"))
        self.assertIn(b'"Seq":2', self.transport.value())
        self.assertEqual(self.client.pending, 1)

    def test_closed_by_a_callback_after_its_calls(self) -> None:
        def close(result: object) -> None:
            pending = self.client.call("Foo.Sum", Args(1, 2))
            self.protocol.close()
            self.failureResultOf(pending, ConnectionShutdown)

        self.client.call("Foo.Sum", Args(1, 2)).addCallback(close)
        self.transport.clear()
        self.protocol.dataReceived(reply(1, b"3"))
        self.assertIn(b'"Seq":2', self.transport.value())  # written before the close
        self.assertTrue(self.transport.disconnecting)


class InMemoryRoundTripTests(SynchronousTestCase):
    def test_examples_through_iosim(self) -> None:
        clock = checked_clock(self)
        server = example_server(clock)
        pair = connect_in_memory(server, clock=clock)
        results = {
            "sum": pair.client.call("Foo.Sum", Args(1, 2)),
            "mul": pair.client.call("Arith.Multiply", {"Num1": 6, "Num2": 7}),
            "div": pair.client.call("Arith.Divide", Args(-7, 2)),
            "echo": pair.client.call("Arith.Echo", "héllo ✓"),
            "sleep": pair.client.call("Foo.Sleep", Args(2, 3)),
        }
        pair.flush()
        self.assertNoResult(results["sleep"])
        clock.advance(2)
        pair.flush()
        self.assertEqual(
            {name: self.successResultOf(d) for name, d in results.items()},
            {"sum": 3, "mul": 42, "div": -3, "echo": "héllo ✓", "sleep": 5},
        )
        fail = pair.client.call("Arith.Fail", "exactly this")
        pair.flush()
        self.assertEqual(self.failureResultOf(fail, RemoteError).value.message, "exactly this")
        self.flushLoggedErrors()
        pair.close()
        self.assertEqual(server.connections, 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_many_calls_in_memory(self) -> None:
        clock = checked_clock(self)
        pair = connect_in_memory(example_server(clock), clock=clock)
        calls = [pair.client.call("Arith.Multiply", Args(n, 2)) for n in range(100)]
        pair.flush()
        self.assertEqual([self.successResultOf(d) for d in calls], [2 * n for n in range(100)])
        pair.close()

    def test_client_timeout_while_server_handler_runs(self) -> None:
        clock = checked_clock(self)
        server = example_server(clock)
        pair = connect_in_memory(server, clock=clock)
        d = pair.client.call("Foo.Sleep", Args(3), timeout=1)
        pair.flush()
        clock.advance(1)
        self.failureResultOf(d, CallTimeout)
        clock.advance(2)
        pair.flush()  # the late reply arrives and is dropped
        ok = pair.client.call("Foo.Sum", Args(2, 2))
        pair.flush()
        self.assertEqual(self.successResultOf(ok), 4)
        pair.close()

    def test_handle_timeout_option_reaches_server(self) -> None:
        clock = checked_clock(self)
        server = example_server(clock)
        pair = connect_in_memory(server, clock=clock, handle_timeout=0.3)
        d = pair.client.call("Foo.Sleep", Args(1))
        pair.flush()
        clock.advance(0.3)
        pair.flush()
        self.assertEqual(
            self.failureResultOf(d, RemoteError).value.message,
            "rpc server: request handle timeout: expect within 300ms",
        )
        pair.close()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_server_disconnect_fails_pending(self) -> None:
        clock = checked_clock(self)
        network = MemoryNetwork(clock)
        port = network.listen(example_server(clock).port_factory())
        connecting = connect(network.reactor, f"tcp@{port.address}")
        network.flush()
        client = self.successResultOf(connecting)
        d = client.call("Foo.Sleep", Args(10))
        network.flush()
        [connection] = network.connections
        connection.server.loseConnection()
        network.flush()
        self.failureResultOf(d, UnexpectedDisconnect)
        network.close()
        self.assertEqual(clock.getDelayedCalls(), [])


class ConnectTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()

    def test_connects_and_writes_option(self) -> None:
        d = connect(self.reactor, "tcp@127.0.0.1:7001", handle_timeout=0.25)
        host, port, factory, _timeout, _bind = self.reactor.tcpClients[0]
        self.assertEqual((host, port), ("127.0.0.1", 7001))
        self.reactor.advance(0)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertIn(b'"HandleTimeout":250000000', transport.value())
        client = self.successResultOf(d)
        self.assertTrue(client.available)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        client.close()
        protocol.connectionLost(Failure(ConnectionLost()))

    def test_connect_timeout(self) -> None:
        d = connect(self.reactor, "tcp@127.0.0.1:7001", connect_timeout=3)
        self.reactor.advance(2.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.assertEqual(self.failureResultOf(d, ConnectTimeout).value.timeout, 3)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_connection_refused(self) -> None:
        network = MemoryNetwork()
        d = connect(network.reactor, "tcp@127.0.0.1:7001")
        network.flush()
        failure = self.failureResultOf(d, ConnectFailed)
        self.assertIsInstance(failure.value.reason, ConnectionRefusedError)
        self.assertEqual(network.clock.getDelayedCalls(), [])

    def test_bad_address_and_codec(self) -> None:
        self.failureResultOf(connect(self.reactor, "nope"), InvalidAddress)
        self.failureResultOf(connect(self.reactor, "tcp@127.0.0.1"), InvalidAddress)
        self.failureResultOf(
            connect(self.reactor, "tcp@127.0.0.1:1", codec="application/x"), UnsupportedCodec
        )


class ShortCallTests(SynchronousTestCase):
    """``Client.call`` with a method and an argument only takes
    ``ClientProtocol.call_plain``: the same Seqs, bytes and errors as the
    general path (``call`` and ``_send``), which any other keyword takes."""

    def protocol(self, codec: str = "json", interceptors: Any = ()) -> ClientProtocol:
        option = Option(codec_type=default_registry.get(codec).name)
        protocol = ClientProtocol(
            default_registry.get(codec),
            option,
            checked_clock(self),
            max_message_size=200,
            interceptors=interceptors,
        )
        protocol.makeConnection(StringTransport())
        protocol.transport.clear()
        return protocol

    def test_the_same_as_the_general_path(self) -> None:
        arguments = [Args(1, 2), "hi", object(), "x" * 300, [1, 2, 3], None, {"A": 1}]
        for codec in ("json", "gob", "msgpack"):
            short, general = self.protocol(codec), self.protocol(codec)
            outcomes: list[list[object]] = [[], []]
            for argument in arguments:
                for protocol, seen in ((short, outcomes[0]), (general, outcomes[1])):
                    if protocol is short:
                        d = Client(protocol).call("Foo.Sum", argument)
                    else:
                        d = protocol.call("Foo.Sum", argument, None, None, None, None, None, None)
                    failures: list[Failure] = []
                    d.addErrback(failures.append)
                    seen.append((protocol.pending, failures and failures[0].type))
            self.assertEqual(outcomes[0], outcomes[1], codec)
            self.assertEqual(short.transport.value(), general.transport.value(), codec)
            self.assertEqual(outcomes[0][2][1], CodecError)
            short.close()
            general.close()

    def test_any_other_keyword_takes_the_general_path(self) -> None:
        protocol = self.protocol()
        client = Client(protocol)
        general: list[str] = []
        send = protocol._send

        def recording(service_method: str, *rest: Any) -> Deferred[Any]:
            general.append(service_method)
            return send(service_method, *rest)

        protocol._send = recording  # type: ignore[method-assign]
        client.call("Short.One", 1).addErrback(lambda _: None)
        self.assertEqual(general, [])
        for keyword, value in [
            ("timeout", 5.0),
            ("metadata", {"k": "v"}),
            ("result_type", int),
            ("argument_type", int),
            ("trailers", {}),
        ]:
            client.call("General." + keyword, 1, **{keyword: value}).addErrback(lambda _: None)
        self.assertEqual(
            general,
            [
                "General.timeout",
                "General.metadata",
                "General.result_type",
                "General.argument_type",
                "General.trailers",
            ],
        )
        protocol.close()

    def test_interceptors_still_see_the_call(self) -> None:
        seen: list[str] = []

        def interceptor(context: Any, argument: Any, proceed: Any) -> Any:
            seen.append(context.service_method)
            return proceed(argument)

        protocol = self.protocol(interceptors=[interceptor])
        Client(protocol).call("Foo.Sum", Args(1, 2)).addErrback(lambda _: None)
        self.assertEqual(seen, ["Foo.Sum"])
        protocol.close()


class LoneReplyTests(SynchronousTestCase):
    """A read of one reply alone: the call its callback makes is written
    without asking the decoder for a pair it does not hold; replies after it
    in the same read, or in the next, are still delivered.  msgpack: the
    plain JSON stream's decoder holds a value's newline (never between
    messages after a reply)."""

    def setUp(self) -> None:
        codec = default_registry.get("msgpack")
        self.protocol = ClientProtocol(
            codec, Option(codec_type=codec.name), checked_clock(self), max_message_size=1000
        )
        self.transport = CountingTransport()
        self.protocol.makeConnection(self.transport)
        self.client = Client(self.protocol)
        self.encoder = codec.new_encoder()

    def replies(self, *seqs: int) -> bytes:
        return b"".join(self.encoder.encode(Header("Foo.Sum", seq, ""), seq * 10) for seq in seqs)

    def test_replies_of_one_read_and_of_the_next(self) -> None:
        calls = [self.client.call("Foo.Sum", n) for n in range(4)]
        data = self.replies(1, 2, 3, 4)
        cut = len(self.replies(1, 2)) + 2
        self.protocol.dataReceived(data[: len(self.replies(1))])
        self.protocol.dataReceived(data[len(self.replies(1)) : cut])
        self.protocol.dataReceived(data[cut:])
        self.assertEqual([self.successResultOf(d) for d in calls], [10, 20, 30, 40])

    def test_each_callback_call_written_before_the_read_returns(self) -> None:
        got: list[int] = []

        def again(result: int) -> None:
            got.append(result)
            if len(got) < 3:
                self.client.call("Foo.Sum", 1).addCallback(again)

        self.client.call("Foo.Sum", 1).addCallback(again)
        for seq in (1, 2, 3):
            self.transport.writes = 0
            self.protocol.dataReceived(self.replies(seq))
            self.assertEqual(self.transport.writes, 1 if seq < 3 else 0)
        self.assertEqual(got, [10, 20, 30])

    def test_a_reply_fed_by_a_callback(self) -> None:
        first = self.client.call("Foo.Sum", 1)
        second = self.client.call("Foo.Sum", 2)
        first.addCallback(lambda _: self.protocol.dataReceived(self.replies(2)))
        self.protocol.dataReceived(self.replies(1))
        self.assertEqual(self.successResultOf(second), 20)
