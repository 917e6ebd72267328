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

from txgeerpc._web import mount
from txgeerpc.registry import (
    DEFAULT_PERIOD,
    MIN_PERIOD,
    Answer,
    Entry,
    Heartbeat,
    MemoryStore,
    RegistryPurge,
    RegistryResource,
    purge_interval,
)
from txgeerpc.registry._ring import FailoverRing

from ._helpers import checked_clock

URL = "http://registry.test/_geerpc_/registry"


class FakeRegistry:
    """A RegistryResource behind a request function; ``up`` False refuses."""

    def __init__(self, clock: Any, timeout: float) -> None:
        self.clock = clock
        self.up = True
        self.requests: list[tuple[bytes, dict[bytes, bytes]]] = []
        self.timeouts: list[float] = []
        self.restart(timeout)

    def restart(self, timeout: float) -> None:
        self.store = MemoryStore(timeout)
        root = Resource()
        # No per-source limits: every request comes from one "source" here.
        registry = RegistryResource(self.store, self.clock, limits=False)
        mount(root, "/_geerpc_/registry", registry)
        self.site = Site(root, reactor=self.clock)

    def request(
        self, method: bytes, url: str, headers: dict[bytes, bytes], timeout: float
    ) -> Deferred[Answer]:
        self.requests.append((method, headers))
        self.timeouts.append(timeout)
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


class LimitsTests(SynchronousTestCase):
    """What a registry announces is not trusted to set a tight loop, a hung
    request never outlives the entry it refreshes, and a failed deregistration
    says so."""

    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.events: list[dict[str, Any]] = []
        self.patch(Heartbeat, "_log", Logger(observer=self.events.append))

    def start(self, registry: FakeRegistry, **kwargs: Any) -> Heartbeat:
        beat = Heartbeat(self.clock, registry.request, URL, "tcp@127.0.0.1:7001", **kwargs)
        beat.startService()
        self.addCleanup(beat.stopService)
        return beat

    def logged(self, level: LogLevel) -> list[str]:
        return [formatEvent(event) for event in self.events if event["log_level"] is level]

    def test_a_tiny_announced_ttl_is_floored_and_warned_about(self) -> None:
        registry = FakeRegistry(self.clock, timeout=0.0001)  # announces X-Geerpc-Timeout: 0.0001
        beat = self.start(registry)
        self.assertEqual(beat.period, MIN_PERIOD)
        [next_beat] = self.clock.getDelayedCalls()
        self.assertEqual(next_beat.getTime() - self.clock.seconds(), MIN_PERIOD)
        self.clock.advance(MIN_PERIOD - 0.001)  # no beat before the floor
        self.assertEqual(len(registry.requests), 1)
        for _ in range(4):
            self.clock.advance(MIN_PERIOD)
        self.assertEqual(len(registry.requests), 5)
        self.assertEqual(
            self.logged(LogLevel.warn),
            [
                f"heartbeat: {URL} forgets servers after 0.0001s; beating every 0.5s (the "
                "shortest period, not a third of that): tcp@127.0.0.1:7001 will drop out "
                "between beats"
            ],
        )

    def test_explicit_periods_below_the_floor_are_refused(self) -> None:
        registry = FakeRegistry(self.clock, timeout=9)
        for period in (0, 0.1, MIN_PERIOD - 0.001, float("nan")):
            with self.assertRaises(ValueError):
                Heartbeat(self.clock, registry.request, URL, "tcp@h:1", period=period)
        self.assertEqual(self.start(registry, period=MIN_PERIOD).period, MIN_PERIOD)

    def test_requests_time_out_within_one_period(self) -> None:
        registry = FakeRegistry(self.clock, timeout=3)
        beat = self.start(registry)  # the first beat does not know the TTL yet: 10 s
        self.clock.advance(1)
        self.clock.advance(1)
        self.successResultOf(beat.stopService())
        self.assertEqual([method for method, _ in registry.requests], [b"POST"] * 3 + [b"DELETE"])
        self.assertEqual(registry.timeouts, [10, 1, 1, 1])
        pinned = self.start(FakeRegistry(self.clock, timeout=30), period=2, request_timeout=5)
        self.assertEqual(pinned.request_timeout, 2)

    def test_a_hung_beat_is_retried_before_the_entry_expires(self) -> None:
        registry = FakeRegistry(self.clock, timeout=3)
        hung: list[Deferred[Answer]] = []

        def request(
            method: bytes, url: str, headers: dict[bytes, bytes], timeout: float
        ) -> Deferred[Answer]:
            if len(registry.requests) == 1 and not hung:  # the second beat hangs
                d: Deferred[Answer] = Deferred()
                d.addTimeout(timeout, self.clock)
                hung.append(d)
                return d
            return registry.request(method, url, headers, timeout)

        beat = Heartbeat(self.clock, request, URL, "tcp@127.0.0.1:7001")
        beat.startService()  # a good beat at 0: the entry lives until 3
        self.assertEqual(beat.period, 1)
        self.clock.advance(1)  # the second beat hangs, and times out at 2 (one period)
        self.clock.advance(1)
        self.assertEqual((beat.failures, hung[0].called), (1, True))
        self.clock.advance(0.5)  # retried half a period later, before the entry expired
        self.assertEqual(
            registry.store.entries(self.clock.seconds()), [Entry("tcp@127.0.0.1:7001", 2.5)]
        )
        self.assertEqual(beat.failures, 0)
        self.successResultOf(beat.stopService())

    def test_a_full_registry_says_so_in_the_log(self) -> None:
        registry = FakeRegistry(self.clock, timeout=9)
        registry.store.max_entries = 1
        registry.store.heartbeat("tcp@127.0.0.1:1", 0)
        beat = self.start(registry)
        self.assertEqual((beat.beats, beat.failures), (0, 1))
        self.assertIn(
            "failed (the registry answered 503: registry full: it holds at most 1 server); "
            "retrying in 1.0s",
            self.logged(LogLevel.warn)[0],
        )

    def test_deregistration_is_logged_as_it_went(self) -> None:
        registry = FakeRegistry(self.clock, timeout=9)
        self.successResultOf(self.start(registry).stopService())
        self.assertEqual(
            self.logged(LogLevel.info)[-1],
            f"heartbeat: tcp@127.0.0.1:7001 deregistered from {URL}",
        )
        beat = self.start(registry)
        registry.up = False
        self.successResultOf(beat.stopService())
        warning = self.logged(LogLevel.warn)[-1]
        self.assertTrue(
            warning.startswith(
                f"heartbeat: could not deregister tcp@127.0.0.1:7001 from {URL}: Connection was "
                "refused"
            ),
            warning,
        )
        self.assertTrue(warning.endswith("; the registry will expire it after its TTL"), warning)
        for status, level, text in [
            (405, LogLevel.info, "does not deregister (405, as Go registries answer)"),
            (404, LogLevel.info, "was not registered at"),
            (503, LogLevel.warn, "could not deregister tcp@127.0.0.1:7001 from"),
        ]:
            answers = {b"POST": Answer(200, {}), b"DELETE": Answer(status, {})}
            beat = Heartbeat(
                self.clock,
                lambda method, *_: succeed(answers[method]),  # noqa: B023 - used at once
                URL,
                "tcp@127.0.0.1:7001",
            )
            beat.startService()
            self.successResultOf(beat.stopService())
            self.assertIn(text, self.logged(level)[-1], status)


URL_B = "http://registry-b.test/_geerpc_/registry"


class TwoRegistries:
    """Two registries (each a FakeRegistry) behind one request function,
    which records the method and URL of every request."""

    def __init__(self, clock: Any) -> None:
        self.a = FakeRegistry(clock, timeout=9)
        self.b = FakeRegistry(clock, timeout=9)
        self.asked: list[tuple[bytes, str]] = []

    def request(
        self, method: bytes, url: str, headers: dict[bytes, bytes], timeout: float
    ) -> Deferred[Answer]:
        self.asked.append((method, url))
        return {URL: self.a, URL_B: self.b}[url].request(method, url, headers, timeout)

    def take_asked(self) -> list[tuple[bytes, str]]:
        asked, self.asked = self.asked, []
        return asked


class SeveralRegistriesTests(SynchronousTestCase):
    """Beats go to the registry that answered last; one that fails is passed
    over for the next at once; the backoff starts only when all have failed in
    a row; deregistration moves on too, within one request timeout."""

    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.registries = TwoRegistries(self.clock)
        self.events: list[dict[str, Any]] = []
        self.patch(Heartbeat, "_log", Logger(observer=self.events.append))

    def start(self, advertise: str = "tcp@127.0.0.1:7001", **kwargs: Any) -> Heartbeat:
        beat = Heartbeat(self.clock, self.registries.request, [URL, URL_B], advertise, **kwargs)
        beat.startService()
        self.addCleanup(beat.stopService)
        return beat

    def logged(self, level: LogLevel) -> list[str]:
        return [formatEvent(event) for event in self.events if event["log_level"] is level]

    def delays(self) -> list[float]:
        return [call.getTime() - self.clock.seconds() for call in self.clock.getDelayedCalls()]

    def test_one_url_or_several(self) -> None:
        request = self.registries.request
        self.assertEqual(Heartbeat(self.clock, request, URL, "tcp@h:1").registry_urls, (URL,))
        several = Heartbeat(self.clock, request, (URL, URL_B), "tcp@h:1")
        self.assertEqual((several.registry_urls, several.registry_url), ((URL, URL_B), URL))
        with self.assertRaises(ValueError):
            Heartbeat(self.clock, request, [], "tcp@h:1")

    def test_a_failing_registry_is_passed_over_at_once(self) -> None:
        self.registries.a.up = False
        beat = self.start()
        self.assertEqual(self.registries.take_asked(), [(b"POST", URL), (b"POST", URL_B)])
        self.assertEqual((beat.registry_url, beat.beats, beat.failures), (URL_B, 1, 0))
        self.assertEqual(self.registries.b.live(), ["tcp@127.0.0.1:7001"])
        self.assertEqual(self.delays(), [beat.period])  # the next beat, no backoff
        [warning] = self.logged(LogLevel.warn)
        self.assertTrue(warning.startswith(f"heartbeat: tcp@127.0.0.1:7001 to {URL} failed ("))
        self.assertTrue(warning.endswith(f"); trying {URL_B} now"), warning)
        self.assertEqual(
            self.logged(LogLevel.info), [f"heartbeat: tcp@127.0.0.1:7001 registered at {URL_B}"]
        )

    def test_it_stays_on_the_registry_that_works(self) -> None:
        self.registries.a.up = False
        beat = self.start()
        self.registries.a.up = True  # back, but B answers: beats stay there
        for _ in range(5):
            self.clock.advance(beat.period)
        self.assertEqual(self.registries.take_asked()[2:], [(b"POST", URL_B)] * 5)
        self.registries.b.up = False  # now B fails: back to A at once
        self.clock.advance(beat.period)
        self.assertEqual(self.registries.take_asked(), [(b"POST", URL_B), (b"POST", URL)])
        self.assertEqual((beat.registry_url, beat.failures), (URL, 0))
        self.assertEqual(self.registries.a.live(), ["tcp@127.0.0.1:7001"])
        self.assertEqual(self.delays(), [beat.period])

    def test_the_backoff_starts_when_every_registry_failed_in_a_row(self) -> None:
        self.registries.a.up = self.registries.b.up = False
        beat = self.start()
        self.assertEqual(self.registries.take_asked(), [(b"POST", URL), (b"POST", URL_B)])
        self.assertEqual((beat.failures, self.delays()), (2, [1.0]))
        self.assertTrue(
            self.logged(LogLevel.warn)[-1].endswith(
                f", as to every other registry; retrying at {URL} in 1.0s"
            ),
            self.logged(LogLevel.warn)[-1],
        )
        self.clock.advance(1)  # a round: both again, then twice the delay
        self.assertEqual(self.registries.take_asked(), [(b"POST", URL), (b"POST", URL_B)])
        self.assertEqual((beat.failures, self.delays()), (4, [2.0]))
        self.clock.advance(2)
        self.assertEqual(self.delays(), [4.0])
        self.registries.b.up = True
        self.clock.advance(4)  # A still fails, B answers at once
        self.assertEqual(self.registries.take_asked()[-2:], [(b"POST", URL), (b"POST", URL_B)])
        self.assertEqual((beat.registry_url, beat.failures), (URL_B, 0))
        self.assertEqual(self.registries.b.live(), ["tcp@127.0.0.1:7001"])
        self.registries.b.up = False  # the backoff starts over from its first delay
        self.clock.advance(beat.period)
        self.assertEqual(self.delays(), [1.0])

    def test_a_refusal_any_registry_would_repeat_is_not_failed_over(self) -> None:
        beat = self.start("not an address")  # 400 from A: B would say the same
        self.assertEqual(self.registries.take_asked(), [(b"POST", URL)])
        self.assertEqual((beat.registry_url, beat.failures, self.delays()), (URL, 1, [1.0]))
        self.assertIn("the registry answered 400", self.logged(LogLevel.warn)[-1])
        self.assertTrue(self.logged(LogLevel.warn)[-1].endswith("; retrying in 1.0s"))

    def test_a_full_registry_is_failed_over(self) -> None:
        self.registries.a.store.max_entries = 1
        self.registries.a.store.heartbeat("tcp@127.0.0.1:1", 0)
        beat = self.start()  # 503 from A
        self.assertEqual(self.registries.take_asked(), [(b"POST", URL), (b"POST", URL_B)])
        self.assertEqual((beat.registry_url, beat.beats), (URL_B, 1))
        self.assertIn("the registry answered 503: registry full", self.logged(LogLevel.warn)[0])

    def test_deregistration_goes_to_the_registry_that_answered_last(self) -> None:
        self.registries.a.up = False
        beat = self.start()
        self.registries.a.up = True
        self.registries.take_asked()
        self.successResultOf(beat.stopService())
        self.assertEqual(self.registries.take_asked(), [(b"DELETE", URL_B)])
        self.assertEqual(self.registries.b.live(), [])
        self.assertEqual(
            self.logged(LogLevel.info)[-1],
            f"heartbeat: tcp@127.0.0.1:7001 deregistered from {URL_B}",
        )

    def test_deregistration_fails_over(self) -> None:
        beat = self.start()
        self.registries.a.up = False
        self.registries.take_asked()
        self.successResultOf(beat.stopService())
        self.assertEqual(self.registries.take_asked(), [(b"DELETE", URL), (b"DELETE", URL_B)])
        warning = self.logged(LogLevel.warn)[-1]
        self.assertTrue(
            warning.startswith(f"heartbeat: could not deregister tcp@127.0.0.1:7001 from {URL}: "),
            warning,
        )
        self.assertTrue(warning.endswith(f"; trying {URL_B}"), warning)
        # B holds no entry (A had it): nothing to deregister there, and said so.
        self.assertIn(f"was not registered at {URL_B}", self.logged(LogLevel.info)[-1])

    def test_a_beat_through_every_registry_ends_within_a_period(self) -> None:
        # Each registry hangs: the beat tries them all within one period, so
        # a healthy last one is reached before the entry can expire.
        asked: list[tuple[str, float]] = []

        def request(
            method: bytes, url: str, headers: dict[bytes, bytes], timeout: float
        ) -> Deferred[Answer]:
            asked.append((url, timeout))
            d: Deferred[Answer] = Deferred()
            return d.addTimeout(timeout, self.clock)

        beat = Heartbeat(self.clock, request, [URL, URL_B], "tcp@h:1", period=3)
        beat.startService()
        self.clock.advance(3)
        self.assertEqual(asked, [(URL, 1.5), (URL_B, 1.5)])
        beat.stopService()
        self.clock.advance(10)

    def test_deregistration_stays_within_one_request_timeout(self) -> None:
        timeouts: list[tuple[str, float]] = []
        slow: dict[str, float] = {URL: 1.0}  # A fails after 1 s

        def request(
            method: bytes, url: str, headers: dict[bytes, bytes], timeout: float
        ) -> Deferred[Answer]:
            if method == b"POST":
                return succeed(Answer(200, {b"x-geerpc-timeout": b"9"}))
            timeouts.append((url, timeout))
            d: Deferred[Answer] = Deferred()
            d.addTimeout(timeout, self.clock)
            if url in slow:
                self.clock.callLater(slow[url], d.errback, ConnectionRefusedError())
            return d

        beat = Heartbeat(self.clock, request, [URL, URL_B], "tcp@h:1")
        beat.startService()
        # A period of 3 s shared by two registries.
        self.assertEqual(beat.request_timeout, 1.5)
        stopping = beat.stopService()
        self.clock.advance(1)  # A refused after 1 s: B gets what is left of the 1.5 s
        self.assertEqual(timeouts, [(URL, 1.5), (URL_B, 0.5)])
        self.clock.advance(0.5)
        self.assertIsNone(self.successResultOf(stopping))
        self.assertTrue(
            self.logged(LogLevel.warn)[-1].startswith(
                f"heartbeat: could not deregister tcp@h:1 from {URL_B}: "
            )
        )
        # A hung DELETE uses up the whole bound: no other registry is asked.
        timeouts.clear()
        del slow[URL]
        beat.startService()
        stopping = beat.stopService()
        self.clock.advance(1.5)
        self.assertIsNone(self.successResultOf(stopping))
        self.assertEqual(timeouts, [(URL, 1.5)])
        self.assertTrue(
            self.logged(LogLevel.warn)[-1].startswith(
                f"heartbeat: could not deregister tcp@h:1 from {URL}: "
            )
        )


class FailoverRingTests(SynchronousTestCase):
    """The ring the heartbeat and the registry discovery share."""

    def test_one_url_or_several(self) -> None:
        self.assertEqual(FailoverRing(URL).urls, (URL,))
        self.assertEqual(FailoverRing([URL, URL_B]).urls, (URL, URL_B))
        with self.assertRaises(ValueError):
            FailoverRing([])

    def test_a_round_asks_each_once_then_ends(self) -> None:
        ring = FailoverRing(["a", "b", "c"])
        self.assertEqual(ring.current, "a")
        self.assertTrue(ring.failed())
        self.assertEqual(ring.current, "b")
        self.assertTrue(ring.failed())
        self.assertEqual(ring.current, "c")
        self.assertFalse(ring.failed())  # every one failed in a row: the round ends
        self.assertEqual(ring.current, "a")
        self.assertTrue(ring.failed())  # a new round

    def test_the_one_that_answered_is_asked_first(self) -> None:
        ring = FailoverRing(["a", "b", "c"])
        ring.failed()
        ring.answered()
        self.assertEqual(ring.current, "b")
        self.assertEqual(ring.from_answered(), ["b", "c", "a"])
        self.assertTrue(ring.failed())
        self.assertTrue(ring.failed())  # the answer started a new round
        self.assertEqual(ring.current, "a")
        self.assertEqual(ring.from_answered(), ["b", "c", "a"])  # still b that answered
        self.assertFalse(ring.failed())

    def test_a_new_round_without_moving_on(self) -> None:
        ring = FailoverRing(["a", "b"])
        self.assertTrue(ring.failed())
        ring.new_round()
        self.assertEqual(ring.current, "b")
        self.assertTrue(ring.failed())  # b is the first of the new round
        self.assertFalse(ring.failed())

    def test_a_single_registry(self) -> None:
        ring = FailoverRing(URL)
        self.assertFalse(ring.failed())
        self.assertEqual(ring.current, URL)
