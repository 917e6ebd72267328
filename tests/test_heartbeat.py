"""
Heartbeats on a Clock against the real registry resource (reached through a
fake request function): entries stay alive, a stopped server expires after
the TTL, a registry that is down or restarts is re-joined, and a clean stop
deregisters.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from txgeerpc._one_port import mount
from txgeerpc.heartbeat import DEFAULT_PERIOD, Answer, Heartbeat
from txgeerpc.registry import MemoryStore, RegistryPurge, RegistryResource, purge_interval

from ._helpers import checked_clock

URL = "http://registry.test/_geerpc_/registry"


class FakeRegistry:
    """A RegistryResource behind a request function; ``up`` False refuses."""

    def __init__(self, clock: Any, timeout: float) -> None:
        self.clock = clock
        self.up = True
        self.requests: list[tuple[bytes, dict[bytes, bytes]]] = []
        self.restart(timeout)

    def restart(self, timeout: float) -> None:
        self.store = MemoryStore(timeout)
        root = Resource()
        mount(root, "/_geerpc_/registry", RegistryResource(self.store, self.clock))
        self.site = Site(root, reactor=self.clock)

    def request(
        self, method: bytes, url: str, headers: dict[bytes, bytes], timeout: float
    ) -> Deferred[Answer]:
        self.requests.append((method, headers))
        if not self.up:
            return fail(ConnectionRefusedError())
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        lines = [f"{method.decode()} /_geerpc_/registry HTTP/1.1", "Host: r", "Content-Length: 0"]
        lines += [f"{name.decode()}: {value.decode()}" for name, value in headers.items()]
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
        channel.connectionLost(None)  # type: ignore[arg-type]
        head_bytes, _, body = transport.value().partition(b"\r\n\r\n")
        head = head_bytes.split(b"\r\n")
        found = {}
        for line in head[1:]:
            name, _, value = line.partition(b":")
            found[name.strip().lower()] = value.strip()
        return succeed(Answer(int(head[0].split()[1]), found, body))

    def live(self) -> list[str]:
        return [entry.address for entry in self.store.entries(self.clock.seconds())]


class HeartbeatTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.registry = FakeRegistry(self.clock, timeout=9)

    def start(self, **kwargs: Any) -> Heartbeat:
        beat = Heartbeat(self.clock, self.registry.request, URL, "tcp@127.0.0.1:7001", **kwargs)
        beat.startService()
        return beat

    def test_beats_keep_the_entry_alive_and_the_period_follows_the_ttl(self) -> None:
        beat = self.start()
        self.assertEqual(self.registry.live(), ["tcp@127.0.0.1:7001"])
        self.assertEqual(beat.period, 3)  # a third of the announced 9 s
        for _ in range(10):
            self.clock.advance(3)
            self.assertEqual(self.registry.live(), ["tcp@127.0.0.1:7001"])
        self.assertEqual(beat.beats, 11)
        self.successResultOf(beat.stopService())
        self.assertEqual(self.registry.requests[-1][0], b"DELETE")
        self.assertEqual(self.registry.live(), [])

    def test_a_stopped_server_expires_after_the_ttl(self) -> None:
        beat = self.start()
        self.registry.up = False  # so the clean stop cannot deregister: a crash
        self.successResultOf(beat.stopService())
        purge = RegistryPurge(self.registry.store, self.clock, purge_interval(9))
        purge.startService()
        self.addCleanup(purge.stopService)
        self.clock.advance(8.9)
        self.assertEqual(self.registry.live(), ["tcp@127.0.0.1:7001"])
        self.clock.advance(purge_interval(9))
        self.assertEqual(self.registry.store.entries(0), [])  # purged, not just hidden

    def test_a_registry_down_at_start_or_restarting_is_rejoined(self) -> None:
        self.registry.up = False
        beat = self.start()
        self.assertEqual((beat.beats, beat.failures), (0, 1))
        for delay in (1, 2, 4):  # backoff
            self.clock.advance(delay)
        self.assertEqual(beat.failures, 4)
        self.registry.up = True
        self.clock.advance(8)
        self.assertEqual(self.registry.live(), ["tcp@127.0.0.1:7001"])
        self.registry.restart(timeout=9)  # a restart forgets every entry
        self.assertEqual(self.registry.live(), [])
        self.clock.advance(beat.period)
        self.assertEqual(self.registry.live(), ["tcp@127.0.0.1:7001"])
        self.successResultOf(beat.stopService())
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_a_period_at_or_over_the_ttl_is_warned_about_once(self) -> None:
        events: list[dict[str, Any]] = []
        slow = Heartbeat(self.clock, self.registry.request, URL, "tcp@h:3", period=9)
        slow._log = Logger(observer=events.append)  # type: ignore[misc]
        slow.startService()
        self.clock.advance(9)
        warnings = [formatEvent(event) for event in events if event["log_level"] is LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertIn("every 9s", warnings[0])
        self.assertIn("after 9s", warnings[0])
        self.assertIn("at most every 3s", warnings[0])
        self.successResultOf(slow.stopService())

    def test_a_go_registry_without_ttl_and_explicit_periods(self) -> None:
        def like_go(*args: Any) -> Deferred[Answer]:
            # Go's registry announces no TTL.
            def strip(answer: Answer) -> Answer:
                status, headers, body = answer
                return Answer(
                    status, {k: v for k, v in headers.items() if k != b"x-geerpc-timeout"}, body
                )

            return self.registry.request(*args).addCallback(strip)

        go = Heartbeat(self.clock, like_go, URL, "tcp@h:1")
        go.startService()
        self.assertEqual(go.period, DEFAULT_PERIOD)
        pinned = Heartbeat(self.clock, self.registry.request, URL, "tcp@h:2", period=2)
        pinned.startService()
        self.assertEqual(pinned.period, 2)
        self.successResultOf(go.stopService())
        self.successResultOf(pinned.stopService())

    def test_error_statuses_count_as_failures(self) -> None:
        beat = Heartbeat(self.clock, self.registry.request, URL, "not an address")
        beat.startService()
        self.assertEqual((beat.beats, beat.failures), (0, 1))  # 400 from the registry
        self.successResultOf(beat.stopService())
