"""Prometheus metrics (txgeerpc.metrics) and the access log: calls made over
an in-memory network, the exposition read with prometheus_client's own
generator and parsed with its own parser."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Client, Server, connect
from txgeerpc.errors import RemoteError
from txgeerpc.examples import Args, register_examples
from txgeerpc.metrics import LATENCY_BUCKETS, UNKNOWN, registry_metrics
from txgeerpc.registry import MemoryStore
from txgeerpc.testing import MemoryNetwork

from ._helpers import CapturedLogs


def samples(server_or_registry: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition: (name, labels) -> value."""
    registry = getattr(server_or_registry, "metrics", server_or_registry)
    text = generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


class ServerMetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.network = MemoryNetwork()
        self.addCleanup(self.network.close)
        self.access: list[dict[str, Any]] = []
        self.server = Server(self.network.clock, access_log=self.access.append)
        register_examples(self.server)
        self.port = self.network.listen(self.server.port_factory())

    def client(self, scheme: str = "tcp") -> Client:
        d = connect(self.network.reactor, f"{scheme}@{self.port.address}", connect_timeout=5)
        self.network.flush()
        client = self.successResultOf(d)
        self.addCleanup(self.close, client)
        return client

    def close(self, client: Client) -> None:
        client.close()
        self.network.flush()

    def call(self, client: Client, method: str, argument: Any) -> Deferred[Any]:
        d = client.call(method, argument)
        self.network.flush()
        return d

    def test_counts_outcomes_and_latencies(self) -> None:
        client = self.client()
        over_http = self.client("http")
        for n in range(5):
            self.assertEqual(
                self.successResultOf(self.call(client, "Arith.Multiply", Args(n, 2))), 2 * n
            )
        with CapturedLogs():
            for _ in range(3):
                self.failureResultOf(self.call(over_http, "Arith.Divide", Args(1, 0)), RemoteError)
            for name in ("Nope.X", "Arith.Nope", "Arith.Other", "noDot"):
                self.failureResultOf(self.call(client, name, Args()), RemoteError)
        sleeping = self.call(client, "Foo.Sleep", Args(10, 0))

        found = samples(self.server)
        multiply = {"service": "Arith", "method": "Multiply"}
        divide = {"service": "Arith", "method": "Divide"}
        self.assertEqual(found[key("txgeerpc_server_started_total", **multiply)], 5)
        self.assertEqual(found[key("txgeerpc_server_handled_total", outcome="ok", **multiply)], 5)
        self.assertEqual(found[key("txgeerpc_server_handled_total", outcome="error", **divide)], 3)
        self.assertNotIn(key("txgeerpc_server_handled_total", outcome="ok", **divide), found)
        # Every unknown name is one label value.
        self.assertEqual(
            found[
                key(
                    "txgeerpc_server_handled_total",
                    service=UNKNOWN,
                    method=UNKNOWN,
                    outcome="unknown_method",
                )
            ],
            4,
        )
        self.assertEqual(
            {labels for name, labels in found if name == "txgeerpc_server_handled_total"}
            - {
                key("", outcome="ok", **multiply)[1],
                key("", outcome="error", **divide)[1],
                key("", service=UNKNOWN, method=UNKNOWN, outcome="unknown_method")[1],
            },
            set(),
        )
        # The histogram: 5 observations, all in the first bucket (the clock did not move).
        self.assertEqual(found[key("txgeerpc_server_handling_seconds_count", **multiply)], 5)
        self.assertEqual(found[key("txgeerpc_server_handling_seconds_sum", **multiply)], 0.0)
        self.assertEqual(
            found[key("txgeerpc_server_handling_seconds_bucket", le="2.5e-05", **multiply)], 5
        )
        self.assertEqual(
            found[key("txgeerpc_server_handling_seconds_bucket", le="+Inf", **multiply)], 5
        )
        buckets = [
            labels for name, labels in found if name == "txgeerpc_server_handling_seconds_bucket"
        ]
        self.assertEqual(len(buckets) % (len(LATENCY_BUCKETS) + 1), 0)
        sleep = {"service": "Foo", "method": "Sleep"}
        self.assertEqual(found[key("txgeerpc_server_in_flight", **sleep)], 1)
        self.assertEqual(found[key("txgeerpc_server_started_total", **sleep)], 1)
        self.assertEqual(found[key("txgeerpc_server_connections", transport="raw")], 1)
        self.assertEqual(found[key("txgeerpc_server_connections", transport="connect")], 1)
        self.assertEqual(found[key("txgeerpc_server_connections", transport="http")], 0)
        self.assertGreater(found[key("txgeerpc_server_received_bytes_total")], 0)
        self.assertGreater(found[key("txgeerpc_server_sent_bytes_total")], 0)

        # The slow call ends: its latency is in the histogram.
        self.network.advance(10)
        self.assertEqual(self.successResultOf(sleeping), 10)
        found = samples(self.server)
        self.assertEqual(found[key("txgeerpc_server_in_flight", **sleep)], 0)
        self.assertEqual(found[key("txgeerpc_server_handling_seconds_sum", **sleep)], 10.0)
        self.assertEqual(
            found[key("txgeerpc_server_handling_seconds_bucket", le="5.0", **sleep)], 0
        )
        self.assertEqual(
            found[key("txgeerpc_server_handling_seconds_bucket", le="10.0", **sleep)], 1
        )
        # The debug page reads the same numbers.
        stats = self.server.services["Arith"].methods["Divide"].stats
        self.assertEqual((stats.calls, stats.errors), (3, 3))

    def test_bytes_are_what_went_over_the_wire(self) -> None:
        client = self.client()
        before = self.server.counters.bytes_in, self.server.counters.bytes_out
        self.successResultOf(self.call(client, "Arith.Echo", "x" * 1000))
        received = self.server.counters.bytes_in - before[0]
        sent = self.server.counters.bytes_out - before[1]
        self.assertTrue(1000 < received < 1100, received)
        self.assertTrue(1000 < sent < 1100, sent)

    def test_handshake_failures_by_kind(self) -> None:
        from txgeerpc._wire import DEFAULT_RPC_PATH

        def raw(data: bytes) -> None:
            protocol = self.server.port_factory().buildProtocol(None)
            from twisted.internet.testing import StringTransport

            assert protocol is not None
            transport = StringTransport()
            protocol.makeConnection(transport)
            with CapturedLogs():
                protocol.dataReceived(data)
            protocol.connectionLost(None)  # type: ignore[arg-type]

        raw(b'{"MagicNumber": 1}\n')  # a wrong magic number
        raw(b'{"MagicNumber": 3927900, "CodecType": "application/x-nope"}\n')
        raw(b"\x00\x01 not a protocol")
        raw(b"\x16\x03\x01 TLS?")  # a ClientHello, on a port without TLS
        raw(b"CONNECT /elsewhere HTTP/1.0\r\n\r\n")
        raw(f"CONNECT {DEFAULT_RPC_PATH} HTTP/1.0\r\nbad\r\n\r\n".encode())
        found = samples(self.server)
        failures = "txgeerpc_server_handshake_failures_total"
        self.assertEqual(found[key(failures, kind="bad_option")], 1)
        self.assertEqual(found[key(failures, kind="unsupported_codec")], 1)
        self.assertEqual(found[key(failures, kind="unrecognised_protocol")], 1)
        self.assertEqual(found[key(failures, kind="tls_not_served")], 1)
        self.assertEqual(found[key(failures, kind="bad_connect")], 2)
        self.assertEqual(found[key(failures, kind="timeout")], 0)

    def test_access_log_one_event_per_call(self) -> None:
        client = self.client()
        self.successResultOf(self.call(client, "Arith.Multiply", Args(6, 7)))
        with CapturedLogs():
            self.failureResultOf(self.call(client, "Arith.Fail", "on purpose"), RemoteError)
        self.assertEqual(
            [
                (e["log_namespace"], e["log_level"], e["method"], e["seq"], e["outcome"])
                for e in self.access
            ],
            [
                ("txgeerpc.access", LogLevel.info, "Arith.Multiply", 1, "ok"),
                ("txgeerpc.access", LogLevel.info, "Arith.Fail", 2, "error"),
            ],
        )
        first = self.access[0]
        self.assertEqual(first["duration"], 0.0)
        self.assertTrue(first["peer"].startswith("127.0.0.1:"), first["peer"])
        self.assertGreater(first["reply_bytes"], 0)
        self.assertIn("Arith.Multiply seq=1 ok 0.0s", formatEvent(first))

    def test_access_log_request_bytes(self) -> None:
        # What the server read for each request, whatever the codec: gob's
        # first request carries its type definitions too.
        for codec in ("application/gob", "application/json"):
            self.access.clear()
            d = connect(self.network.reactor, f"tcp@{self.port.address}", codec=codec)
            self.network.flush()
            client = self.successResultOf(d)
            read = []
            for argument in (Args(6, 7), Args(6, 7), Args(123456789, 7)):
                before = self.server.counters.bytes_in
                self.successResultOf(self.call(client, "Arith.Multiply", argument))
                read.append(self.server.counters.bytes_in - before)
            self.close(client)
            sizes = [event["request_bytes"] for event in self.access]
            if codec == "application/gob":
                self.assertEqual(sizes, read)
                self.assertGreater(sizes[0], sizes[1] + 50)  # the type definitions
            else:
                # A JSON value's newline is taken with the next request's.
                self.assertEqual(sizes, [read[0] - 1, read[1], read[2]])
                self.assertEqual(sizes[2], sizes[1] + len("123456789") - len("6"))
            self.assertIn(f"request_bytes={sizes[0]} reply_bytes=", formatEvent(self.access[0]))


class SwitchTests(SynchronousTestCase):
    def test_off(self) -> None:
        network = MemoryNetwork()
        self.assertIsNone(Server(network.clock, metrics=False).metrics)

    def test_servers_do_not_collide(self) -> None:
        network = MemoryNetwork()
        one, two = Server(network.clock), Server(network.clock)
        register_examples(one)
        register_examples(two)
        self.assertIsNot(one.metrics, two.metrics)
        one.services["Arith"].methods["Multiply"].stats.calls = 7
        multiply = key("txgeerpc_server_started_total", service="Arith", method="Multiply")
        self.assertEqual((samples(one)[multiply], samples(two)[multiply]), (7, 0))


class RegistryMetricsTests(SynchronousTestCase):
    def test_joins_leaves_expiries(self) -> None:
        store = MemoryStore(10.0, max_entries=2)
        registry = registry_metrics(store)
        store.heartbeat("tcp@a:1", 0.0)
        store.heartbeat("tcp@a:1", 1.0)  # a refresh: not a join
        store.heartbeat("tcp@b:1", 1.0)
        self.failureResultOf(store.heartbeat("tcp@c:1", 2.0))  # full
        store.deregister("tcp@b:1")
        store.purge(20.0)
        found = samples(registry)
        self.assertEqual(
            {name: value for (name, _), value in found.items() if "created" not in name},
            {
                "txgeerpc_registry_entries": 0,
                "txgeerpc_registry_joins_total": 2,
                "txgeerpc_registry_leaves_total": 1,
                "txgeerpc_registry_expiries_total": 1,
                "txgeerpc_registry_refused_total": 1,
            },
        )


class TwistdOptionTests(SynchronousTestCase):
    """``--metrics-path`` and ``--access-log`` of both plugins."""

    def build(self, *argv: str) -> Any:
        from twisted.internet.testing import MemoryReactorClock

        from txgeerpc import tap

        options = tap.Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", *argv])
        return tap.build(options, reactor=MemoryReactorClock())

    def children(self, built: Any) -> set[bytes]:
        """The top-level paths of the site every listener serves."""
        return set(built.listeners[0]._factory.site.resource.children)

    def test_metrics_by_default(self) -> None:
        built = self.build()
        self.assertIsNotNone(built.server.metrics)
        self.assertIn(b"metrics", self.children(built))

    def test_elsewhere_and_none(self) -> None:
        elsewhere = self.build("--metrics-path", "/prom/m")
        self.assertIn(b"prom", self.children(elsewhere))
        self.assertNotIn(b"metrics", self.children(elsewhere))
        none = self.build("--metrics-path", "none")
        self.assertIsNone(none.server.metrics)
        self.assertNotIn(b"metrics", self.children(none))
        from twisted.python import usage

        from txgeerpc import tap

        self.assertRaises(
            usage.UsageError, tap.Options().parseOptions, ["--metrics-path", "metrics"]
        )

    def temporary_directory(self) -> str:
        # Not self.mktemp(): under pytest it leaves directories in the working one.
        import shutil
        import tempfile

        directory = tempfile.mkdtemp(prefix="txgeerpc-test-")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        return directory

    def test_access_log_file(self) -> None:
        import json

        path = self.temporary_directory() + "/access.jsonl"
        built = self.build("--access-log", path)
        observer = built.server.settings.access_log
        self.assertIsNotNone(observer)
        from twisted.logger import Logger

        Logger(namespace="txgeerpc.access", observer=observer).info(
            "x", method="Arith.Multiply", seq=1
        )
        built.service.stopService()  # closes the file
        with open(path) as lines:
            (line,) = lines.read().splitlines()
        self.assertEqual(json.loads(line)["method"], "Arith.Multiply")

    def test_access_log_that_cannot_be_opened(self) -> None:
        from txgeerpc._twistd import StartupError

        error = self.assertRaises(
            StartupError,
            self.build,
            "--access-log",
            self.temporary_directory() + "/missing/access.jsonl",
        )
        self.assertIn("No such file or directory", str(error))

    def test_registry_plugin(self) -> None:
        from twisted.internet.task import Clock

        from txgeerpc import registry_tap

        options = registry_tap.Options()
        options.parseOptions([])
        built = registry_tap.build(options, reactor=Clock())
        site = built.listeners[0]._factory
        self.assertIn(b"metrics", set(site.resource.children))
        options = registry_tap.Options()
        options.parseOptions(["--metrics-path", "none"])
        site = registry_tap.build(options, reactor=Clock()).listeners[0]._factory
        self.assertNotIn(b"metrics", set(site.resource.children))
