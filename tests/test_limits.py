"""
Deadlines for every stage of a connection and admission control, on a Clock
and StringTransports: the idle deadline after the Option (a connection that
completed a request is left alone by default, as a Go client never redials),
the message deadline that trickled bytes do not extend, one handshake
deadline however much whitespace comes first, the HTTP idle timeout, the
connection limits (idle connections make room; busy ones do not) and the
shared receive budget.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Server
from txgeerpc._admission import (
    FREE_PARTIAL,
    Admission,
    Counters,
    default_max_connections,
    default_max_per_peer,
)
from txgeerpc._one_port import OnePortFactory
from txgeerpc.debug import Snapshot, render_html, render_json
from txgeerpc.tap import Options, build_server, with_backlog

from ._helpers import JSON_OPTION, checked_clock, example_server, json_request

MiB = 1024 * 1024


def peer(host: str, port: int = 40000) -> IPv4Address:
    return IPv4Address("TCP", host, port)


class _Connections:
    """Connections on a server's port factory, each on a StringTransport and
    closed (connectionLost) when the test ends, as a real transport would."""

    def __init__(self, test: SynchronousTestCase, server: Server) -> None:
        self.factory: OnePortFactory = server.port_factory()
        self._test = test

    def open(self, host: str = "10.0.0.1") -> tuple[Any, StringTransport] | None:
        address = peer(host)
        protocol = self.factory.buildProtocol(address)
        if protocol is None:
            return None
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)

        def close() -> None:
            if protocol in self.factory.open:
                transport.disconnected = True
                protocol.connectionLost()

        self._test.addCleanup(close)
        return protocol, transport

    def must_open(self, host: str = "10.0.0.1") -> tuple[Any, StringTransport]:
        opened = self.open(host)
        self._test.assertIsNotNone(opened, "the connection was refused")
        assert opened is not None
        return opened

    def lose(self, protocol: Any, transport: StringTransport) -> None:
        transport.disconnected = True
        protocol.connectionLost()


def sum_request(seq: int) -> bytes:
    return json_request("Foo.Sum", seq, b'{"Num1":1,"Num2":2}')


class IdleDeadlineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.server = example_server(self.clock, idle_timeout=5, message_timeout=3)
        self.connections = _Connections(self, self.server)

    def test_an_option_then_nothing_is_closed_at_the_idle_deadline(self) -> None:
        protocol, transport = self.connections.must_open()
        protocol.dataReceived(JSON_OPTION)
        self.clock.advance(4.999)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.001)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.server.limit_counts["idle_timeout"], 1)

    def test_a_connection_that_completed_a_request_may_idle_for_ever(self) -> None:
        # What a Go client needs: it never redials a connection the server closed.
        protocol, transport = self.connections.must_open()
        protocol.dataReceived(JSON_OPTION)
        protocol.dataReceived(sum_request(1))
        self.clock.advance(3600)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        transport.clear()
        protocol.dataReceived(sum_request(2))
        self.assertEqual(transport.value(), b'{"ServiceMethod":"Foo.Sum","Seq":2,"Error":""}\n3\n')

    def test_served_idle_timeout_closes_connections_that_completed_requests(self) -> None:
        server = example_server(self.clock, idle_timeout=5, served_idle_timeout=20)
        protocol, transport = _Connections(self, server).must_open()
        protocol.dataReceived(JSON_OPTION)
        self.clock.advance(4)
        protocol.dataReceived(sum_request(1))  # the idle period restarts, served now
        self.clock.advance(19.999)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.001)
        self.assertTrue(transport.disconnecting)

    def test_requests_in_a_row_share_one_idle_timer(self) -> None:
        # Each request used to cancel the idle timer and schedule a new one
        # (2.3 us a request on the real reactor): now the deadline moves and
        # the one timer checks it when it fires.  Still exactly on time.
        server = example_server(self.clock, idle_timeout=5, served_idle_timeout=20)
        protocol, transport = _Connections(self, server).must_open()
        scheduled = []
        call_later = self.clock.callLater

        def counted(delay: float, f: Any, *args: Any, **kwargs: Any) -> Any:
            scheduled.append(delay)
            return call_later(delay, f, *args, **kwargs)

        self.patch(self.clock, "callLater", counted)
        protocol.dataReceived(JSON_OPTION)
        for seq in range(1, 51):
            self.clock.advance(1)
            protocol.dataReceived(sum_request(seq))
        self.assertLessEqual(len(scheduled), 6, scheduled)  # not one per request
        self.clock.advance(19.999)  # 20 s after the last request
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.001)
        self.assertTrue(transport.disconnecting)

    def test_no_idle_deadline_while_a_request_runs(self) -> None:
        protocol, transport = self.connections.must_open()
        protocol.dataReceived(JSON_OPTION + json_request("Foo.Sleep", 1, b'{"Num1":60}'))
        self.clock.advance(59)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertIn(b'"Seq":1', transport.value())
        self.assertFalse(transport.disconnecting)  # a request completed: no idle limit now

    def test_idle_timeout_none_is_no_limit(self) -> None:
        server = example_server(self.clock, idle_timeout=None)
        protocol, transport = _Connections(self, server).must_open()
        protocol.dataReceived(JSON_OPTION)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(3600)
        self.assertFalse(transport.disconnecting)


class MessageDeadlineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.server = example_server(self.clock, idle_timeout=5, message_timeout=3)
        self.connections = _Connections(self, self.server)

    def test_trickled_bytes_do_not_extend_the_deadline(self) -> None:
        protocol, transport = self.connections.must_open()
        protocol.dataReceived(JSON_OPTION)
        self.clock.advance(4)  # idle, within the idle deadline
        request = sum_request(1)
        for index in range(5):  # one byte a second: the message deadline holds
            protocol.dataReceived(request[index : index + 1])
            if index < 3:
                self.assertFalse(transport.disconnecting, index)
            self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.server.limit_counts["message_timeout"], 1)
        self.assertEqual(self.server.limit_counts["idle_timeout"], 0)

    def test_each_complete_request_restarts_the_deadline(self) -> None:
        protocol, transport = self.connections.must_open()
        protocol.dataReceived(JSON_OPTION)
        for seq in range(1, 6):
            request = sum_request(seq)
            protocol.dataReceived(request[:-3])
            self.clock.advance(2.5)
            protocol.dataReceived(request[-3:])
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value().count(b'"Error":""'), 5)

    def test_requests_waiting_on_the_server_are_not_the_peers_delay(self) -> None:
        server = example_server(self.clock, message_timeout=3, max_in_flight=1)
        protocol, transport = _Connections(self, server).must_open()
        slow = json_request("Foo.Sleep", 1, b'{"Num1":10}')
        protocol.dataReceived(JSON_OPTION + slow + sum_request(2))  # the second waits
        self.clock.advance(9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertIn(b'"Seq":2', transport.value())
        self.assertFalse(transport.disconnecting)


class HandshakeDeadlineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.server = example_server(self.clock, handshake_timeout=10)
        self.connections = _Connections(self, self.server)

    def test_leading_whitespace_counts_against_the_handshake_deadline(self) -> None:
        protocol, transport = self.connections.must_open()
        protocol.dataReceived(b"\r\n  \n")
        self.clock.advance(9)
        protocol.dataReceived(JSON_OPTION[:20])  # the stream begins; the Option does not end
        self.clock.advance(0.999)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.001)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.server.limit_counts["handshake_timeout"], 1)

    def test_a_connect_head_and_the_option_share_one_deadline(self) -> None:
        protocol, transport = self.connections.must_open()
        protocol.dataReceived(b"CONNECT /_geeprc_ HTTP/1.0\n\n")
        self.clock.advance(9.5)
        protocol.dataReceived(JSON_OPTION[:20])
        self.clock.advance(0.5)
        self.assertTrue(transport.disconnecting)


class HTTPIdleTests(SynchronousTestCase):
    def test_a_keep_alive_connection_is_closed_when_idle(self) -> None:
        clock = checked_clock(self)
        server = example_server(clock, http_idle_timeout=4)
        protocol, transport = _Connections(self, server).must_open()
        protocol.dataReceived(b"GET /debug/geerpc?format=json HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"200 OK", transport.value())
        clock.advance(3.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(server.limit_counts["http_idle_timeout"], 1)
        protocol.connectionLost()  # twisted.web's abort timer ends with the connection


class AdmissionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)

    def server(self, **settings: Any) -> tuple[Server, _Connections]:
        server = example_server(self.clock, idle_timeout=None, **settings)
        return server, _Connections(self, server)

    def test_defaults_come_from_the_descriptor_limit(self) -> None:
        self.assertEqual(default_max_connections(1024), 1024 - 128)
        self.assertEqual(default_max_connections(256), 256 - 64)
        self.assertEqual(default_max_connections(20), 8)
        self.assertEqual(default_max_per_peer(896), 448)
        settings = Server(self.clock).settings
        self.assertEqual(settings.max_connections, default_max_connections())
        self.assertEqual(settings.max_connections_per_peer, settings.max_connections // 2)

    def test_the_per_peer_limit_refuses_at_once(self) -> None:
        server, connections = self.server(max_connections=10, max_connections_per_peer=2)
        connections.must_open("10.0.0.1")
        connections.must_open("10.0.0.1")
        self.assertIsNone(connections.open("10.0.0.1"))
        connections.must_open("10.0.0.2")
        self.assertEqual(server.limit_counts["refused_per_peer"], 1)

    def test_unix_peers_are_limited_only_in_all(self) -> None:
        admission = Admission(3, 1, Counters())
        for _ in range(3):
            self.assertTrue(admission.admit(object(), None))

    def test_when_full_the_least_recently_active_idle_connection_makes_room(self) -> None:
        server, connections = self.server(max_connections=3, max_connections_per_peer=3)
        opened = [connections.must_open(f"10.0.0.{n}") for n in (1, 2, 3)]
        for protocol, _ in opened:
            protocol.dataReceived(JSON_OPTION + sum_request(1))  # each completed a call
        opened[0][0].dataReceived(sum_request(2))  # the first is the most recent now
        connections.must_open("10.0.0.4")
        self.assertEqual([transport.disconnecting for _, transport in opened], [False, True, False])
        self.assertEqual(server.limit_counts["evicted_idle"], 1)

    def test_a_connection_that_never_made_a_call_goes_first(self) -> None:
        _server, connections = self.server(max_connections=2, max_connections_per_peer=2)
        served, served_transport = connections.must_open("10.0.0.1")
        served.dataReceived(JSON_OPTION + sum_request(1))
        hog, hog_transport = connections.must_open("10.0.0.2")
        hog.dataReceived(JSON_OPTION)
        served.dataReceived(b"")  # neither newer nor older matters: the hog goes
        connections.must_open("10.0.0.3")
        self.assertTrue(hog_transport.disconnecting)
        self.assertFalse(served_transport.disconnecting)

    def test_busy_connections_are_not_closed_and_the_new_one_is_refused(self) -> None:
        server, connections = self.server(max_connections=2, max_connections_per_peer=2)
        busy = [connections.must_open(f"10.0.0.{n}") for n in (1, 2)]
        for protocol, _ in busy:
            protocol.dataReceived(JSON_OPTION + json_request("Foo.Sleep", 1, b'{"Num1":5}'))
        self.assertIsNone(connections.open("10.0.0.3"))
        self.assertEqual(server.limit_counts["refused_max_connections"], 1)
        self.assertFalse(any(transport.disconnecting for _, transport in busy))
        self.clock.advance(5)  # the calls end: now they are idle
        connections.must_open("10.0.0.3")

    def test_a_closed_connection_gives_its_place_back(self) -> None:
        _server, connections = self.server(max_connections=1, max_connections_per_peer=1)
        protocol, transport = connections.must_open("10.0.0.1")
        protocol.dataReceived(JSON_OPTION + json_request("Foo.Sleep", 1, b'{"Num1":5}'))
        self.assertIsNone(connections.open("10.0.0.1"))
        connections.lose(protocol, transport)
        connections.must_open("10.0.0.1")
        self.clock.advance(5)

    def test_an_http_request_in_progress_is_busy(self) -> None:
        _server, connections = self.server(max_connections=1, max_connections_per_peer=1)
        protocol, _transport = connections.must_open("10.0.0.1")
        protocol.dataReceived(b"GET /debug/geerpc HTTP/1.1\r\n")  # head not complete
        self.assertIsNone(connections.open("10.0.0.2"))
        protocol.connectionLost()

    def test_unix_addresses_have_no_peer(self) -> None:
        server = example_server(self.clock, max_connections=2, max_connections_per_peer=1)
        factory = server.port_factory()
        first = factory.buildProtocol(UNIXAddress(None))
        second = factory.buildProtocol(UNIXAddress(None))
        self.assertIsNotNone(first)
        self.assertIsNotNone(second)
        for protocol in (first, second):
            assert protocol is not None
            protocol.makeConnection(StringTransport())
            protocol.connectionLost()


class ReceiveBudgetTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.server = example_server(
            self.clock, max_message_size=1 * MiB, receive_budget=2 * MiB, message_timeout=10
        )
        self.connections = _Connections(self, self.server)

    def start_large(self, host: str, size: int = MiB - 100) -> tuple[Any, StringTransport, bytes]:
        protocol, transport = self.connections.must_open(host)
        request = json_request("Arith.Echo", 1, json.dumps("a" * size).encode())
        protocol.dataReceived(JSON_OPTION + request[: FREE_PARTIAL * 2])
        return protocol, transport, request

    def test_a_new_large_request_waits_when_the_budget_is_spent(self) -> None:
        first = self.start_large("10.0.0.1")
        second = self.start_large("10.0.0.2")
        third = self.start_large("10.0.0.3")
        self.assertEqual(
            [c[1].producerState for c in (first, second, third)],
            ["producing", "producing", "paused"],
        )
        self.assertEqual(self.server.limit_counts["receive_budget_waits"], 1)
        # A small request on another connection does not wait.
        small, small_transport = self.connections.must_open("10.0.0.4")
        small.dataReceived(JSON_OPTION + sum_request(1))
        self.assertIn(b'"Seq":1', small_transport.value())
        # The first completes: the third gets its share and is read again.
        protocol, transport, request = first
        protocol.dataReceived(request[FREE_PARTIAL * 2 :])
        self.assertIn(b'"Seq":1', transport.value())
        self.assertEqual(third[1].producerState, "producing")

    def test_a_waiting_connection_is_closed_by_its_message_deadline(self) -> None:
        self.start_large("10.0.0.1")
        self.start_large("10.0.0.2")
        _protocol, transport, _request = self.start_large("10.0.0.3")
        self.clock.advance(10)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.server.limit_counts["message_timeout"], 3)

    def test_a_closed_holder_gives_its_share_to_a_waiter(self) -> None:
        protocol, transport, _ = self.start_large("10.0.0.1")
        self.start_large("10.0.0.2")
        waiter = self.start_large("10.0.0.3")
        self.connections.lose(protocol, transport)
        self.assertEqual(waiter[1].producerState, "producing")

    def test_the_budget_must_hold_one_message(self) -> None:
        with self.assertRaises(ValueError):
            Server(Clock(), max_message_size=4 * MiB, receive_budget=MiB)


class DebugPageTests(SynchronousTestCase):
    def test_the_counts_are_on_the_page_and_in_json(self) -> None:
        clock = checked_clock(self)
        server = example_server(clock, max_connections=4, max_connections_per_peer=1)
        connections = _Connections(self, server)
        connections.must_open("10.0.0.1")
        self.assertIsNone(connections.open("10.0.0.1"))
        snapshot = Snapshot.of(server)
        limits = json.loads(render_json(snapshot))["limits"]
        self.assertEqual(limits["refused_per_peer"], 1)
        self.assertEqual(
            sorted(limits),
            sorted(
                [
                    "refused_max_connections",
                    "refused_per_peer",
                    "evicted_idle",
                    "handshake_timeout",
                    "idle_timeout",
                    "message_timeout",
                    "http_idle_timeout",
                    "receive_budget_waits",
                ]
            ),
        )
        html = render_html(snapshot).decode()
        self.assertIn('data-limit="refused_per_peer"', html)
        self.assertIn('over the per-peer limit</th>\n<td class="count">1</td>', html)
        clock.advance(server.settings.handshake_timeout)


class TapTests(SynchronousTestCase):
    def test_options_reach_the_server(self) -> None:
        config = Options()
        config.parseOptions(
            [
                "--idle-timeout", "7", "--served-idle-timeout", "90", "--message-timeout", "4",
                "--http-idle-timeout", "0", "--max-connections", "50",
                "--max-connections-per-peer", "5", "--receive-budget", str(8 * MiB),
            ]
        )  # fmt: skip
        server = build_server(config, Clock())
        settings = server.settings
        self.assertEqual(
            (
                settings.idle_timeout,
                settings.served_idle_timeout,
                settings.message_timeout,
                settings.max_connections,
                settings.max_connections_per_peer,
                settings.receive_budget,
                server.http_idle_timeout,
            ),
            (7.0, 90.0, 4.0, 50, 5, 8 * MiB, None),
        )

    def test_defaults(self) -> None:
        config = Options()
        config.parseOptions([])
        settings = build_server(config, Clock()).settings
        self.assertEqual(
            (settings.idle_timeout, settings.served_idle_timeout, settings.message_timeout),
            (60.0, None, 30.0),
        )
        self.assertEqual(config["backlog"], 1024)

    def test_a_budget_smaller_than_a_message_is_refused(self) -> None:
        from twisted.python.usage import UsageError

        with self.assertRaises(UsageError):
            Options().parseOptions(["--receive-budget", "1000"])
        with self.assertRaises(UsageError):
            Options().parseOptions(["--max-connections", "5", "--max-connections-per-peer", "6"])

    def test_backlog_is_added_where_none_is_set(self) -> None:
        self.assertEqual(
            with_backlog("tcp:7001:interface=127.0.0.1", 9),
            "tcp:7001:interface=127.0.0.1:backlog=9",
        )
        self.assertEqual(with_backlog("tcp:0:backlog=5", 9), "tcp:0:backlog=5")
        self.assertEqual(with_backlog("unix:/tmp/s", 9), "unix:/tmp/s:backlog=9")
        self.assertEqual(
            with_backlog("systemd:domain=INET:index=0", 9), "systemd:domain=INET:index=0"
        )
