"""
The call context (docs/protocol.md 13.9), in memory: the negotiation (the
``Txgeerpc`` Option key and the hello), budgets the server enforces, remote
cancellation, metadata and trailers, interceptors on both sides.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Client, Server, connect
from txgeerpc._option import parse_option
from txgeerpc._wire import CANCEL, HELLO, Header, Option
from txgeerpc.codec import default_registry
from txgeerpc.context import (
    MAX_METADATA_COUNT,
    MAX_METADATA_SIZE,
    CallContext,
    decode_metadata,
    encode_metadata,
)
from txgeerpc.errors import CallTimeout, DeadlineExceeded, MetadataError, RemoteError
from txgeerpc.examples import Args, Foo, register_examples
from txgeerpc.testing import MemoryNetwork

from ._helpers import checked_clock


class _Raw(Protocol):
    """A peer that sends given bytes and keeps what comes back."""

    def __init__(self, payload: bytes = b"") -> None:
        self.payload = payload
        self.received = b""

    def connectionMade(self) -> None:
        if self.payload:
            self.transport.write(self.payload)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class Recorder:
    """A service whose handlers show what they got."""

    def __init__(self) -> None:
        self.seen: list[CallContext] = []
        self.pending: list[Deferred[int]] = []
        self.cancelled = 0

    def Look(self, n: int, *, context: CallContext) -> int:
        self.seen.append(context)
        context.trailers["seen"] = str(n)
        context.trailers["raw-bin"] = b"\x00\xff"
        return n

    def Wait(self, n: int, *, context: CallContext) -> Deferred[int]:
        self.seen.append(context)

        def cancelled(_: Deferred[int]) -> None:
            self.cancelled += 1

        d: Deferred[int] = Deferred(cancelled)
        self.pending.append(d)
        return d

    async def Await(self, n: int) -> int:
        d: Deferred[int] = Deferred(lambda _: setattr(self, "cancelled", self.cancelled + 1))
        self.pending.append(d)
        return await d

    def Plain(self, n: int) -> int:
        return n


class Base(SynchronousTestCase):
    interceptors: tuple[Any, ...] = ()

    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.network = MemoryNetwork(self.clock)
        self.server = Server(self.clock, interceptors=self.interceptors)
        register_examples(self.server)
        self.recorder = Recorder()
        self.server.register(self.recorder, "Rec")
        self.port = self.network.listen(self.server.port_factory())
        self.addCleanup(self.network.close)

    def client(self, **options: Any) -> Client:
        d = connect(self.network.reactor, f"tcp@{self.port.address}", **options)
        self.network.flush()
        client = self.successResultOf(d)
        self.addCleanup(lambda: (client.close(), self.network.flush()))
        return client

    def raw(self, peer: _Raw) -> None:
        factory = ClientFactory.forProtocol(lambda: peer)
        self.network.reactor.connectTCP("127.0.0.1", self.port.getHost().port, factory)
        self.network.flush()

    def stats(self, service: str, method: str) -> Any:
        return self.server.services[service].methods[method].stats

    def foo(self) -> Foo:
        foo = self.server.services["Foo"].instance
        assert isinstance(foo, Foo)
        return foo


class NegotiationTests(Base):
    def test_the_option_key_and_the_hello(self) -> None:
        self.assertEqual(parse_option(Option(extension=1).to_json()[:-1]).extension, 1)
        base = b'{"MagicNumber":3927900,"CodecType":"application/gob"'
        for other in (b"true", b'"1"', b"-1", b"1.0", b"null"):
            self.assertEqual(parse_option(base + b',"Txgeerpc":' + other + b"}").extension, 0)
        self.assertTrue(parse_option(base + b',"txgeerpc":1}').speaks_extension)
        self.assertNotIn(b"Txgeerpc", Option().to_widened_json())  # what Go sends
        client = self.client()
        self.assertIs(client.speaks_extension, True)

    def test_a_go_client_gets_no_hello_and_the_same_bytes_as_before(self) -> None:
        # A Go client's Option (no key) and a Sum: the reply stream is exactly
        # the plain one, no hello, no extension field.
        codec = default_registry.get("gob")
        encoder = codec.new_encoder()
        request = encoder.encode(Header("Foo.Sum", 1, ""), Args(1, 2))
        peer = _Raw(Option().to_json() + request)
        self.raw(peer)
        self.network.flush()
        expected = codec.new_encoder().encode(Header("Foo.Sum", 1, ""), 3)
        self.assertEqual(peer.received, expected)

    def test_a_server_without_the_hello_is_never_sent_a_cancel(self) -> None:
        # A Go server: whatever the client does, no _txgeerpc.Cancel reaches it.
        peer = _Raw()
        port = self.network.listen(Factory.forProtocol(lambda: peer))
        d = connect(self.network.reactor, f"tcp@{port.address}")
        self.network.flush()
        client = self.successResultOf(d)
        first = client.call("Foo.Sleep", Args(5, 0))
        second = client.call("Foo.Sleep", Args(5, 0))
        self.network.flush()
        first.cancel()
        self.failureResultOf(first, CancelledError)
        # The server's first message is a plain reply (to the second call):
        # it does not speak the extension.
        peer.transport.write(  # type: ignore[union-attr]
            default_registry.get("gob").new_encoder().encode(Header("Foo.Sleep", 2, ""), 5)
        )
        self.network.flush()
        self.assertEqual(self.successResultOf(second), 5)
        self.assertIs(client.speaks_extension, False)
        third = client.call("Foo.Sleep", Args(5, 0), timeout=1)
        self.network.flush()
        self.clock.advance(1)
        self.failureResultOf(third, CallTimeout)
        self.network.flush()
        self.assertNotIn(CANCEL.encode(), peer.received)
        self.assertNotIn(b"TxgeerpcBudget", peer.received.split(b"Foo.Sleep", 3)[-1])
        client.close()
        self.network.flush()


class CancellationTests(Base):
    def test_cancelling_the_deferred_cancels_the_handler_and_nothing_is_answered(self) -> None:
        client = self.client()
        d = client.call("Foo.Sleep", Args(60, 0))
        self.network.flush()
        self.assertEqual(self.stats("Foo", "Sleep").in_flight, 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.network.flush()
        stats = self.stats("Foo", "Sleep")
        self.assertEqual((stats.in_flight, stats.cancelled), (0, 1))
        self.assertEqual(self.foo().sleeps_cancelled, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])  # the sleep's timer is gone
        # The connection goes on.
        self.assertEqual(self.successResultOf(self._sum(client)), 3)

    def _sum(self, client: Client) -> Deferred[Any]:
        d = client.call("Foo.Sum", Args(1, 2))
        self.network.flush()
        return d

    def test_a_timeout_cancels_the_handler_too_and_coroutines_are_reached(self) -> None:
        client = self.client()
        d = client.call("Rec.Await", 1, timeout=2)
        self.network.flush()
        self.clock.advance(2)
        self.failureResultOf(d, CallTimeout)
        self.network.flush()
        self.assertEqual(self.recorder.cancelled, 1)
        self.assertEqual(self.stats("Rec", "Await").in_flight, 0)

    def test_a_cancel_before_the_hello_is_sent_once_the_hello_comes(self) -> None:
        d = connect(self.network.reactor, f"tcp@{self.port.address}")
        self.network.flush()
        client = self.successResultOf(d)
        # A fresh protocol whose hello has not been read yet: simulate by
        # cancelling right after sending, before any flush.
        self.assertIs(client.speaks_extension, True)
        call = client.call("Foo.Sleep", Args(60, 0))
        call.cancel()
        self.failureResultOf(call, CancelledError)
        self.network.flush()
        self.assertEqual(self.stats("Foo", "Sleep").cancelled, 1)
        client.close()
        self.network.flush()

    def test_early_cancels_wait_for_the_first_message(self) -> None:
        peer = _Raw()
        port = self.network.listen(Factory.forProtocol(lambda: peer))
        d = connect(self.network.reactor, f"tcp@{port.address}")
        self.network.flush()
        client = self.successResultOf(d)
        call = client.call("Foo.Sleep", Args(60, 0))
        self.network.flush()
        call.cancel()
        self.failureResultOf(call, CancelledError)
        self.network.flush()
        self.assertNotIn(CANCEL.encode(), peer.received)
        encoder = default_registry.get("gob").new_encoder()
        peer.transport.write(encoder.encode(Header(HELLO, 0, ""), None))  # type: ignore[union-attr]
        self.network.flush()
        self.assertIs(client.speaks_extension, True)
        self.assertIn(CANCEL.encode(), peer.received)
        client.close()
        self.network.flush()


class DeadlineTests(Base):
    def test_the_handler_sees_the_budget_and_the_server_cancels_when_it_runs_out(self) -> None:
        client = self.client()
        d = client.call("Rec.Wait", 1, timeout=3)
        self.network.flush()
        (context,) = self.recorder.seen
        self.assertAlmostEqual(context.remaining(), 3.0, places=6)  # type: ignore[arg-type]
        self.clock.advance(1)
        self.assertAlmostEqual(context.remaining(), 2.0, places=6)  # type: ignore[arg-type]
        self.clock.advance(2)
        self.failureResultOf(d, CallTimeout)
        self.network.flush()
        self.assertEqual(self.recorder.cancelled, 1)
        self.assertEqual(self.stats("Rec", "Wait").in_flight, 0)

    def test_the_server_answers_deadline_exceeded_when_the_client_does_not_cancel(self) -> None:
        # A JSON client by hand: budget 1 s, no cancel.
        request = (
            Option(codec_type="application/json", extension=1).to_json()
            + b'{"ServiceMethod":"Foo.Sleep","Seq":1,"Error":"","TxgeerpcBudget":1000000000}\n'
            + b'{"Num1":60,"Num2":0}\n'
        )
        peer = _Raw(request)
        self.raw(peer)
        self.network.flush()
        self.clock.advance(1)
        self.network.flush()
        self.assertIn(
            b'{"ServiceMethod":"Foo.Sleep","Seq":1,'
            b'"Error":"rpc server: deadline exceeded: the call\'s 1s budget ran out"}\n{}\n',
            peer.received,
        )
        self.assertTrue(peer.received.startswith(b'{"ServiceMethod":"_txgeerpc.Hello","Seq":0'))
        self.assertEqual(self.foo().sleeps_cancelled, 1)

    def test_a_spent_budget_is_refused_unrun(self) -> None:
        client = self.client()
        parent = CallContext("Up.Call", self.clock, deadline=self.clock.seconds() - 0.25)
        d = client.call("Foo.Sum", Args(1, 2), context=parent)
        failure = self.failureResultOf(d, DeadlineExceeded)
        self.assertIn("spent 0.25s before it was sent", failure.value.message)
        self.network.flush()
        stats = self.stats("Foo", "Sum")
        self.assertEqual((stats.calls, stats.expired), (0, 1))
        # And the server refuses one that arrives spent, with a typed error.
        request = (
            Option(codec_type="application/json", extension=1).to_json()
            + b'{"ServiceMethod":"Foo.Sum","Seq":1,"Error":"","TxgeerpcBudget":-5000000}\n'
            + b'{"Num1":1,"Num2":2}\n'
        )
        peer = _Raw(request)
        self.raw(peer)
        self.network.flush()
        self.assertIn(b"rpc server: deadline exceeded: the budget was spent 5ms", peer.received)
        self.assertEqual((stats.calls, stats.expired), (0, 2))

    def test_a_downstream_call_gets_what_is_left(self) -> None:
        client = self.client()
        parent = CallContext("Up.Call", self.clock, deadline=self.clock.seconds() + 0.75)
        d = client.call("Rec.Look", 1, timeout=10, context=parent)
        self.network.flush()
        self.assertEqual(self.successResultOf(d), 1)
        (context,) = self.recorder.seen
        self.assertAlmostEqual(context.remaining(), 0.75, places=6)  # type: ignore[arg-type]

    def test_no_timeout_no_budget(self) -> None:
        client = self.client()
        self.successResultOf(self._call(client, "Rec.Look", 1))
        (context,) = self.recorder.seen
        self.assertIsNone(context.remaining())
        self.assertFalse(context.expired())

    def _call(self, client: Client, method: str, argument: Any, **options: Any) -> Deferred[Any]:
        d = client.call(method, argument, **options)
        self.network.flush()
        return d


class MetadataTests(Base):
    def test_metadata_and_trailers_travel(self) -> None:
        client = self.client()
        trailers: dict[str, str | bytes] = {}
        d = client.call(
            "Rec.Look", 7, metadata={"tenant": "acme", "token-bin": b"\x01\x02"}, trailers=trailers
        )
        self.network.flush()
        self.assertEqual(self.successResultOf(d), 7)
        (context,) = self.recorder.seen
        self.assertEqual(context.metadata, {"tenant": "acme", "token-bin": b"\x01\x02"})
        self.assertEqual(trailers, {"seen": "7", "raw-bin": b"\x00\xff"})

    def test_the_rules(self) -> None:
        client = self.client()
        for bad in (
            {"Tenant": "x"},
            {"txgeerpc-trace": "x"},
            {"a-bin": "text"},
            {"a": b"bytes"},
            {f"k{i}": "v" for i in range(MAX_METADATA_COUNT + 1)},
            {"big": "x" * MAX_METADATA_SIZE},
        ):
            with self.assertRaises(MetadataError):
                client.call("Foo.Sum", Args(1, 2), metadata=bad)
        self.assertEqual(encode_metadata({"txgeerpc-x": "1"}, reserved=True), {"txgeerpc-x": "1"})
        with self.assertRaises(MetadataError):
            decode_metadata({"x-bin": "not base64!"})

    def test_the_server_refuses_metadata_past_the_limits(self) -> None:
        meta = ",".join(f'"k{i}":"v"' for i in range(MAX_METADATA_COUNT + 1))
        request = (
            Option(codec_type="application/json", extension=1).to_json()
            + b'{"ServiceMethod":"Foo.Sum","Seq":1,"Error":"","TxgeerpcMeta":{'
            + meta.encode()
            + b"}}\n"
            + b'{"Num1":1,"Num2":2}\n'
        )
        peer = _Raw(request)
        self.raw(peer)
        self.network.flush()
        self.assertIn(b"rpc: metadata has 65 entries, more than the 64 allowed", peer.received)
        self.assertEqual(self.stats("Foo", "Sum").calls, 0)

    @given(
        st.sampled_from(["gob", "json"]),
        st.integers(-(2**63), 2**63 - 1),
        st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=8), min_size=1),
        st.text(max_size=8),
    )
    def test_extended_headers_round_trip(
        self, codec_name: str, budget: int, meta: dict[str, str] | None, error: str
    ) -> None:
        codec = default_registry.get(codec_name)
        encoder = codec.new_encoder()
        headers = [
            Header("A.B", 1, error, budget, meta),
            Header("A.B", 2, ""),
            Header("A.B", 3, "", budget, meta),
        ]
        decoder = codec.new_decoder(1 << 20)
        decoder.feed(b"".join(encoder.encode(header, None) for header in headers))
        decoded = []
        while (message := decoder.next_message()) is not None:
            decoded.append(decoder.decode_header(message))
            decoder.decode_body(decoder.next_message())
        self.assertEqual(decoded, headers)


class Interceptor:
    def __init__(self, name: str, log: list[Any]) -> None:
        self.name = name
        self.log = log

    def __call__(self, context: CallContext, argument: Any, proceed: Any) -> Any:
        self.log.append((self.name, context.service_method, dict(context.metadata), argument))
        context.metadata[f"{self.name}-was-here"] = "yes"
        if argument == -1:
            raise RemoteErrorForTest(f"{self.name} says no")
        d = proceed(argument)
        return d.addBoth(self._outcome, context)

    def _outcome(self, outcome: Any, context: CallContext) -> Any:
        self.log.append((self.name, "outcome", outcome))
        return outcome


class RemoteErrorForTest(ValueError):
    pass


SERVER_LOG: list[Any] = []


class InterceptorTests(Base):
    interceptors = (Interceptor("outer", SERVER_LOG), Interceptor("inner", SERVER_LOG))

    def setUp(self) -> None:
        SERVER_LOG.clear()
        super().setUp()

    def test_server_interceptors_see_every_call_in_order(self) -> None:
        client = self.client()
        d = client.call("Rec.Look", 3, metadata={"tenant": "acme"})
        self.network.flush()
        self.assertEqual(self.successResultOf(d), 3)
        self.assertEqual(
            SERVER_LOG,
            [
                ("outer", "Rec.Look", {"tenant": "acme"}, 3),
                ("inner", "Rec.Look", {"tenant": "acme", "outer-was-here": "yes"}, 3),
                ("inner", "outcome", 3),
                ("outer", "outcome", 3),
            ],
        )
        (context,) = self.recorder.seen
        self.assertEqual(context.metadata["inner-was-here"], "yes")
        # Plain handlers and Go-style calls go through them too.
        d = client.call("Rec.Plain", 4)
        self.network.flush()
        self.assertEqual(self.successResultOf(d), 4)
        self.assertEqual(SERVER_LOG[-1], ("outer", "outcome", 4))

    def test_a_short_circuit_is_the_calls_error_and_the_handler_never_runs(self) -> None:
        client = self.client()
        d = client.call("Rec.Look", -1)
        self.network.flush()
        self.assertEqual(self.failureResultOf(d, RemoteError).value.message, "outer says no")
        self.assertEqual(self.recorder.seen, [])

    def test_cancellation_reaches_through_interceptors(self) -> None:
        client = self.client()
        d = client.call("Rec.Wait", 1)
        self.network.flush()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.network.flush()
        self.assertEqual(self.recorder.cancelled, 1)
        self.assertEqual(self.stats("Rec", "Wait").in_flight, 0)

    def test_client_interceptors(self) -> None:
        log: list[Any] = []
        client = self.client(interceptors=[Interceptor("client", log)])
        trailers: dict[str, str | bytes] = {}
        d = client.call("Rec.Look", 5, metadata={"a": "1"}, trailers=trailers)
        self.network.flush()
        self.assertEqual(self.successResultOf(d), 5)
        self.assertEqual(log, [("client", "Rec.Look", {"a": "1"}, 5), ("client", "outcome", 5)])
        (context,) = self.recorder.seen
        self.assertEqual(context.metadata["client-was-here"], "yes")
        self.assertEqual(trailers["seen"], "5")
        d = client.call("Rec.Look", -1)
        self.assertIsInstance(self.failureResultOf(d).value, RemoteErrorForTest)


class XClientTests(SynchronousTestCase):
    """The XClient's abandoned calls are cancelled on their servers."""

    def setUp(self) -> None:
        from txgeerpc.discovery import StaticDiscovery
        from txgeerpc.xclient import XClient

        self.clock = checked_clock(self)
        self.network = MemoryNetwork(self.clock)
        self.servers = []
        addresses = []
        for _ in range(2):
            server = Server(self.clock)
            register_examples(server)
            self.servers.append(server)
            addresses.append(f"tcp@{self.network.listen(server.port_factory()).address}")
        self.addCleanup(self.network.close)
        self.xclient = XClient(
            StaticDiscovery(addresses),
            lambda address: connect(self.network.reactor, address),
            self.clock,
        )

    def test_the_losers_of_a_failed_broadcast_are_cancelled_on_their_servers(self) -> None:
        foo = self.servers[1].services["Foo"].instance
        # Server 0 fails Foo.Sleep at once; server 1 would sleep for a minute.
        self.servers[0].services["Foo"].methods["Sleep"].function = _fail_sleep
        d = self.xclient.broadcast("Foo.Sleep", Args(60, 0))
        self.network.flush()
        self.failureResultOf(d, RemoteError)
        self.network.flush()
        stats = self.servers[1].services["Foo"].methods["Sleep"].stats
        self.assertEqual((stats.in_flight, stats.cancelled, foo.sleeps_cancelled), (0, 1, 1))
        closed = self.xclient.close()
        self.network.flush()
        self.successResultOf(closed)


def _fail_sleep(args: Args) -> int:
    raise ValueError("no sleep here")
