"""
EtcdDiscovery over FakeEtcd on a Clock: the first listing, changes pushed by
the watch (puts, deletes, lease expiry and revocation), listeners told only
of real changes, the last list kept while etcd is unreachable and brought up
to date after, a compacted watch answered by listing again, nothing left on
the clock after a stop, and an XClient that finds a new server through it.
"""

from __future__ import annotations

import random
from itertools import pairwise
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Client, Server
from txgeerpc.errors import EtcdError, EtcdUnavailable
from txgeerpc.etcd import EtcdDiscovery, EtcdRegistration
from txgeerpc.etcd._keys import DEFAULT_PREFIX, server_key
from txgeerpc.selection import RoundRobinSelect
from txgeerpc.testing import FakeEtcd, InMemoryConnection, connect_in_memory
from txgeerpc.xclient import XClient

from ._helpers import checked_clock

A, B, C = "tcp@127.0.0.1:7001", "tcp@127.0.0.1:7002", "http@10.0.0.3:80"


def key(address: str, prefix: str = DEFAULT_PREFIX) -> bytes:
    return server_key(prefix, address)


class DiscoveryTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.etcd = FakeEtcd(self.clock)
        self.addCleanup(self.etcd.close)  # its lease timers
        self.events: list[dict[str, Any]] = []
        self.patch(EtcdDiscovery, "_log", Logger(observer=self.events.append))
        self.heard: list[list[str]] = []

    def discovery(self, **options: Any) -> EtcdDiscovery:
        discovery = EtcdDiscovery(self.etcd, self.clock, **options)
        self.addCleanup(discovery.stopService)
        discovery.on_change(self.heard.append)
        return discovery

    def put(self, address: str, lease: int = 0) -> None:
        self.successResultOf(self.etcd.put(key(address), b"{}", lease=lease))

    def delete(self, address: str) -> None:
        self.successResultOf(self.etcd.delete(key(address)))

    def logged(self, level: LogLevel) -> list[str]:
        return [formatEvent(event) for event in self.events if event["log_level"] is level]


class ListingTests(DiscoveryTestCase):
    def test_first_listing(self) -> None:
        self.put(B)
        self.put(A)
        self.put(C)
        self.successResultOf(self.etcd.put(DEFAULT_PREFIX.encode() + b"junk", b""))  # no address
        self.successResultOf(self.etcd.put(b"/elsewhere/" + A.encode(), b""))  # another prefix
        discovery = self.discovery()
        self.assertEqual(discovery.servers(), [])
        self.etcd.delay = 1
        discovery.startService()
        ready = discovery.ready()
        self.assertNoResult(ready)
        self.clock.advance(1)
        self.successResultOf(ready)
        self.etcd.delay = 0
        self.assertEqual(discovery.servers(), [C, A, B])  # sorted
        self.assertEqual(self.heard, [[C, A, B]])
        self.assertEqual(self.etcd.requests[-2:], ["get_prefix", "watch_prefix"])
        self.successResultOf(discovery.ready())  # at once, from now on

    def test_servers_is_a_copy(self) -> None:
        self.put(A)
        discovery = self.discovery()
        discovery.startService()
        discovery.servers().append("tcp@x:1")
        self.assertEqual(discovery.servers(), [A])

    def test_ready_at_once_when_not_running(self) -> None:
        self.successResultOf(self.discovery().ready())

    def test_ready_after_a_failed_first_listing(self) -> None:
        self.etcd.available = False
        discovery = self.discovery()
        discovery.startService()
        self.successResultOf(discovery.ready())
        self.assertEqual(discovery.servers(), [])

    def test_ready_waiters_released_by_stop(self) -> None:
        self.etcd.delay = 1
        discovery = self.discovery()
        discovery.startService()
        ready = discovery.ready()
        self.assertNoResult(ready)
        discovery.stopService()
        self.successResultOf(ready)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_another_prefix(self) -> None:
        self.successResultOf(self.etcd.put(key(A, "/mine/"), b""))
        self.put(B)
        discovery = self.discovery(prefix="/mine/")
        discovery.startService()
        self.assertEqual(discovery.servers(), [A])

    def test_bad_arguments(self) -> None:
        for options in ({"prefix": ""}, {"retry": 0}, {"retry": 5, "max_retry": 1}):
            self.assertRaises(ValueError, EtcdDiscovery, self.etcd, self.clock, **options)


class WatchTests(DiscoveryTestCase):
    def test_puts_and_deletes_are_pushed(self) -> None:
        self.put(A)
        discovery = self.discovery()
        discovery.startService()
        requests = len(self.etcd.requests)
        self.put(B)
        self.assertEqual(discovery.servers(), [A, B])
        self.delete(A)
        self.assertEqual(discovery.servers(), [B])
        self.assertEqual(self.heard, [[A], [A, B], [B]])
        # Pushed: discovery itself asked nothing more, and set no timer.
        self.assertEqual(len(self.etcd.requests), requests + 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_duplicate_notifications(self) -> None:
        discovery = self.discovery()
        discovery.startService()
        self.assertEqual(self.heard, [])  # empty then, empty now: no change
        self.put(A)
        self.put(A)  # a new value, the same server
        self.successResultOf(self.etcd.put(DEFAULT_PREFIX.encode() + b"junk", b""))
        self.successResultOf(self.etcd.delete(DEFAULT_PREFIX.encode() + b"junk"))
        self.delete(B)  # was never there
        self.assertEqual(self.heard, [[A]])
        self.assertEqual(discovery.servers(), [A])

    def test_lease_expiry_and_revocation(self) -> None:
        lease = self.successResultOf(self.etcd.grant(5))
        self.put(A, lease)
        other = self.successResultOf(self.etcd.grant(100))
        self.put(B, other)
        discovery = self.discovery()
        discovery.startService()
        self.assertEqual(discovery.servers(), [A, B])
        self.clock.advance(5)
        self.assertEqual(discovery.servers(), [B])
        self.successResultOf(self.etcd.revoke(other))
        self.assertEqual(discovery.servers(), [])
        self.assertEqual(self.heard, [[A, B], [B], []])

    def test_registration_and_discovery_together(self) -> None:
        discovery = self.discovery()
        discovery.startService()
        registration = EtcdRegistration(self.etcd, A, self.clock, ttl=3)
        registration.startService()
        self.assertEqual(discovery.servers(), [A])
        self.clock.pump([1] * 10)  # renewed: still there
        self.assertEqual(discovery.servers(), [A])
        self.successResultOf(registration.stopService())  # revoked: gone at once
        self.assertEqual(discovery.servers(), [])
        self.assertEqual(self.heard, [[A], []])

    def test_a_failing_listener_does_not_stop_the_others(self) -> None:
        discovery = self.discovery()

        def fails(servers: list[str]) -> None:
            raise RuntimeError("boom")

        discovery.on_change(fails)
        later: list[list[str]] = []
        discovery.on_change(later.append)
        discovery.startService()
        self.put(A)
        self.assertEqual(later, [[A]])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unsubscribe(self) -> None:
        discovery = self.discovery()
        heard: list[list[str]] = []
        unsubscribe = discovery.on_change(heard.append)
        discovery.startService()
        self.put(A)
        unsubscribe()
        unsubscribe()
        self.put(B)
        self.assertEqual(heard, [[A]])


class UnavailableTests(DiscoveryTestCase):
    def test_keeps_the_last_list_and_catches_up(self) -> None:
        lease = self.successResultOf(self.etcd.grant(5))
        self.put(A, lease)
        self.put(B)
        discovery = self.discovery()
        discovery.startService()
        self.etcd.available = False
        self.clock.advance(10)  # A's lease expires in etcd; the watch cannot hear it
        self.assertEqual(discovery.servers(), [A, B])
        self.assertEqual(self.heard, [[A, B]])
        self.etcd.available = True  # the watch resumes where it was: nothing missed
        self.assertEqual(discovery.servers(), [B])
        self.assertEqual(self.heard, [[A, B], [B]])
        self.assertEqual(self.etcd.requests.count("get_prefix"), 1)  # no listing needed
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_first_listing_fails_then_retries_with_backoff(self) -> None:
        self.put(A)
        self.etcd.available = False
        discovery = self.discovery(retry=1, max_retry=8)
        discovery.startService()
        times = [self.clock.seconds()]
        for _ in range(6):
            self.clock.advance(self.clock.getDelayedCalls()[0].getTime() - self.clock.seconds())
            times.append(self.clock.seconds())
        self.assertEqual([b - a for a, b in pairwise(times)], [1, 2, 4, 8, 8, 8])
        self.assertEqual(discovery.failures, 7)
        [warning] = self.logged(LogLevel.warn)  # once
        self.assertIn("listing /geerpc/servers/ from etcd failed", warning)
        self.assertIn("keeping 0 known servers, retrying in 1s", warning)
        self.assertNotIn("watch_prefix", self.etcd.requests)

        self.etcd.available = True
        self.clock.advance(8)
        self.assertEqual(discovery.servers(), [A])
        self.assertEqual(discovery.failures, 0)
        self.assertIn("etcd answers again after 7 failed listings", self.logged(LogLevel.info)[0])
        self.put(B)  # and the watch is on
        self.assertEqual(discovery.servers(), [A, B])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class CompactionTests(DiscoveryTestCase):
    def fall_behind(self) -> None:
        """A and C (on leases of 5 and 7 s) and B listed; then, while the
        watch cannot hear, both leases expire, and the history is compacted
        past the first expiry."""
        self.put(A, self.successResultOf(self.etcd.grant(5)))
        self.put(B)
        self.put(C, self.successResultOf(self.etcd.grant(7)))
        self.discovery_under_test = self.discovery(retry=2)
        self.discovery_under_test.startService()
        self.etcd.available = False
        self.clock.advance(10)
        self.etcd.compact(self.etcd.revision)
        self.assertEqual(self.discovery_under_test.servers(), [C, A, B])

    def test_compacted_watch_lists_again(self) -> None:
        self.fall_behind()
        discovery = self.discovery_under_test
        self.etcd.available = True  # the watch resumes: compacted, so it lists again
        self.assertEqual(discovery.servers(), [B])
        self.assertEqual(discovery.listings, 2)
        self.assertEqual(self.etcd.requests.count("watch_prefix"), 2)
        self.assertEqual(self.heard, [[C, A, B], [B]])  # one change, not two
        self.assertIn("fell behind a compaction", self.logged(LogLevel.info)[-2])
        self.put(C)  # the new watch is on
        self.assertEqual(discovery.servers(), [C, B])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_compacted_then_the_listing_fails(self) -> None:
        self.fall_behind()
        discovery = self.discovery_under_test
        real_get_prefix = self.etcd.get_prefix
        self.patch(self.etcd, "get_prefix", lambda prefix: fail(EtcdUnavailable({"fake": "down"})))
        self.etcd.available = True
        self.assertEqual(discovery.servers(), [C, A, B])  # kept
        self.assertEqual(discovery.failures, 1)
        self.assertIn("keeping 3 known servers, retrying in 2s", self.logged(LogLevel.warn)[0])
        self.patch(self.etcd, "get_prefix", real_get_prefix)
        self.clock.advance(2)
        self.assertEqual(discovery.servers(), [B])
        self.put(C)
        self.assertEqual(discovery.servers(), [C, B])

    def test_stopped_by_a_listener_at_the_listing_after_a_compaction(self) -> None:
        self.fall_behind()
        discovery = self.discovery_under_test
        discovery.on_change(lambda servers: discovery.stopService())
        self.etcd.available = True  # compacted: listed again, a change: stopped
        self.assertEqual(self.heard, [[C, A, B], [B]])
        self.assertFalse(discovery.running)
        self.assertEqual(self.etcd.requests.count("watch_prefix"), 1)  # not watched again
        self.put(A)
        self.assertEqual(discovery.servers(), [B])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class StopTests(DiscoveryTestCase):
    def test_stop_leaves_nothing_on_the_clock(self) -> None:
        self.put(A)
        discovery = self.discovery()
        discovery.startService()
        discovery.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.put(B)  # the watch is stopped: not heard
        self.assertEqual(discovery.servers(), [A])

    def test_stop_while_retrying(self) -> None:
        self.etcd.available = False
        discovery = self.discovery()
        discovery.startService()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        discovery.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_while_listing(self) -> None:
        self.put(A)
        self.etcd.delay = 1
        discovery = self.discovery()
        discovery.startService()
        discovery.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(discovery.servers(), [])

    def test_restart(self) -> None:
        self.put(A)
        discovery = self.discovery()
        discovery.startService()
        discovery.stopService()
        self.put(B)
        discovery.startService()
        self.assertEqual(discovery.servers(), [A, B])
        self.put(C)
        self.assertEqual(discovery.servers(), [C, A, B])

    def test_stopped_by_a_listener_at_the_first_listing(self) -> None:
        self.put(A)
        discovery = self.discovery()
        discovery.on_change(lambda servers: discovery.stopService())
        discovery.startService()
        self.assertEqual(self.heard, [[A]])
        self.assertFalse(discovery.running)
        self.assertNotIn("watch_prefix", self.etcd.requests)  # no watch left behind
        self.put(B)
        self.assertEqual(discovery.servers(), [A])
        self.successResultOf(discovery.ready())
        self.assertEqual(self.clock.getDelayedCalls(), [])


class WatchRefusedTests(DiscoveryTestCase):
    """``watch_prefix`` raising at once (the real client does once it is
    closed, or for a bad revision): a failed listing, tried again."""

    def refuse_watches(self, error: Exception, times: int) -> None:
        real_watch_prefix = self.etcd.watch_prefix
        refused: list[Exception] = []

        def watch_prefix(*args: Any) -> Any:
            if len(refused) < times:
                self.etcd.requests.append("watch_prefix")
                refused.append(error)
                raise error
            return real_watch_prefix(*args)

        self.patch(self.etcd, "watch_prefix", watch_prefix)

    def test_refused_watch_releases_ready_and_retries(self) -> None:
        self.put(A)
        self.refuse_watches(EtcdError("client closed"), times=2)
        self.etcd.delay = 1
        discovery = self.discovery(retry=2, max_retry=8)
        discovery.startService()
        ready = discovery.ready()
        self.clock.advance(1)
        self.successResultOf(ready)  # not left waiting for ever
        self.assertEqual(discovery.servers(), [A])  # the listing itself was good
        self.assertEqual(discovery.failures, 1)
        [warning] = self.logged(LogLevel.warn)
        self.assertIn("failed (etcd: client closed)", warning)
        self.assertIn("retrying in 2s", warning)
        self.clock.pump([2, 1])  # listed again, the watch refused again: backoff
        self.assertEqual(discovery.failures, 2)
        self.clock.pump([4, 1])
        self.assertEqual(discovery.failures, 0)
        self.assertEqual(self.etcd.requests.count("watch_prefix"), 3)
        self.etcd.delay = 0
        self.put(B)  # the third watch is on
        self.assertEqual(discovery.servers(), [A, B])
        self.assertIn("answers again after 2 failed listings", self.logged(LogLevel.info)[-2])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_value_error_too(self) -> None:
        self.refuse_watches(ValueError("bad revision"), times=1)
        discovery = self.discovery(retry=1)
        discovery.startService()
        self.successResultOf(discovery.ready())
        self.assertEqual(discovery.failures, 1)
        self.clock.advance(1)
        self.put(A)
        self.assertEqual(discovery.servers(), [A])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_while_retrying_after_a_refused_watch(self) -> None:
        self.refuse_watches(EtcdError("client closed"), times=1)
        discovery = self.discovery()
        discovery.startService()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        discovery.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class Who:
    """``Who.Name`` answers the address of the server it runs on."""

    def __init__(self, address: str) -> None:
        self._address = address

    def Name(self, arg: Any) -> str:
        return self._address


class XClientTests(DiscoveryTestCase):
    def test_xclient_picks_up_a_new_server(self) -> None:
        servers = {}
        for address in (A, B):
            server = Server(self.clock)
            server.register(Who(address))
            servers[address] = server
        connections: list[InMemoryConnection] = []

        def dial(address: str) -> Deferred[Client]:
            connection = connect_in_memory(servers[address], clock=self.clock)
            connections.append(connection)
            self.addCleanup(connection.close)
            return succeed(connection.client)

        def call() -> str:
            d = xclient.call("Who.Name", None)
            for connection in connections:
                connection.flush()
            return str(self.successResultOf(d))

        discovery = self.discovery()
        discovery.startService()
        first = EtcdRegistration(self.etcd, A, self.clock, ttl=3)
        first.startService()
        xclient = XClient(discovery, dial, self.clock, selector=RoundRobinSelect(random.Random(1)))
        self.assertEqual({call() for _ in range(4)}, {A})

        second = EtcdRegistration(self.etcd, B, self.clock, ttl=3)
        second.startService()  # pushed to the XClient, no refresh to wait for
        self.assertEqual([call() for _ in range(4)].count(B), 2)

        self.successResultOf(first.stopService())
        self.assertEqual({call() for _ in range(4)}, {B})
        self.assertEqual(xclient.connections, [B])
        self.successResultOf(second.stopService())
        self.successResultOf(xclient.close())
