"""
The live parts of the debug page (issue 16 item 5): open connections, calls
in flight, recent errors, latency histograms and calls-per-second history,
the server's description, the embedded registry, and the site's index page.
Rendered through a real ``twisted.web`` Site over a StringTransport, numbers
from real calls dispatched in memory, time from a Clock.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from txgeerpc import Server, connect
from txgeerpc._dispatch import RECENT_ERRORS
from txgeerpc._live import HISTORY_SAMPLES, RateHistory
from txgeerpc._service import LATENCY_BUCKETS
from txgeerpc._version import __version__
from txgeerpc.errors import RemoteError
from txgeerpc.examples import Args, register_examples
from txgeerpc.registry import MemoryStore, RegistryResource
from txgeerpc.testing import InMemoryConnection, MemoryNetwork, connect_in_memory

from ._helpers import checked_clock
from .test_debug import fetch, site_for


class LivePageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.clock.advance(1000)
        self.server = Server(self.clock)
        register_examples(self.server)
        self.site = site_for(self.server, self.clock)

    def connect(self) -> InMemoryConnection:
        pair = connect_in_memory(self.server, clock=self.clock)
        self.addCleanup(pair.close)
        return pair

    def live(self) -> dict[str, Any]:
        data: dict[str, Any] = fetch(self.site, b"/debug/geerpc?format=json").json()
        return data

    def test_connections_and_calls_in_flight(self) -> None:
        network = MemoryNetwork(self.clock)
        self.addCleanup(network.close)
        port = network.listen(self.server.port_factory())
        connecting = connect(network.reactor, f"tcp@{port.address}")
        network.flush()
        client = self.successResultOf(connecting)
        self.addCleanup(client.close)
        self.clock.advance(3)
        d = client.call("Foo.Sleep", Args(60, 0), timeout=20)
        network.flush()
        self.clock.advance(4)
        data = self.live()
        (connection,) = data["open_connections"]
        self.assertEqual(
            (connection["transport"], connection["codec"], connection["in_flight"]),
            ("raw", "application/gob", 1),
        )
        self.assertEqual(connection["age_seconds"], 7.0)
        self.assertRegex(connection["peer"], r"\S")
        (call,) = data["in_flight_calls"]
        self.assertEqual((call["method"], call["age_seconds"]), ("Foo.Sleep", 4.0))
        self.assertEqual(call["deadline_seconds"], 16.0)  # the 20 s budget, 4 s gone
        self.assertEqual(call["seq"], 1)
        html = fetch(self.site).body.decode()
        self.assertRegex(html, r'<table id="in-flight-calls".*<td>Foo\.Sleep</td>')
        self.assertIn("16.0 s", html)
        d.cancel()
        network.flush()
        self.failureResultOf(d)
        self.assertEqual(self.live()["in_flight_calls"], [])

    def test_recent_errors_newest_first_and_bounded(self) -> None:
        pair = self.connect()
        for n in range(RECENT_ERRORS + 5):
            d = pair.client.call("Arith.Divide", Args(n, 0))
            pair.flush()
            self.failureResultOf(d, RemoteError)
            self.clock.advance(1)
        d = pair.client.call("Nope.Method", None)
        pair.flush()
        self.failureResultOf(d, RemoteError)
        errors = self.live()["recent_errors"]
        self.assertEqual(len(errors), RECENT_ERRORS)
        self.assertEqual(errors[0]["method"], "Nope.Method")
        self.assertEqual(errors[0]["text"], "rpc server: can't find service Nope")
        self.assertEqual(errors[1]["text"], "divide by zero")
        self.assertEqual(errors[1]["age_seconds"], 1.0)
        self.assertEqual(errors[-1]["seq"], 7)  # the first 5 (seq 1-5) and the hello... fell out
        html = fetch(self.site).body.decode()
        self.assertIn('<td class="text">divide by zero</td>', html)

    def test_latency_histogram(self) -> None:
        pair = self.connect()
        for seconds in (0, 5, 5, 75):
            d = pair.client.call("Foo.Sleep", Args(seconds, 0))
            pair.flush()
            self.clock.advance(seconds)
            pair.flush()
            self.successResultOf(d)
        buckets = self.live()["latency_buckets"]
        self.assertEqual(buckets["le_seconds"], list(LATENCY_BUCKETS))
        counts = buckets["methods"]["Foo.Sleep"]
        self.assertEqual(len(counts), len(LATENCY_BUCKETS) + 1)
        self.assertEqual(counts[0], 1)  # 0 s
        self.assertEqual(counts[LATENCY_BUCKETS.index(5.0)], 2)  # at most 5 s
        self.assertEqual(counts[-1], 1)  # over the last bound (60 s)
        self.assertEqual(sum(counts), 4)
        self.assertEqual(sum(buckets["methods"]["Foo.Sum"]), 0)
        html = fetch(self.site).body.decode()
        row = html.split('data-method="Sleep"')[1].split("</tr>")[0]
        bars = re.findall(r'<rect [^>]*data-count="(\d+)"', row)
        self.assertEqual([int(count) for count in bars], counts)

    def test_calls_per_second_history(self) -> None:
        pair = self.connect()
        self.live()  # the first sample
        for second in range(3):
            for _ in range(second * 10):
                d = pair.client.call("Foo.Sum", Args(1, 1))
                pair.flush()
                self.successResultOf(d)
            self.clock.advance(0.5)
            self.live()  # too soon after the last sample: not one
            self.clock.advance(1.5)
            self.live()
        rates = self.live()["calls_per_second"]["Foo.Sum"]
        self.assertEqual(rates, [0.0, 5.0, 10.0])
        html = fetch(self.site).body.decode()
        row = html.split('data-method="Sum"')[1].split("</tr>")[0]
        self.assertIn('data-rate="10.0"', row)
        self.assertIn("<polyline", row)

    def test_the_history_is_bounded(self) -> None:
        history = RateHistory()
        for second in range(HISTORY_SAMPLES * 2):
            history.sample(float(second), {"A.B": second * 3})
        self.assertEqual(history.rates()["A.B"], (3.0,) * HISTORY_SAMPLES)
        history.sample(0.0, {"A.B": 0})  # the clock went back: start again
        self.assertEqual(history.rates()["A.B"], ())

    def test_server_description(self) -> None:
        self.server.addresses.append("tcp@127.0.0.1:7001")
        server = self.live()["server"]
        self.assertEqual(server["version"], __version__)
        self.assertEqual(server["addresses"], ["tcp@127.0.0.1:7001"])
        self.assertEqual(server["settings"]["max_message_size"], "4194304")
        self.assertEqual(server["settings"]["max_handle_timeout"], "none")
        html = fetch(self.site).body.decode()
        self.assertIn('<dd id="addresses">tcp@127.0.0.1:7001</dd>', html)
        self.assertIn("<td>largest message (bytes)</td><td>4194304</td>", html)

    def test_registry_entries_when_one_is_mounted(self) -> None:
        self.assertIsNone(self.live()["registry"])
        self.assertNotIn('id="registry"', fetch(self.site).body.decode())
        store = MemoryStore(300)
        self.server.registry = RegistryResource(store, self.clock)
        store.heartbeat("tcp@10.0.0.5:7001", self.clock.seconds())
        self.clock.advance(12)
        self.assertEqual(
            self.live()["registry"], [{"address": "tcp@10.0.0.5:7001", "age_seconds": 12.0}]
        )
        self.assertIn("<td>tcp@10.0.0.5:7001</td>", fetch(self.site).body.decode())

    def test_refresh(self) -> None:
        self.assertIn(b'<body data-refresh="2">', fetch(self.site).body)
        self.assertIn(
            b'<body data-refresh="0.5">', fetch(self.site, b"/debug/geerpc?refresh=0.5").body
        )
        for bad in (b"x", b"-1", b"nan", b"1e9"):
            response = fetch(self.site, b"/debug/geerpc?refresh=" + bad)
            self.assertEqual(response.code, 400, bad)


class IndexPageTests(SynchronousTestCase):
    def test_the_index_links_to_what_the_site_serves(self) -> None:
        clock = checked_clock(self)
        server = Server(clock)
        site = server.site()
        site.resource.putChild(b"metrics", Resource())  # mounted later, still listed
        response = fetch(site, b"/")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header(b"content-type"), b"text/html; charset=utf-8")
        self.assertIn(b"default-src 'none'", response.header(b"content-security-policy") or b"")
        links = re.findall(rb'<a href="([^"]+)">([^<]+)</a>', response.body)
        self.assertEqual(
            links,
            [
                (b"/debug/geerpc", b"Debug page (live)"),
                (b"/healthz", b"Health check"),
                (b"/metrics", b"Prometheus metrics"),
            ],
        )
        self.assertEqual(fetch(site, b"/nothing").code, 404)
        # The page links back to it.
        self.assertIn(b'<a href="/">index</a>', fetch(site, b"/debug/geerpc").body)
