"""
Graceful stop (``Server.drain``), in memory: the go-away message to txgeerpc
clients, Go clients' replies-then-EOF, the grace, the XClient going elsewhere,
and the health check (``_txgeerpc.Health``, ``/healthz``).
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Client, Server, connect
from txgeerpc._cli import _health, build_parser
from txgeerpc._introspect import HEALTH, PROBE
from txgeerpc._option import parse_option
from txgeerpc._wire import GO_AWAY, Option
from txgeerpc.codec import HEADER
from txgeerpc.discovery import StaticDiscovery
from txgeerpc.errors import (
    ConnectFailed,
    ConnectionShutdown,
    RemoteError,
    ServerGoingAway,
    ServerShuttingDown,
)
from txgeerpc.examples import Args, register_examples
from txgeerpc.selection import RoundRobinSelect
from txgeerpc.testing import MemoryNetwork
from txgeerpc.xclient import FailMode, XClient

from ._helpers import CapturedLogs, checked_clock


class _Raw(Protocol):
    """A client that sends given bytes and keeps what comes back (a Go
    client's view: it sends the plain Option, without the go-away key)."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = b""
        self.lost = False

    def connectionMade(self) -> None:
        self.transport.write(self.payload)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


def _json_request(method: str, seq: int, body: str) -> bytes:
    return f'{{"ServiceMethod":"{method}","Seq":{seq},"Error":""}}\n{body}\n'.encode()


class DrainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.network = MemoryNetwork(self.clock)
        self.server = Server(self.clock, grace=10)
        register_examples(self.server)
        self.port = self.network.listen(self.server.port_factory())
        self.addCleanup(self.network.close)

    def client(self, codec: str = "application/gob") -> Client:
        d = connect(self.network.reactor, f"tcp@{self.port.address}", codec=codec)
        self.network.flush()
        return self.successResultOf(d)

    def stop(self, grace: float | None = None) -> Deferred[None]:
        """What ``twistd geerpc`` does on SIGTERM: stop listening, then drain."""
        self.port.stopListening()
        return self.server.drain(grace)

    def test_calls_in_flight_finish_and_new_ones_are_refused_as_not_sent(self) -> None:
        for codec in ("application/gob", "application/json"):
            client = self.client(codec)
            going = client.when_going_away()
            running = [client.call("Foo.Sleep", Args(n, 1)) for n in (1, 2, 3)]
            self.network.flush()
            self.assertEqual(self.server.status, "serving")
            stopped = self.stop()
            self.network.flush()
            self.assertEqual(self.server.status, "draining")
            self.successResultOf(going)
            self.failureResultOf(client.call("Foo.Sum", Args(1, 2)), ServerGoingAway)
            self.assertFalse(client.available)
            self.network.advance(2.5)
            self.assertEqual([self.successResultOf(d) for d in running[:2]], [2, 3])
            self.assertNoResult(stopped)
            self.network.advance(0.5)  # the last one: the client closes, then the server
            self.assertEqual(self.successResultOf(running[2]), 4)
            self.successResultOf(stopped)
            self.assertEqual(self.server.connections, 0)
            self.assertEqual(self.network.connections, [])
            # Once stopped, a server is started again only by a new Server.
            self.server = Server(self.clock, grace=10)
            register_examples(self.server)
            self.port = self.network.listen(self.server.port_factory())

    def test_requests_sent_before_the_go_away_arrived_are_answered(self) -> None:
        """The go-away and the client's calls cross on the wire: the server
        reads on until the client closes, so those calls run too."""
        client = self.client()
        self.network.flush()
        stopped = self.stop()  # the go-away is on its way, not yet delivered
        crossing = [client.call("Foo.Sum", Args(n, n)) for n in range(5)]
        self.network.flush()
        self.assertEqual([self.successResultOf(d) for d in crossing], [0, 2, 4, 6, 8])
        self.successResultOf(stopped)

    def test_a_go_client_gets_its_replies_then_eof_and_never_the_go_away(self) -> None:
        plain = Option(codec_type="application/json").to_json()
        self.assertNotIn(b"GoAway", plain)
        peer = _Raw(plain + _json_request("Foo.Sleep", 1, '{"Num1":1,"Num2":1}'))
        self.network.reactor.connectTCP("127.0.0.1", self.port.getHost().port, _Factory(peer))
        self.network.flush()
        stopped = self.stop()
        self.network.flush()
        late = _json_request("Foo.Sum", 2, '{"Num1":1,"Num2":1}')
        peer.transport.write(late)  # type: ignore[union-attr]  # not read any more
        self.network.advance(1)
        self.successResultOf(stopped)
        self.assertTrue(peer.lost)
        self.assertEqual(peer.received, _json_request("Foo.Sleep", 1, "2"))
        self.assertNotIn(GO_AWAY.encode(), peer.received)

    def test_calls_running_when_the_grace_ends_fail_as_shutting_down(self) -> None:
        client = self.client()
        quick = client.call("Foo.Sleep", Args(0, 5))
        slow = [client.call("Foo.Sleep", Args(30, n)) for n in range(3)]
        self.network.flush()
        with CapturedLogs() as logs:
            stopped = self.stop(grace=0.3)
            self.network.advance(0.3)
        self.assertEqual(self.successResultOf(quick), 5)
        for d in slow:
            failure = self.failureResultOf(d, ServerShuttingDown)
            self.assertIsInstance(failure.value, RemoteError)
            self.assertEqual(
                failure.value.message,
                "rpc server: shutting down: the request did not finish within the 0.3s grace",
            )
        self.successResultOf(stopped)
        self.assertEqual(self.network.connections, [])
        self.assertEqual(len(logs.events), 1)
        self.assertIn("3 request(s)", logs.texts()[0])
        self.assertEqual(self.server.services["Foo"].methods["Sleep"].stats.in_flight, 0)

    def test_a_go_client_gets_the_shutting_down_error_as_a_normal_reply(self) -> None:
        peer = _Raw(
            Option(codec_type="application/json").to_json()
            + _json_request("Foo.Sleep", 7, '{"Num1":30}')
        )
        self.network.reactor.connectTCP("127.0.0.1", self.port.getHost().port, _Factory(peer))
        self.network.flush()
        with CapturedLogs():
            stopped = self.stop(grace=0.5)
            self.network.advance(0.5)
        self.successResultOf(stopped)
        self.assertEqual(
            peer.received,
            b'{"ServiceMethod":"Foo.Sleep","Seq":7,"Error":"rpc server: shutting down: '
            b'the request did not finish within the 0.5s grace"}\n{}\n',
        )
        self.assertTrue(peer.lost)

    def test_a_connection_whose_option_comes_during_the_stop_is_served_then_closed(
        self,
    ) -> None:
        self.network.faults.to_server.paused = True  # the Option is held in the network
        connecting = connect(self.network.reactor, f"tcp@{self.port.address}")
        self.network.flush()
        client = self.successResultOf(connecting)
        sent = client.call("Foo.Sum", Args(2, 3))  # behind the Option
        stopped = self.server.drain()
        self.network.faults.to_server.paused = False
        self.network.flush()
        self.assertEqual(self.successResultOf(sent), 5)
        self.successResultOf(stopped)

    def test_health(self) -> None:
        client = self.client()
        health = client.call(HEALTH, PROBE, argument_type=HEADER)
        self.network.flush()
        self.assertEqual(self.successResultOf(health), '{"Status":"serving"}')
        other = self.client()
        answer = other.call("Foo.Sleep", Args(1))
        self.network.flush()
        self.stop()
        # A call that crosses the go-away: answered, "draining".
        health = client.call(HEALTH, PROBE, argument_type=HEADER)
        self.network.flush()
        self.assertEqual(self.successResultOf(health), '{"Status":"draining"}')
        self.failureResultOf(client.call(HEALTH, PROBE, argument_type=HEADER), ConnectionShutdown)
        self.network.advance(1)
        self.assertEqual(self.successResultOf(answer), 1)


class _Factory:
    """Builds the one given protocol (for connectTCP)."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass

    def startedConnecting(self, connector: Any) -> None:
        pass

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        pass

    def clientConnectionLost(self, connector: Any, reason: Any) -> None:
        pass


class XClientGoesElsewhereTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.network = MemoryNetwork(self.clock)
        self.servers = []
        self.ports = []
        for _ in range(2):
            server = Server(self.clock, grace=10)
            register_examples(server)
            self.servers.append(server)
            self.ports.append(self.network.listen(server.port_factory()))
        self.addCleanup(self.network.close)
        self.addresses = [f"tcp@{port.address}" for port in self.ports]

    def test_a_stopping_server_gets_no_new_call_and_none_fails(self) -> None:
        xclient = XClient(
            StaticDiscovery(self.addresses),
            lambda address: connect(self.network.reactor, address),
            self.clock,
            selector=RoundRobinSelect(),
            mode=FailMode.FAIL_FAST,  # not even a retry: the calls go elsewhere from the start
        )
        warm = [xclient.call("Foo.Sleep", Args(1, n)) for n in range(4)]
        self.network.flush()
        self.assertEqual(sorted(xclient.calls_sent.values()), [2, 2])
        self.ports[0].stopListening()
        stopped = self.servers[0].drain()
        self.network.flush()
        later = [xclient.call("Foo.Sum", Args(n, 0)) for n in range(6)]
        self.network.advance(1)
        self.assertEqual([self.successResultOf(d) for d in warm], [1, 2, 3, 4])
        self.assertEqual([self.successResultOf(d) for d in later], list(range(6)))
        self.assertEqual(xclient.calls_sent[self.addresses[0]], 2)
        self.assertEqual(xclient.calls_sent[self.addresses[1]], 8)
        self.successResultOf(stopped)
        # After the cooldown the address is tried again: nobody there now.
        self.network.advance(1)
        refused = xclient.call("Foo.Sum", Args())
        self.network.flush()
        self.failureResultOf(refused, ConnectFailed)
        closed = xclient.close()
        self.network.flush()
        self.successResultOf(closed)

    def test_fail_over_never_retries_a_call_that_ran(self) -> None:
        xclient = XClient(
            StaticDiscovery(self.addresses[:1] + self.addresses[1:]),
            lambda address: connect(self.network.reactor, address),
            self.clock,
            selector=RoundRobinSelect(),
            mode=FailMode.FAIL_OVER,
        )
        ran = [xclient.call("Foo.Sleep", Args(30, n)) for n in range(2)]
        self.network.flush()
        for port in self.ports:
            port.stopListening()
        with CapturedLogs():
            stopped = [server.drain(0.2) for server in self.servers]
            self.network.advance(0.2)
        for d in ran:
            self.failureResultOf(d, ServerShuttingDown)
        self.assertEqual(sum(xclient.calls_sent.values()), 2)
        for d in stopped:
            self.successResultOf(d)
        closed = xclient.close()
        self.network.flush()
        self.successResultOf(closed)


class OptionTests(SynchronousTestCase):
    def test_the_client_names_the_extension_which_covers_go_away(self) -> None:
        clock = checked_clock(self)
        network = MemoryNetwork(clock)
        received: list[bytes] = []
        peer = _Raw(b"")
        peer.dataReceived = received.append  # type: ignore[method-assign]
        port = network.listen(_Factory(peer))  # type: ignore[arg-type]
        d = connect(network.reactor, f"tcp@{port.address}")
        network.flush()
        self.successResultOf(d).close()
        network.flush()
        sent = b"".join(received)
        self.assertEqual(len(sent), 512)
        self.assertTrue(
            sent.startswith(
                b'{"MagicNumber":3927900,"CodecType":"application/gob",'
                b'"ConnectTimeout":10000000000,"HandleTimeout":0,"Txgeerpc":1   '
            )
        )
        network.close()

    def test_the_server_reads_the_key_as_go_does_and_ignores_anything_but_true(self) -> None:
        base = b'{"MagicNumber":3927900,"CodecType":"application/gob"'
        self.assertTrue(parse_option(base + b',"TxgeerpcGoAway":true}').go_away)
        self.assertTrue(parse_option(base + b',"txgeerpcgoaway":true}').go_away)
        for other in (b"false", b"1", b'"true"', b"null", b"{}"):
            self.assertFalse(parse_option(base + b',"TxgeerpcGoAway":' + other + b"}").go_away)
        self.assertFalse(parse_option(base + b"}").go_away)
        self.assertEqual(Option(go_away=False).to_json(), Option().to_json())
        self.assertNotIn(b"GoAway", Option().to_widened_json())


class HealthCheckTests(SynchronousTestCase):
    """``python -m txgeerpc health`` and ``/healthz``, against a server in
    memory that drains without closing its port (so both can still ask)."""

    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.network = MemoryNetwork(self.clock)
        self.server = Server(self.clock, grace=10)
        register_examples(self.server)
        self.port = self.network.listen(self.server.port_factory())
        self.addCleanup(self.network.close)

    def health(self, address: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        options = build_parser().parse_args(["health", address, "--timeout", "2"])
        with redirect_stdout(out), redirect_stderr(err):
            d = ensureDeferred(_health(self.network.reactor, options))
            self.network.advance(3)
        return self.successResultOf(d), out.getvalue(), err.getvalue()

    def healthz(self) -> bytes:
        peer = _Raw(b"GET /healthz HTTP/1.0\r\n\r\n")
        self.network.reactor.connectTCP("127.0.0.1", self.port.getHost().port, _Factory(peer))
        self.network.flush()
        self.assertTrue(peer.lost)
        return peer.received

    def test_serving_then_draining(self) -> None:
        address = f"tcp@{self.port.address}"
        self.assertEqual(self.health(address), (0, "serving\n", ""))
        self.assertTrue(self.healthz().startswith(b"HTTP/1.0 200 OK\r\n"))
        self.assertTrue(self.healthz().endswith(b"\r\n\r\nserving\n"))
        self.server.drain()
        self.assertEqual(self.health(address), (1, "", "draining\n"))
        answer = self.healthz()
        self.assertTrue(answer.startswith(b"HTTP/1.0 503 Service Unavailable\r\n"), answer)
        self.assertTrue(answer.endswith(b"\r\n\r\ndraining\n"))

    def test_unreachable_and_usage(self) -> None:
        self.port.stopListening()
        status, out, err = self.health(f"tcp@{self.port.address}")
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(err.startswith("unhealthy: rpc client: connect failed"), err)
        with redirect_stderr(io.StringIO()), self.assertRaises(SystemExit) as usage:
            build_parser().parse_args(["health"])
        self.assertEqual(usage.exception.code, 2)
