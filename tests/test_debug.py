"""
The debug page (``txgeerpc.debug``) and the latency record behind it
(``MethodStats.record``/``percentile``): rendered through a real
``twisted.web`` Site over a StringTransport, with the numbers produced by
real calls dispatched in memory and time taken from a Clock.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

import attrs
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from txgeerpc import MethodStats, Server
from txgeerpc._service import LATENCY_BUCKETS, estimate_quantile
from txgeerpc.debug import DebugResource, format_latency, human_duration, prefers_json
from txgeerpc.errors import RemoteError
from txgeerpc.examples import Args, register_examples
from txgeerpc.testing import InMemoryConnection, connect_in_memory

from ._helpers import CapturedLogs, checked_clock

BROWSER_ACCEPT = b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


# -- reading the page ---------------------------------------------------------


@attrs.define
class Page:
    """What a debug page shows, as its stable ids and classes expose it.

    :ivar services: service name -> method name -> cell class -> text, in
        page order.
    """

    title: str = ""
    heading: str = ""
    summary: dict[str, str] = attrs.field(factory=dict)
    uptime_attribute: str | None = None
    services: dict[str, dict[str, dict[str, str]]] = attrs.field(factory=dict)
    headings: list[str] = attrs.field(factory=list)
    no_services: bool = False


class _PageParser(HTMLParser):
    """Collects a :class:`Page` (also from Chromium's ``--dump-dom``)."""

    _CELLS = {"name", "signature", "calls", "errors", "in-flight", "p50", "p99"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._service: str | None = None
        self._method: dict[str, str] | None = None
        self._target: tuple[str, str] | None = None  # (where, key) text goes
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs_: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs_)
        classes = (attributes.get("class") or "").split()
        if tag == "table" and "service" in classes:
            self._service = attributes.get("data-service") or ""
            self.page.services[self._service] = {}
        elif tag == "tr" and "method" in classes and self._service is not None:
            self._method = self.page.services[self._service][attributes["data-method"] or ""] = {}
        elif tag in ("td", "th") and self._method is not None:
            cell = next((name for name in classes if name in self._CELLS), None)
            if cell is not None:
                self._start("cell", cell)
        elif tag == "dd" and attributes.get("id"):
            self._start("summary", attributes["id"] or "")
            if attributes["id"] == "uptime":
                self.page.uptime_attribute = attributes.get("data-seconds")
        elif tag in ("title", "h1", "h2"):
            self._start(tag, tag)
        elif tag == "p" and attributes.get("id") == "no-services":
            self.page.no_services = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._service = None
        elif tag == "tr":
            self._method = None
        if self._target is not None and tag in ("td", "th", "dd", "title", "h1", "h2"):
            where, key = self._target
            text = " ".join("".join(self._text).split())
            if where == "cell" and self._method is not None:
                self._method[key] = text
            elif where == "summary":
                self.page.summary[key] = text
            elif where == "title":
                self.page.title = text
            elif where == "h1":
                self.page.heading = text
            elif where == "h2":
                self.page.headings.append(text)
            self._target = None

    def handle_data(self, data: str) -> None:
        if self._target is not None:
            self._text.append(data)

    def _start(self, where: str, key: str) -> None:
        self._target = (where, key)
        self._text = []


def parse_page(html: str) -> Page:
    """The :class:`Page` an HTML document shows."""
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser.page


# -- fetching it --------------------------------------------------------------


@attrs.frozen
class Response:
    code: int
    headers: dict[bytes, list[bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self) -> Any:
        assert self.header(b"content-type") == b"application/json; charset=utf-8"
        return json.loads(self.body)

    def page(self) -> Page:
        assert self.header(b"content-type") == b"text/html; charset=utf-8"
        return parse_page(self.body.decode("utf-8"))


def site_for(server: Server, clock: Clock) -> Site:
    """A Site with the debug page where the one-port server mounts it."""
    root = Resource()
    debug = Resource()
    root.putChild(b"debug", debug)
    debug.putChild(b"geerpc", DebugResource(server))
    site = Site(root, reactor=clock)
    site.displayTracebacks = False
    return site


def fetch(
    site: Site,
    path: bytes = b"/debug/geerpc",
    method: bytes = b"GET",
    headers: dict[bytes, bytes] | None = None,
) -> Response:
    """One HTTP/1.1 exchange with ``site`` over a StringTransport."""
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in (headers or {}).items()]
    lines.append(b"Connection: close")
    channel.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n")
    raw = transport.value()
    channel.connectionLost(Failure(ConnectionDone()))
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *header_lines = head.split(b"\r\n")
    parsed: dict[bytes, list[bytes]] = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        parsed.setdefault(name.strip().lower(), []).append(value.strip())
    length = parsed.get(b"content-length")
    if method != b"HEAD" and length is not None:
        assert len(body) == int(length[0]), (len(body), length)
    return Response(int(status.split()[1]), parsed, body)


class _Evil:
    def Go(self, n: int) -> int:
        return n


# -- the page ------------------------------------------------------------------


class DebugPageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.server = Server(self.clock)
        register_examples(self.server)
        self.site = site_for(self.server, self.clock)

    def connect(self) -> InMemoryConnection:
        pair = connect_in_memory(self.server, clock=self.clock)
        self.addCleanup(pair.close)
        return pair

    def call(self, pair: InMemoryConnection, method: str, argument: Any) -> Any:
        d = pair.client.call(method, argument)
        pair.flush()
        return self.successResultOf(d)

    def test_counts_after_calls(self) -> None:
        pair = self.connect()
        self.assertEqual(self.call(pair, "Foo.Sum", Args(1, 2)), 3)
        self.assertEqual(self.call(pair, "Foo.Sum", Args(3, 4)), 7)
        with CapturedLogs():
            d = pair.client.call("Arith.Divide", Args(1, 0))
            pair.flush()
        self.assertEqual(self.failureResultOf(d, RemoteError).value.message, "divide by zero")
        self.flushLoggedErrors(ZeroDivisionError)

        response = fetch(self.site)
        self.assertEqual(response.code, 200)
        page = response.page()
        self.assertEqual(page.title, "txgeerpc services")
        self.assertEqual(page.heading, "txgeerpc services")
        self.assertEqual(page.summary["connections"], "1")
        self.assertEqual(page.summary["total-calls"], "3")
        self.assertEqual(
            page.services["Foo"]["Sum"],
            {
                "name": "Sum",
                "signature": "Sum(Args) -> int",
                "calls": "2",
                "errors": "0",
                "in-flight": "0",
                "p50": "0.000 ms",  # the Clock did not move during the calls
                "p99": "0.000 ms",
            },
        )
        divide = page.services["Arith"]["Divide"]
        self.assertEqual((divide["calls"], divide["errors"], divide["in-flight"]), ("1", "1", "0"))
        self.assertEqual((divide["p50"], divide["p99"]), ("0.000 ms", "0.000 ms"))
        never = page.services["Arith"]["Multiply"]
        self.assertEqual((never["calls"], never["p50"], never["p99"]), ("0", "—", "—"))
        # The introspection service is not the user's: it is not listed.
        self.assertEqual(list(page.services), ["Arith", "Ctx", "Foo", "Records"])
        self.assertEqual(
            page.headings, ["Service Arith", "Service Ctx", "Service Foo", "Service Records"]
        )

    def test_in_flight_and_latency_from_the_clock(self) -> None:
        pair = self.connect()
        d = pair.client.call("Foo.Sleep", Args(5, 1))
        pair.flush()
        self.assertNoResult(d)
        sleep = fetch(self.site).page().services["Foo"]["Sleep"]
        self.assertEqual((sleep["calls"], sleep["in-flight"], sleep["p50"]), ("1", "1", "—"))
        self.assertEqual(fetch(self.site, headers={b"Accept": b"application/json"}).code, 200)

        self.clock.advance(5)
        pair.flush()
        self.assertEqual(self.successResultOf(d), 6)
        self.clock.advance(2)
        d = pair.client.call("Foo.Sleep", Args(0, 1))
        pair.flush()
        self.clock.advance(0)  # a zero sleep still waits for the clock's next turn
        pair.flush()
        self.assertEqual(self.successResultOf(d), 1)

        sleep = fetch(self.site).page().services["Foo"]["Sleep"]
        self.assertEqual(
            (sleep["calls"], sleep["in-flight"], sleep["p50"], sleep["p99"]),
            # Estimated from the latency histogram (a 0 s and a 5 s call): the
            # median is the first bucket's bound (25 µs), the 99th percentile
            # 98% of the way through the (2.5 s, 5 s] bucket.
            ("2", "0", "0.025 ms", "4950 ms"),
        )
        data = fetch(self.site, b"/debug/geerpc?format=json").json()
        (foo,) = (service for service in data["services"] if service["name"] == "Foo")
        (method,) = (method for method in foo["methods"] if method["name"] == "Sleep")
        self.assertAlmostEqual(method.pop("p50_ms"), 0.025)
        self.assertAlmostEqual(method.pop("p99_ms"), 4950.0)
        self.assertEqual(
            method,
            {
                "name": "Sleep",
                "signature": "Sleep(Args) -> int",
                "calls": 2,
                "errors": 0,
                "in_flight": 0,
                "total_seconds": 5.0,
                "cancelled": 0,
                "expired": 0,
            },
        )

    def test_names_are_escaped(self) -> None:
        self.server.register(_Evil(), name="Evil<b>&")
        pair = self.connect()
        self.assertEqual(self.call(pair, "Evil<b>&.Go", 7), 7)
        response = fetch(self.site)
        self.assertIn(b'data-service="Evil&lt;b&gt;&amp;"', response.body)
        self.assertIn(b"Service Evil&lt;b&gt;&amp;", response.body)
        self.assertIn(b"Go(int) -&gt; int", response.body)
        self.assertNotIn(b"<b>", response.body)
        self.assertNotIn(b"Evil<", response.body)
        page = response.page()
        self.assertEqual(page.services["Evil<b>&"]["Go"]["calls"], "1")
        self.assertEqual(list(page.services), ["Arith", "Ctx", "Evil<b>&", "Foo", "Records"])
        # The JSON is ASCII and carries the name exactly.
        raw = fetch(self.site, b"/debug/geerpc?format=json").body
        self.assertEqual(raw, raw.decode("ascii").encode("ascii"))
        self.assertIn("Evil<b>&", [service["name"] for service in json.loads(raw)["services"]])

    def test_json_by_accept_header(self) -> None:
        pair = self.connect()
        self.call(pair, "Arith.Multiply", Args(6, 7))
        self.clock.advance(12.5)
        response = fetch(self.site, headers={b"Accept": b"application/json"})
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header(b"vary"), b"Accept")
        data = response.json()
        self.assertEqual(
            {key: data[key] for key in ("uptime_seconds", "connections", "calls")},
            {"uptime_seconds": 12.5, "connections": 1, "calls": 1},
        )
        self.assertEqual(
            [
                (service["name"], [m["name"] for m in service["methods"]])
                for service in data["services"]
            ],
            [
                ("Arith", ["Divide", "Echo", "Fail", "Multiply"]),
                ("Ctx", ["Cancelled", "Info"]),
                ("Foo", ["Sleep", "Sum"]),
                ("Records", ["Echo", "Keys"]),
            ],
        )
        multiply = data["services"][0]["methods"][3]
        self.assertEqual(
            multiply,
            {
                "name": "Multiply",
                "signature": "Multiply(Args) -> int",
                "calls": 1,
                "errors": 0,
                "in_flight": 0,
                "p50_ms": 0.0,
                "p99_ms": 0.0,
                "total_seconds": 0.0,
                "cancelled": 0,
                "expired": 0,
            },
        )
        echo = data["services"][0]["methods"][1]
        self.assertEqual((echo["calls"], echo["p50_ms"], echo["p99_ms"]), (0, None, None))

    def test_json_by_query_whatever_the_accept_header(self) -> None:
        for accept in (BROWSER_ACCEPT, b"text/html", b"application/json"):
            response = fetch(self.site, b"/debug/geerpc?format=json", headers={b"Accept": accept})
            self.assertEqual(response.json()["connections"], 0)
        html = fetch(
            self.site, b"/debug/geerpc?format=html", headers={b"Accept": b"application/json"}
        )
        self.assertEqual(html.page().heading, "txgeerpc services")

    def test_html_for_browsers_and_by_default(self) -> None:
        for headers in ({}, {b"Accept": BROWSER_ACCEPT}, {b"Accept": b"*/*"}):
            response = fetch(self.site, headers=headers)
            self.assertEqual(response.header(b"content-type"), b"text/html; charset=utf-8")
            self.assertTrue(response.body.startswith(b"<!DOCTYPE html>\n<html"), response.body[:40])

    def test_unknown_format(self) -> None:
        response = fetch(self.site, b"/debug/geerpc?format=xml")
        self.assertEqual(response.code, 400)
        self.assertEqual(response.header(b"content-type"), b"text/plain; charset=utf-8")

    def test_services_and_methods_sorted(self) -> None:
        server = Server(self.clock)

        class Zeta:
            def b(self) -> None: ...

            def a(self) -> None: ...

        for name in ("Zeta", "alpha", "Mid", "Alpha"):
            server.register(Zeta(), name=name)
        site = site_for(server, self.clock)
        page = fetch(site).page()
        self.assertEqual(list(page.services), ["Alpha", "Mid", "Zeta", "alpha"])
        self.assertEqual([list(methods) for methods in page.services.values()], [["a", "b"]] * 4)
        data = fetch(site, headers={b"Accept": b"application/json"}).json()
        self.assertEqual([service["name"] for service in data["services"]], list(page.services))
        self.assertEqual(
            [[m["name"] for m in service["methods"]] for service in data["services"]],
            [["a", "b"]] * 4,
        )

    def test_uptime_from_the_server_clock(self) -> None:
        self.clock.advance(1000)  # the server was made at 0
        self.assertEqual(fetch(self.site).page().summary["uptime"], "16m 40s (1000.0 s)")
        self.clock.advance(86400 + 3600 + 61.25 - 1000)
        page = fetch(self.site).page()
        self.assertEqual(page.summary["uptime"], "1d 01h 01m 01s (90061.2 s)")
        self.assertEqual(page.uptime_attribute, "90061.2")
        data = fetch(self.site, b"/debug/geerpc?format=json").json()
        self.assertEqual(data["uptime_seconds"], 90061.25)

    def test_connections_follow_the_server(self) -> None:
        first = connect_in_memory(self.server, clock=self.clock)
        second = self.connect()
        self.assertEqual(fetch(self.site).page().summary["connections"], "2")
        first.close()
        self.assertEqual(fetch(self.site).page().summary["connections"], "1")
        second.close()
        self.assertEqual(fetch(self.site, b"/debug/geerpc?format=json").json()["connections"], 0)

    def test_no_services(self) -> None:
        site = site_for(Server(self.clock), self.clock)
        page = fetch(site).page()
        self.assertTrue(page.no_services)
        self.assertEqual(page.services, {})
        self.assertEqual(fetch(site, b"/debug/geerpc?format=json").json()["services"], [])
        self.assertFalse(fetch(self.site).page().no_services)

    def test_head(self) -> None:
        for query, content_type in (
            (b"", b"text/html; charset=utf-8"),
            (b"?format=json", b"application/json; charset=utf-8"),
        ):
            get = fetch(self.site, b"/debug/geerpc" + query)
            head = fetch(self.site, b"/debug/geerpc" + query, method=b"HEAD")
            self.assertEqual(head.code, 200)
            self.assertEqual(head.body, b"")
            self.assertEqual(head.header(b"content-type"), content_type)
            self.assertEqual(head.header(b"content-length"), b"%d" % len(get.body))

    def test_other_methods_not_allowed(self) -> None:
        for method in (b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"BREW"):
            response = fetch(self.site, method=method)
            self.assertEqual(response.code, 405, method)
            self.assertEqual(response.header(b"allow"), b"GET, HEAD", method)
            self.assertEqual(response.body, b"405 method not allowed\n", method)

    def test_paths_below_are_not_found(self) -> None:
        self.assertEqual(fetch(self.site, b"/debug/geerpc/").code, 200)
        self.assertEqual(fetch(self.site, b"/debug/geerpc/Foo").code, 404)

    def test_protective_headers(self) -> None:
        response = fetch(self.site)
        self.assertEqual(response.header(b"cache-control"), b"no-store")
        self.assertEqual(response.header(b"x-content-type-options"), b"nosniff")
        policy = response.header(b"content-security-policy") or b""
        self.assertIn(b"default-src 'none'", policy)
        # One script, the page's own refresh, allowed by a nonce new for
        # every answer (issue 16: a tiny inline script under the CSP).
        (nonce,) = re.findall(rb"script-src 'nonce-([A-Za-z0-9_-]{16,})'", policy)
        self.assertEqual(
            re.findall(rb"<script[^>]*>", response.body), [b'<script nonce="%s">' % nonce]
        )
        self.assertNotIn(b"src=", response.body)
        again = fetch(self.site).header(b"content-security-policy") or b""
        self.assertNotIn(nonce, again)


# -- pieces --------------------------------------------------------------------


class NegotiationTests(SynchronousTestCase):
    def test_prefers_json(self) -> None:
        for accept, expected in [
            (None, False),
            ("", False),
            ("*/*", False),
            (BROWSER_ACCEPT.decode(), False),
            ("text/html", False),
            ("application/json", True),
            ("Application/JSON", True),
            ("application/json; charset=utf-8", True),
            ("application/*", True),
            ("application/json, */*", True),
            ("application/json, */*;q=0.1", True),
            ("application/json;q=0.5, text/html", False),
            ("text/html;q=0.1, application/json", True),
            ("text/html, application/json", False),
            ("application/json, text/html", False),
            ("application/json;q=0", False),
            ("application/json;q=nonsense", False),
            ("application/json;q=2", False),
            ("garbage, application/json", True),
            ("text/*;q=0.5, application/json;q=0.6", True),
        ]:
            self.assertEqual(prefers_json(accept), expected, accept)


class FormattingTests(SynchronousTestCase):
    def test_human_duration(self) -> None:
        for seconds, text in [
            (0, "0s"),
            (-3, "0s"),
            (59.99, "59s"),
            (60, "1m 00s"),
            (3599, "59m 59s"),
            (3600, "1h 00m 00s"),
            (86399, "23h 59m 59s"),
            (86400 * 400 + 5, "400d 00h 00m 05s"),
        ]:
            self.assertEqual(human_duration(seconds), text, seconds)

    def test_format_latency(self) -> None:
        for seconds, text in [
            (None, "—"),
            (0.0, "0.000 ms"),
            (0.0000421, "0.042 ms"),
            (0.00314159, "3.14 ms"),
            (0.0123, "12.3 ms"),
            (0.25, "250 ms"),
            (12.0, "12000 ms"),
        ]:
            self.assertEqual(format_latency(seconds), text, seconds)


class MethodStatsTests(SynchronousTestCase):
    def test_fresh(self) -> None:
        stats = MethodStats()
        self.assertEqual((stats.calls, stats.errors, stats.in_flight), (0, 0, 0))
        self.assertEqual(stats.total_seconds, 0.0)
        self.assertIsNone(stats.percentile(50))
        self.assertIsNone(stats.percentile(99))

    def test_record_adds_to_the_total_and_the_histogram(self) -> None:
        stats = MethodStats()
        stats.record(0.5)
        stats.record(0.25)
        stats.record(1000.0)
        self.assertEqual(stats.total_seconds, 1000.75)
        # Each duration lands in the first bucket whose bound holds it (le).
        expected = [0] * (len(LATENCY_BUCKETS) + 1)
        expected[LATENCY_BUCKETS.index(0.5)] += 1
        expected[LATENCY_BUCKETS.index(0.25)] += 1
        expected[-1] += 1  # past the last bound
        self.assertEqual(stats.buckets, expected)
        self.assertEqual(stats.finished, 3)

    def test_a_clock_stepping_back_counts_as_nothing(self) -> None:
        stats = MethodStats()
        stats.record(-1.0)
        self.assertEqual((stats.total_seconds, stats.percentile(100)), (0.0, 0.0))
        self.assertEqual(stats.buckets[0], 1)

    def test_percentiles_from_the_buckets(self) -> None:
        # 100 calls spread evenly over the (1 ms, 2.5 ms] bucket: linear
        # interpolation within it, as Prometheus' histogram_quantile does.
        stats = MethodStats()
        for n in range(1, 101):
            stats.record(0.001 + 0.0015 * n / 100)
        self.assertAlmostEqual(stats.percentile(50), 0.00175)  # type: ignore[arg-type]
        self.assertAlmostEqual(stats.percentile(99), 0.002485)  # type: ignore[arg-type]
        # Kept within the longest duration seen.
        self.assertAlmostEqual(stats.percentile(0), 0.001)  # type: ignore[arg-type]
        self.assertAlmostEqual(stats.percentile(100), 0.0025)  # type: ignore[arg-type]

    def test_one_duration_is_every_percentile(self) -> None:
        single = MethodStats()
        single.record(0.125)
        self.assertEqual((single.percentile(50), single.percentile(99)), (0.125, 0.125))
        slow = MethodStats()
        slow.record(5000.0)  # past the last bound: the longest seen
        self.assertEqual(slow.percentile(99), 5000.0)

    def test_two_populations(self) -> None:
        stats = MethodStats()
        for _ in range(90):
            stats.record(0.0002)  # (100 µs, 250 µs]
        for _ in range(10):
            stats.record(0.2)  # (100 ms, 250 ms]
        p50 = stats.percentile(50)
        p99 = stats.percentile(99)
        assert p50 is not None and p99 is not None
        self.assertTrue(0.0001 < p50 <= 0.00025, p50)
        self.assertTrue(0.1 < p99 <= 0.2, p99)

    def test_bounded(self) -> None:
        stats = MethodStats()
        for n in range(10_000):
            stats.record(n / 1000.0)
        self.assertEqual(len(stats.buckets), len(LATENCY_BUCKETS) + 1)
        self.assertEqual(stats.finished, 10_000)
        self.assertIsNone(estimate_quantile([0] * (len(LATENCY_BUCKETS) + 1), 0.5))

    def test_percentile_range(self) -> None:
        stats = MethodStats()
        stats.record(1.0)
        for bad in (-0.1, 100.5, float("nan")):
            self.assertRaises(ValueError, stats.percentile, bad)

    def test_comparisons_ignore_the_durations(self) -> None:
        recorded = MethodStats(calls=1)
        recorded.record(0.0)
        self.assertEqual(recorded, MethodStats(calls=1))
        self.assertNotEqual(recorded, MethodStats(calls=2))
        self.assertNotIn("buckets", repr(recorded))
