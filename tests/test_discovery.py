"""Discovery: a static list, and a registry polled on a Clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc.discovery import StaticDiscovery
from txgeerpc.registry import (
    DEFAULT_KEEP_ON_EMPTY,
    DEFAULT_REFRESH,
    SERVERS_HEADER,
    Answer,
    RegistryDiscovery,
)

from ._helpers import checked_clock
from .test_heartbeat import URL, URL_B, FakeRegistry, TwoRegistries


class StaticTests(SynchronousTestCase):
    def test_copies_and_listeners(self) -> None:
        given = ["tcp@a:1"]
        discovery = StaticDiscovery(given)
        given.append("tcp@b:1")
        self.assertEqual(discovery.servers(), ["tcp@a:1"])
        seen: list[list[str]] = []
        discovery.on_change(seen.append)
        discovery.update(["tcp@c:1"])
        self.assertEqual(seen, [["tcp@c:1"]])
        self.successResultOf(discovery.ready())


class RegistryDiscoveryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.registry = FakeRegistry(self.clock, timeout=0)

    def beat(self, address: str) -> None:
        self.registry.request(b"POST", URL, {b"X-Geerpc-Server": address.encode()}, 1)

    def start(self, request: Any = None) -> RegistryDiscovery:
        discovery = RegistryDiscovery(self.clock, request or self.registry.request, URL)
        discovery.startService()
        self.addCleanup(discovery.stopService)
        return discovery

    def test_refreshes_every_ten_seconds_and_tells_listeners(self) -> None:
        self.beat("tcp@b:1")
        discovery = self.start()
        self.successResultOf(discovery.ready())
        self.assertEqual(discovery.servers(), ["tcp@b:1"])
        seen: list[list[str]] = []
        discovery.on_change(seen.append)
        self.beat("tcp@a:1")
        self.clock.advance(DEFAULT_REFRESH - 0.1)
        self.assertEqual(discovery.servers(), ["tcp@b:1"])
        self.clock.advance(0.1)
        self.assertEqual(discovery.servers(), ["tcp@a:1", "tcp@b:1"])
        self.assertEqual(seen, [["tcp@a:1", "tcp@b:1"]])

    def test_a_failing_registry_keeps_the_last_good_list(self) -> None:
        self.beat("tcp@a:1")
        discovery = self.start()
        self.registry.up = False
        self.clock.advance(DEFAULT_REFRESH)
        self.assertEqual((discovery.servers(), discovery.failures), (["tcp@a:1"], 1))
        self.registry.up = True
        self.registry.restart(timeout=0)
        self.clock.advance(DEFAULT_REFRESH)
        self.assertEqual((discovery.servers(), discovery.failures), (["tcp@a:1"], 0))

    def test_a_registry_that_suddenly_lists_nobody_is_believed_later(self) -> None:
        self.beat("tcp@a:1")
        self.beat("tcp@b:1")
        discovery = self.start()
        self.registry.restart(timeout=0)  # forgets everyone until their next beat
        for _ in range(int(DEFAULT_KEEP_ON_EMPTY // DEFAULT_REFRESH) - 1):
            self.clock.advance(DEFAULT_REFRESH)
            self.assertEqual(discovery.servers(), ["tcp@a:1", "tcp@b:1"])
        self.beat("tcp@b:1")  # b re-joins: the new list is believed at once
        self.clock.advance(DEFAULT_REFRESH)
        self.assertEqual(discovery.servers(), ["tcp@b:1"])
        self.registry.restart(timeout=0)
        self.clock.advance(DEFAULT_REFRESH)  # the first empty answer: the hold starts
        self.clock.advance(DEFAULT_KEEP_ON_EMPTY - DEFAULT_REFRESH)
        self.assertEqual(discovery.servers(), ["tcp@b:1"])
        self.clock.advance(DEFAULT_REFRESH)  # nobody re-joined: believed after the hold
        self.assertEqual(discovery.servers(), [])
        at_once = RegistryDiscovery(self.clock, self.registry.request, URL, keep_on_empty=0)
        self.beat("tcp@a:1")
        at_once.startService()
        self.registry.restart(timeout=0)
        self.assertEqual(self.successResultOf(at_once.refresh()), [])
        at_once.stopService()

    def test_a_waiter_that_refreshes_again_leaves_one_timer(self) -> None:
        discovery = self.start()

        def again(servers: list[str]) -> None:
            discovery.refresh()

        discovery.refresh().addCallback(again)
        self.assertEqual(len([c for c in self.clock.getDelayedCalls() if c.active()]), 1)
        discovery.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        asked = len(self.registry.requests)
        self.assertEqual(self.successResultOf(discovery.refresh()), [])
        self.assertEqual(len(self.registry.requests), asked)  # stopped: nothing sent

    def test_a_hung_registry_never_holds_up_the_list(self) -> None:
        self.beat("tcp@a:1")
        hung: list[Deferred[Answer]] = []

        def request(*args: Any) -> Deferred[Answer]:
            if hung:  # the first answers, the next hangs
                waiting: Deferred[Answer] = Deferred()
                hung.append(waiting)
                return waiting
            hung.append(Deferred())
            return self.registry.request(*args)

        discovery = self.start(request)
        self.clock.advance(DEFAULT_REFRESH)
        self.assertEqual(discovery.servers(), ["tcp@a:1"])  # answered at once
        discovery.refresh()  # not doubled while one is under way
        self.assertEqual(len(hung), 2)

    def test_stopping_during_a_refresh_cancels_it_and_fires_once_it_ended(self) -> None:
        hung: list[Deferred[Answer]] = []

        def request(*args: Any) -> Deferred[Answer]:
            hung.append(Deferred())
            return hung[-1]

        discovery = self.start(request)
        self.clock.advance(DEFAULT_REFRESH * 3)  # the timer waits for the refresh under way
        self.assertEqual(len(hung), 1)
        refreshed = discovery.refresh()  # joins it
        stopped = discovery.stopService()
        self.assertTrue(hung[0].called)  # cancelled
        self.assertEqual(self.successResultOf(refreshed), [])
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_json_listing_and_a_go_registry_header(self) -> None:
        many = sorted(f"tcp@server-{n:04}.cluster.example:7001" for n in range(400))
        for address in many:
            self.beat(address)
        asked: list[dict[bytes, bytes]] = []

        def recording(method: bytes, url: str, headers: dict[bytes, bytes], t: float) -> Any:
            asked.append(headers)
            return self.registry.request(method, url, headers, t)

        discovery = self.start(recording)
        self.assertEqual(asked[0], {b"Accept": b"application/json"})
        self.assertEqual(discovery.servers(), many)  # from the body: no header that long

        def like_go(*args: Any) -> Deferred[Answer]:
            # Go's registry ignores Accept: the header only, no body.
            return self.registry.request(b"GET", URL, {}, 1)

        go = self.start(like_go)
        self.assertEqual(go.servers(), many)

    def test_a_json_body_that_lists_nothing_is_a_failed_refresh(self) -> None:
        answers = iter(
            [
                Answer(200, {b"content-type": b"application/json"}, b'{"servers": []}'),
                Answer(200, {b"content-type": b"application/json"}, b"{not json"),
                Answer(
                    200, {b"content-type": b"application/json"}, b'{"servers": [{"address": 7}]}'
                ),
            ]
        )

        def request(*args: Any) -> Deferred[Answer]:
            return succeed(next(answers))

        discovery = self.start(request)
        self.assertEqual((discovery.servers(), discovery.failures), ([], 0))
        self.clock.advance(DEFAULT_REFRESH)
        self.assertEqual(discovery.failures, 1)
        self.clock.advance(DEFAULT_REFRESH)
        self.assertEqual(discovery.failures, 2)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_refresh_answers_with_the_list_and_listeners_can_leave(self) -> None:
        discovery = self.start()
        seen: list[list[str]] = []
        leave = discovery.on_change(seen.append)
        self.beat("tcp@a:1")
        self.assertEqual(self.successResultOf(discovery.refresh()), ["tcp@a:1"])
        leave()
        leave()  # twice is harmless
        self.beat("tcp@b:1")
        self.assertEqual(self.successResultOf(discovery.refresh()), ["tcp@a:1", "tcp@b:1"])
        self.assertEqual(seen, [["tcp@a:1"]])
        self.registry.up = False
        self.assertEqual(  # a failed refresh answers with the last good list
            self.successResultOf(discovery.refresh()), ["tcp@a:1", "tcp@b:1"]
        )

    def test_a_refresh_asked_for_when_ready_is_a_new_one(self) -> None:
        hung: list[Deferred[Answer]] = []

        def request(*args: Any) -> Deferred[Answer]:
            waiting: Deferred[Answer] = Deferred()
            hung.append(waiting)
            return waiting

        discovery = self.start(request)
        again: list[Deferred[list[str]]] = []
        discovery.ready().addCallback(lambda _: again.append(discovery.refresh()))
        hung[0].callback(Answer(200, {SERVERS_HEADER.lower(): b"tcp@a:1"}))
        self.assertEqual(len(hung), 2)  # a second request went out...
        self.assertNoResult(again[0])  # ...and the refresh waits for it
        hung[1].callback(Answer(200, {SERVERS_HEADER.lower(): b"tcp@b:1"}))
        self.assertEqual(self.successResultOf(again[0]), ["tcp@b:1"])


class SeveralRegistriesTests(SynchronousTestCase):
    """A refresh that fails at one registry asks the next ones before it
    counts as failed; the next refresh starts at the one that answered."""

    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.registries = TwoRegistries(self.clock)
        for registry in (self.registries.a, self.registries.b):
            registry.request(b"POST", URL, {b"X-Geerpc-Server": b"tcp@a:1"}, 1)
        self.registries.take_asked()
        self.events: list[dict[str, Any]] = []
        self.patch(RegistryDiscovery, "_log", Logger(observer=self.events.append))

    def start(self, request: Any = None) -> RegistryDiscovery:
        discovery = RegistryDiscovery(
            self.clock, request or self.registries.request, [URL, URL_B], refresh=10
        )
        discovery.startService()
        self.addCleanup(discovery.stopService)
        return discovery

    def warnings(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_level"] is LogLevel.warn]

    def test_one_url_or_several(self) -> None:
        one = RegistryDiscovery(self.clock, self.registries.request, URL)
        self.assertEqual((one.registry_urls, one.registry_url), ((URL,), URL))
        several = RegistryDiscovery(self.clock, self.registries.request, (URL, URL_B))
        self.assertEqual((several.registry_urls, several.registry_url), ((URL, URL_B), URL))
        with self.assertRaises(ValueError):
            RegistryDiscovery(self.clock, self.registries.request, [])

    def test_a_refresh_tries_the_next_registry_at_once(self) -> None:
        self.registries.a.up = False
        discovery = self.start()
        self.successResultOf(discovery.ready())
        self.assertEqual(self.registries.take_asked(), [(b"GET", URL), (b"GET", URL_B)])
        self.assertEqual((discovery.servers(), discovery.failures), (["tcp@a:1"], 0))
        self.assertEqual(discovery.registry_url, URL_B)
        [warning] = self.warnings()
        self.assertTrue(warning.startswith(f"discovery: refreshing from {URL} failed ("), warning)
        self.assertTrue(warning.endswith(f"); trying {URL_B}"), warning)
        self.registries.a.up = True
        self.clock.advance(10)  # the next refresh starts at the one that answered
        self.assertEqual(self.registries.take_asked(), [(b"GET", URL_B)])

    def test_a_bad_answer_tries_the_next_registry(self) -> None:
        for bad in (
            Answer(503, {}),
            Answer(200, {b"content-type": b"application/json"}, b"{not json"),
        ):
            answers = {URL: bad, URL_B: Answer(200, {SERVERS_HEADER.lower(): b"tcp@b:1"})}

            def request(method: bytes, url: str, *args: Any) -> Deferred[Answer]:
                self.registries.asked.append((method, url))
                return succeed(answers[url])  # noqa: B023 - used at once

            discovery = self.start(request)
            self.assertEqual((discovery.servers(), discovery.failures), (["tcp@b:1"], 0), bad)
            self.assertEqual(self.registries.take_asked(), [(b"GET", URL), (b"GET", URL_B)])
            discovery.stopService()

    def test_it_fails_when_every_registry_failed_and_keeps_the_list(self) -> None:
        discovery = self.start()
        self.registries.take_asked()
        self.registries.a.up = self.registries.b.up = False
        self.assertEqual(self.successResultOf(discovery.refresh()), ["tcp@a:1"])
        self.assertEqual(self.registries.take_asked(), [(b"GET", URL), (b"GET", URL_B)])
        self.assertEqual(discovery.failures, 1)
        self.assertIn(
            ", as from every other registry; keeping 1 known servers", self.warnings()[-1]
        )
        self.clock.advance(10)  # one refresh, one request to each: no more
        self.assertEqual(self.registries.take_asked(), [(b"GET", URL), (b"GET", URL_B)])
        self.assertEqual(discovery.failures, 2)

    def test_stopping_ends_the_refresh_without_asking_the_others(self) -> None:
        hung: list[Deferred[Answer]] = []

        def request(method: bytes, url: str, *args: Any) -> Deferred[Answer]:
            self.registries.asked.append((method, url))
            if url == URL:
                return fail(ConnectionRefusedError())
            hung.append(Deferred())
            return hung[-1]

        discovery = self.start(request)
        ready = discovery.ready()
        self.assertNoResult(ready)
        discovery.stopService()
        self.successResultOf(ready)
        self.assertEqual(self.registries.take_asked(), [(b"GET", URL), (b"GET", URL_B)])
        self.assertEqual(discovery.failures, 0)
