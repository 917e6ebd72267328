"""
The registry: Go's wire protocol (vectors 09-14) and what txgeerpc adds
(validation, purge timer, DELETE, JSON), on a Clock.
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from txgeerpc import registry_tap
from txgeerpc._web import QuietSite, mount
from txgeerpc.errors import RegistryFull
from txgeerpc.interfaces import IRegistryStore
from txgeerpc.registry import (
    DEFAULT_MAX_ENTRIES,
    Entry,
    InvalidServerAddress,
    MemoryStore,
    RegistryPurge,
    RegistryResource,
    purge_interval,
    validate_address,
)

from ._helpers import checked_clock, vector

PATH = "/_geerpc_/registry"


def _status_and_headers(answer: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, body


class RegistryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.store = MemoryStore(timeout=3)
        root = Resource()
        self.resource = RegistryResource(self.store, self.clock)
        mount(root, PATH, self.resource)
        self.site = Site(root, reactor=self.clock)

    def exchange(self, request: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(request)
        channel.connectionLost(None)  # type: ignore[arg-type]
        return _status_and_headers(transport.value())

    def request(self, method: str, server: str | None = None, accept: str = "") -> Any:
        lines = [f"{method} {PATH} HTTP/1.1", "Host: x", "Content-Length: 0"]
        if server is not None:
            lines.append(f"X-Geerpc-Server: {server}")
        if accept:
            lines.append(f"Accept: {accept}")
        return self.exchange(("\r\n".join(lines) + "\r\n\r\n").encode())

    def test_go_vectors(self) -> None:
        # 09: empty list; 10 and 11: heartbeats; 12: the sorted list; 13: no
        # header; 14: another method.  Status, X-Geerpc-Servers and body as recorded.
        for name in ["09", "10", "11", "12", "13", "14"]:
            client = vector(next(_vector_names(name)) + ".c2s.bin")
            recorded = _status_and_headers(vector(next(_vector_names(name)) + ".s2c.bin"))
            ours = self.exchange(client)
            self.assertEqual(ours[0], recorded[0], name)
            self.assertEqual(
                ours[1].get(b"x-geerpc-servers"), recorded[1].get(b"x-geerpc-servers"), name
            )
            self.assertEqual((ours[2], ours[1].get(b"content-length")), (b"", b"0"), name)

    def test_entries_expire_and_are_purged(self) -> None:
        self.request("POST", "tcp@127.0.0.1:1")
        self.clock.advance(2)
        self.request("POST", "tcp@127.0.0.1:2")
        self.clock.advance(1.5)  # the first is 3.5 s old
        self.assertEqual(self.request("GET")[1][b"x-geerpc-servers"], b"tcp@127.0.0.1:2")
        purge = RegistryPurge(self.store, self.clock, purge_interval(3))
        purge.startService()
        self.addCleanup(purge.stopService)
        self.clock.advance(purge_interval(3))
        self.assertEqual([entry.address for entry in self.store.entries(0)], ["tcp@127.0.0.1:2"])

    def test_validation_delete_and_json(self) -> None:
        for bad in ["a,b@x:1", "tcp@host", "ftp@h:1", "tcp@h:99999", "tcp@ h:1", "unix@rel"]:
            status, _, body = self.request("POST", bad)
            self.assertEqual(status, b"HTTP/1.1 400 Bad Request", bad)
            self.assertIn(b"bad X-Geerpc-Server", body)
        self.request("POST", "http@127.0.0.1:7001")
        self.clock.advance(1)
        status, headers, body = self.request("GET", accept="application/json")
        self.assertEqual(headers[b"x-geerpc-servers"], b"http@127.0.0.1:7001")
        self.assertEqual(
            json.loads(body),
            {
                "servers": [
                    {"address": "http@127.0.0.1:7001", "last_heartbeat": 0, "age_seconds": 1}
                ]
            },
        )
        self.assertEqual(self.request("DELETE", "http@127.0.0.1:7001")[0], b"HTTP/1.1 200 OK")
        self.assertEqual(
            self.request("DELETE", "http@127.0.0.1:7001")[0], b"HTTP/1.1 404 Not Found"
        )
        self.assertEqual(self.request("GET")[1][b"x-geerpc-servers"], b"")

    def test_membership_is_logged_and_the_access_log_stays_quiet(self) -> None:
        events: list[dict[str, Any]] = []
        resource = self.site.resource.getChildWithDefault(b"_geerpc_", None)
        registry = resource.getChildWithDefault(b"registry", None)
        registry._log = Logger(observer=events.append)
        for _ in range(3):
            self.request("POST", "tcp@127.0.0.1:1")
            self.clock.advance(1)
        self.clock.advance(3)  # expired...
        self.request("POST", "tcp@127.0.0.1:1")  # ...so this is a join again
        self.request("DELETE", "tcp@127.0.0.1:1")
        self.request("DELETE", "tcp@127.0.0.1:1")  # 404: nothing left
        self.assertEqual(
            [formatEvent(event) for event in events],
            ["registry: tcp@127.0.0.1:1 joined"] * 2 + ["registry: tcp@127.0.0.1:1 left"],
        )

        access = io.StringIO()
        site = QuietSite(self.site.resource, reactor=self.clock)
        site.quiet_paths.add(PATH.encode())
        site._logFile = access
        self.site = site
        self.request("POST", "tcp@127.0.0.1:1")
        self.request("GET")
        self.assertEqual(access.getvalue(), "")  # heartbeats and listings: quiet
        self.request("POST", "a,b")
        self.assertIn('"POST /_geerpc_/registry HTTP/1.1" 400', access.getvalue())

    def test_addresses(self) -> None:
        for good in [
            "tcp@127.0.0.1:7001",
            "tcp@[::1]:80",
            "http@host.example:443",
            "unix@/tmp/s",
            "tcp@[::]:9999",  # a Go server listening on ":9999" registers this
            "tcp@:9999",
            "tcp@[fe80::1%eth0]:80",
        ]:
            self.assertEqual(validate_address(good), good)
        for bad in ["tcp@[fe80::1%]:80", "tcp@[::1]%x:80", "tcp@h:0", "tcp@:", "tcp@[x]:1"]:
            self.assertRaises(InvalidServerAddress, validate_address, bad)

    def test_a_header_sent_twice_is_refused(self) -> None:
        request = (
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
            "X-Geerpc-Server: tcp@127.0.0.1:1\r\nX-Geerpc-Server: tcp@127.0.0.1:2\r\n\r\n"
        ).encode()
        status, _, body = self.exchange(request)
        self.assertEqual(status, b"HTTP/1.1 400 Bad Request")
        self.assertIn(b"sent more than once", body)
        self.assertEqual(self.store.entries(0), [])

    def test_a_long_listing_goes_in_the_json_body_only(self) -> None:
        addresses = sorted(f"tcp@server-{n:04}.cluster.example:7001" for n in range(400))
        self.resource.limits = None  # 400 servers from one source
        for address in addresses:
            self.request("POST", address)
        _, headers, body = self.request("GET", accept="application/json")
        self.assertNotIn(b"x-geerpc-servers", headers)  # > 8 KiB: Twisted clients refuse it
        self.assertEqual([entry["address"] for entry in json.loads(body)["servers"]], addresses)
        # Go clients (no Accept) still get the header, however long.
        self.assertEqual(self.request("GET")[1][b"x-geerpc-servers"], ",".join(addresses).encode())

    def test_twistd_plugin(self) -> None:
        options = registry_tap.Options()
        options.parseOptions(["--timeout", "2", "--listen", "tcp:0:interface=127.0.0.1"])
        built = registry_tap.build(options, reactor=self.clock)
        self.assertEqual(built.store.timeout, 2)  # type: ignore[attr-defined]
        self.assertEqual(built.store.max_entries, DEFAULT_MAX_ENTRIES)  # type: ignore[attr-defined]
        options = registry_tap.Options()
        options.parseOptions(["--max-entries", "3"])
        built = registry_tap.build(options, reactor=self.clock)
        self.assertEqual(built.store.max_entries, 3)  # type: ignore[attr-defined]
        for bad in ("0", "-1", "many"):
            self.assertRaises(
                usage.UsageError, registry_tap.Options().parseOptions, ["--max-entries", bad]
            )

    def test_a_full_registry_refuses_new_servers_with_503(self) -> None:
        events: list[dict[str, Any]] = []
        self.patch(RegistryResource, "_log", Logger(observer=events.append))
        self.patch(MemoryStore, "_log", Logger(observer=events.append))
        self.store.max_entries = 2
        for port in (1, 2):
            self.assertEqual(self.request("POST", f"tcp@127.0.0.1:{port}")[0], b"HTTP/1.1 200 OK")
        status, headers, body = self.request("POST", "tcp@127.0.0.1:3")
        self.assertEqual(status, b"HTTP/1.1 503 Service Unavailable")
        self.assertEqual(headers[b"content-type"], b"text/plain; charset=utf-8")
        self.assertEqual(body, b"registry full: it holds at most 2 servers\n")
        self.assertEqual(
            formatEvent(events[-1]),
            "registry: refused tcp@127.0.0.1:3: registry full: it holds at most 2 servers",
        )
        self.assertEqual(events[-1]["log_level"], LogLevel.warn)
        self.assertEqual(self.flushLoggedErrors(), [])
        # Refreshing a listed server always works; so does a DELETE.
        self.assertEqual(self.request("POST", "tcp@127.0.0.1:2")[0], b"HTTP/1.1 200 OK")
        self.clock.advance(2)
        self.request("POST", "tcp@127.0.0.1:2")
        self.assertEqual(self.request("DELETE", "tcp@127.0.0.1:2")[0], b"HTTP/1.1 200 OK")
        self.assertEqual(self.request("POST", "tcp@127.0.0.1:3")[0], b"HTTP/1.1 200 OK")
        self.assertEqual(self.request("POST", "tcp@127.0.0.1:4")[0][9:12], b"503")
        # An expired entry makes room (dropped, and logged, as the purge does).
        self.clock.advance(1.5)  # :1 is 3.5 s old
        self.assertEqual(self.request("POST", "tcp@127.0.0.1:4")[0], b"HTTP/1.1 200 OK")
        self.assertIn("registry: tcp@127.0.0.1:1 expired", [formatEvent(e) for e in events])
        self.assertEqual(
            [entry.address for entry in self.store.entries(0)],
            ["tcp@127.0.0.1:3", "tcp@127.0.0.1:4"],
        )
        self.assertRaises(ValueError, MemoryStore, max_entries=0)

    def test_paths_below_the_registry_are_404(self) -> None:
        # Go's mux: the pattern "/_geerpc_/registry" matches that path only.
        for path in [PATH + "/anything", PATH + "/", PATH + "/a/b"]:
            for method in ["POST", "GET", "DELETE"]:
                request = (
                    f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                    "X-Geerpc-Server: tcp@127.0.0.1:1\r\n\r\n"
                ).encode()
                status, headers, body = self.exchange(request)
                self.assertEqual(
                    (status, body), (b"HTTP/1.1 404 Not Found", b"404 page not found\n")
                )
                self.assertNotIn(b"x-geerpc-servers", headers)
        self.assertEqual(self.store.entries(0), [])
        self.assertEqual(self.request("GET")[0], b"HTTP/1.1 200 OK")  # ?query is the same path
        self.assertEqual(
            self.exchange(f"GET {PATH}?x=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())[0],
            b"HTTP/1.1 200 OK",
        )

    def test_an_answer_that_cannot_be_rendered_is_500(self) -> None:
        # A store whose addresses Go's latin-1 header cannot carry.
        store = _OddStore()
        root = Resource()
        mount(root, PATH, RegistryResource(store, self.clock))
        self.site = Site(root, reactor=self.clock)
        status, headers, body = self.request("GET")
        self.assertEqual(
            (status, body), (b"HTTP/1.1 500 Internal Server Error", b"registry error\n")
        )
        self.assertNotIn(b"x-geerpc-servers", headers)
        self.assertEqual(len(self.flushLoggedErrors(UnicodeEncodeError)), 1)


def _vector_names(prefix: str) -> Any:
    from ._helpers import VECTORS

    return (path.name[: -len(".c2s.bin")] for path in VECTORS.glob(f"{prefix}-*.c2s.bin"))


@implementer(IRegistryStore)
class RemoteStore:
    """A store across the network: every answer waits for the test to give it."""

    timeout = 7.0

    def __init__(self) -> None:
        self.asked: list[tuple[str, Deferred[Any]]] = []

    def _ask(self, what: str) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.asked.append((what, d))
        return d

    def heartbeat(self, address: str, now: float) -> Deferred[bool]:
        return self._ask(f"heartbeat {address}")

    def deregister(self, address: str) -> Deferred[bool]:
        return self._ask(f"deregister {address}")

    def live(self, now: float) -> Deferred[list[Entry]]:
        return self._ask("live")

    def purge(self, now: float) -> Deferred[list[str]]:
        return self._ask("purge")


@implementer(IRegistryStore)
class _OddStore(MemoryStore):
    """Lists an address no HTTP header can carry."""

    def live(self, now: float) -> Deferred[list[Entry]]:
        return succeed([Entry("tcp@\u4e2d.example:1", now)])


class RemoteStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.store = RemoteStore()
        root = Resource()
        mount(root, PATH, RegistryResource(self.store, self.clock))
        self.site = Site(root, reactor=self.clock)

    def send(self, method: str, server: str | None = None) -> tuple[Any, StringTransport]:
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        lines = [f"{method} {PATH} HTTP/1.1", "Host: x", "Content-Length: 0"]
        if server is not None:
            lines.append(f"X-Geerpc-Server: {server}")
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
        return channel, transport

    def test_answers_wait_for_the_store(self) -> None:
        channel, transport = self.send("POST", "tcp@127.0.0.1:1")
        self.assertEqual(transport.value(), b"")  # nothing until the store answers
        self.assertEqual(self.store.asked[0][0], "heartbeat tcp@127.0.0.1:1")
        self.store.asked[0][1].callback(None)
        status, headers, _ = _status_and_headers(transport.value())
        self.assertEqual((status, headers[b"x-geerpc-timeout"]), (b"HTTP/1.1 200 OK", b"7"))
        channel.connectionLost(None)

        channel, transport = self.send("GET")
        self.store.asked[1][1].callback([Entry("tcp@127.0.0.1:1", 0.0)])
        self.assertEqual(
            _status_and_headers(transport.value())[1][b"x-geerpc-servers"], b"tcp@127.0.0.1:1"
        )
        channel.connectionLost(None)

        channel, transport = self.send("DELETE", "tcp@127.0.0.1:1")
        self.store.asked[2][1].callback(False)
        self.assertEqual(_status_and_headers(transport.value())[0], b"HTTP/1.1 404 Not Found")
        channel.connectionLost(None)

    def test_a_failing_store_is_503_and_logged(self) -> None:
        # An outage (the store unreachable) fails every request: one line
        # each, no traceback; a bug (anything else) keeps its traceback.
        events: list[dict[str, Any]] = []
        self.patch(RegistryResource, "_log", Logger(observer=events.append))
        for error in (ConnectionRefusedError("etcd is down"), ZeroDivisionError("a bug")):
            channel, transport = self.send("GET")
            self.store.asked[-1][1].errback(error)
            status, _, body = _status_and_headers(transport.value())
            self.assertEqual(status, b"HTTP/1.1 503 Service Unavailable")
            self.assertEqual(body, b"registry store unavailable\n")
            channel.connectionLost(None)
        outage, bug = events
        self.assertEqual(
            formatEvent(outage),
            f"registry: the store failed on GET {PATH}: {ConnectionRefusedError('etcd is down')}",
        )
        self.assertNotIn("log_failure", outage)
        self.assertIsInstance(bug["log_failure"].value, ZeroDivisionError)

    def test_a_later_answer_that_cannot_be_rendered_is_500_and_finished(self) -> None:
        channel, transport = self.send("GET")
        self.store.asked[0][1].callback([Entry("tcp@\u4e2d.example:1", 0.0)])
        status, headers, body = _status_and_headers(transport.value())
        self.assertEqual(
            (status, body), (b"HTTP/1.1 500 Internal Server Error", b"registry error\n")
        )
        self.assertEqual(headers[b"content-length"], b"15")
        self.assertEqual(len(self.flushLoggedErrors(UnicodeEncodeError)), 1)
        channel.connectionLost(None)

    def test_a_full_remote_store_is_503(self) -> None:
        channel, transport = self.send("POST", "tcp@127.0.0.1:1")
        self.store.asked[0][1].errback(RegistryFull(5))
        status, _, body = _status_and_headers(transport.value())
        self.assertEqual(status, b"HTTP/1.1 503 Service Unavailable")
        self.assertEqual(body, b"registry full: it holds at most 5 servers\n")
        self.assertEqual(self.flushLoggedErrors(), [])
        channel.connectionLost(None)

    def test_a_client_gone_before_the_answer(self) -> None:
        channel, transport = self.send("GET")
        channel.connectionLost(Failure(ConnectionDone()))
        self.store.asked[0][1].callback([])  # nothing written, nothing raised
        self.assertEqual(transport.value(), b"")

    def test_purging_survives_failures_and_stops_cleanly(self) -> None:
        purge = RegistryPurge(self.store, self.clock, 2)
        purge.startService()
        self.clock.advance(2)
        events: list[dict[str, Any]] = []
        self.patch(RegistryPurge, "_log", Logger(observer=events.append))
        self.store.asked[0][1].errback(ConnectionRefusedError("etcd is down"))
        [event] = events  # an outage: one line, no traceback
        self.assertEqual(
            formatEvent(event),
            f"registry: purging failed (retrying in 2s): {ConnectionRefusedError('etcd is down')}",
        )
        self.assertNotIn("log_failure", event)
        self.clock.advance(2)  # tried again
        self.assertEqual([what for what, _ in self.store.asked], ["purge", "purge"])
        purge.stopService()  # cancels the purge under way; nothing is rescheduled
        self.assertTrue(self.store.asked[1][1].called)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_purging_is_a_timer_service_that_starts_at_once(self) -> None:
        purge = RegistryPurge(self.store, self.clock, 2)
        self.assertIsInstance(purge, TimerService)
        purge.startService()
        self.assertEqual([what for what, _ in self.store.asked], ["purge"])  # at start
        self.clock.advance(2)  # one purge at a time: the timer waits for it
        self.assertEqual(len(self.store.asked), 1)
        self.store.asked[0][1].callback(["tcp@127.0.0.1:1"])
        self.clock.advance(2)
        self.assertEqual(len(self.store.asked), 2)
        stopped = purge.stopService()  # cancels the purge under way, and fires
        self.assertTrue(self.store.asked[1][1].called)
        self.successResultOf(stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_store_whose_entries_never_expire_is_not_purged(self) -> None:
        self.store.timeout = 0
        purge = RegistryPurge(self.store, self.clock, 60)
        purge.startService()
        self.clock.advance(120)
        self.assertEqual(self.store.asked, [])
        self.successResultOf(purge.stopService())
