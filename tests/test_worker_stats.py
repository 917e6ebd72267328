"""
``twistd geerpc --workers N`` across the workers, in memory: the union of
their metrics (exact sums, which workers answered), the debug page's sums,
the private request/answer protocol over StringTransport and a memory
reactor, and the parent's readiness (it serves once every worker does).
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from txgeerpc import _worker_stats as stats
from txgeerpc import _workers as workers
from txgeerpc.errors import UnexpectedDisconnect


class _Calls:
    def __init__(self, calls: int) -> None:
        self.calls = calls

    def collect(self) -> Any:
        family = CounterMetricFamily("txgeerpc_server_started", "Calls.", labels=["method"])
        family.add_metric(["Who"], self.calls)
        yield family


def _exposition(worker: int, calls: int) -> bytes:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Calls(calls))
    return generate_latest(workers.WorkerLabelled(registry, worker))


def _samples(text: bytes) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[sample.labels["worker"]] = sample.value
    return found


def _page(worker: int, calls: int, connections: int = 1) -> bytes:
    return json.dumps(
        {
            "uptime_seconds": 3.0,
            "connections": connections,
            "calls": calls,
            "services": [
                {
                    "name": "Cluster",
                    "methods": [
                        {
                            "name": "Who",
                            "signature": "Who(int) -> int",
                            "calls": calls,
                            "errors": 1,
                            "in_flight": 0,
                            "cancelled": 0,
                            "expired": 0,
                            "total_seconds": 0.5,
                        }
                    ],
                }
            ],
            "limits": {"refused_per_peer": worker},
            "worker": {"id": worker, "pid": 100 + worker, "count": 3},
        }
    ).encode()


class MergeMetricsTests(SynchronousTestCase):
    def test_every_worker_s_samples_with_their_label_sum_exactly(self) -> None:
        merged = stats.merge_metrics({0: _exposition(0, 7), 1: _exposition(1, 5)})
        samples = _samples(merged)
        self.assertEqual(samples["txgeerpc_server_started_total"], {"0": 7.0, "1": 5.0})
        self.assertEqual(samples[stats.ANSWERED], {"0": 1.0, "1": 1.0})
        # One family: its HELP and TYPE once.
        self.assertEqual(merged.count(b"# TYPE txgeerpc_server_started_total counter"), 1)

    def test_a_worker_that_did_not_answer_is_said_so(self) -> None:
        samples = _samples(
            stats.merge_metrics({0: _exposition(0, 7), 1: None, 2: b"not {prometheus"})
        )
        self.assertEqual(samples["txgeerpc_server_started_total"], {"0": 7.0})
        self.assertEqual(samples[stats.ANSWERED], {"0": 1.0, "1": 0.0, "2": 0.0})

    def test_one_worker_round_trips(self) -> None:
        own = _exposition(3, 2)
        merged = stats.merge_metrics({3: own})
        self.assertTrue(merged.startswith(own), merged)


class SumDebugTests(SynchronousTestCase):
    def test_sums_over_the_workers_that_answered(self) -> None:
        summed = stats.sum_debug({0: _page(0, 4), 1: None, 2: _page(2, 6, connections=2)})
        total = summed["sum"]
        self.assertEqual(total["workers_answered"], 2)
        self.assertEqual((total["calls"], total["connections"]), (10, 3))
        self.assertEqual(total["limits"], {"refused_per_peer": 2})
        (method,) = total["services"][0]["methods"]
        self.assertEqual((method["name"], method["calls"], method["errors"]), ("Who", 10, 2))
        self.assertEqual(method["total_seconds"], 1.0)
        self.assertEqual(
            [(w["worker"]["id"], w["answered"]) for w in summed["workers"]],
            [(0, True), (1, False), (2, True)],
        )

    def test_the_html_shows_each_worker_and_the_sum(self) -> None:
        page = stats.render_workers_html(stats.sum_debug({0: _page(0, 4), 1: None}), 0)
        self.assertIn(b'<tr class="sum">', page)
        self.assertIn(b"did not answer", page)
        self.assertIn(b"Cluster.Who", page)
        self.assertIn(b"Workers (1 of 2 answered)", page)

    def test_names_are_escaped(self) -> None:
        data = json.loads(_page(0, 1))
        data["services"][0]["name"] = "<script>"
        page = stats.render_workers_html(stats.sum_debug({0: json.dumps(data).encode()}), 0)
        self.assertNotIn(b"<script>", page)
        self.assertIn(b"&lt;script&gt;", page)


class ProtocolTests(SynchronousTestCase):
    def _answer(self, *chunks: bytes) -> StringTransport:
        protocol = stats._Answer({b"metrics": lambda: b"numbers", b"debug": lambda: b"{}"})
        transport = StringTransport()
        protocol.makeConnection(transport)
        for chunk in chunks:
            protocol.dataReceived(chunk)
        return transport

    def test_a_request_line_is_answered_and_closed(self) -> None:
        transport = self._answer(b"metr", b"ics\n")
        self.assertEqual(transport.value(), b"numbers")
        self.assertTrue(transport.disconnecting)

    def test_an_unknown_or_endless_request_is_closed_unanswered(self) -> None:
        for request in (b"secrets\n", b"x" * (stats.MAX_REQUEST + 1)):
            transport = self._answer(request)
            self.assertEqual(transport.value(), b"")
            self.assertTrue(transport.disconnecting)

    def test_the_asking_side_takes_everything_until_the_close(self) -> None:
        asking = stats._Ask(b"debug")
        transport = StringTransport()
        asking.makeConnection(transport)
        self.assertEqual(transport.value(), b"debug\n")
        asking.dataReceived(b"{")
        asking.dataReceived(b"}")
        asking.connectionLost(Failure(UnexpectedDisconnect("closed")))
        self.assertEqual(self.successResultOf(asking.answer), b"{}")

    def test_an_answer_too_large_is_none(self) -> None:
        self.patch(stats, "MAX_ANSWER", 4)
        asking = stats._Ask(b"metrics")
        transport = StringTransport()
        asking.makeConnection(transport)
        asking.dataReceived(b"12345")
        asking.connectionLost(None)
        self.assertIsNone(self.successResultOf(asking.answer))


class AskTests(SynchronousTestCase):
    def test_a_worker_that_does_not_answer_in_time_is_none(self) -> None:
        reactor = MemoryReactorClock()
        answer = stats.ask(reactor, "/run/w/worker-1.sock", b"metrics", 2.0)
        ((address, factory, timeout, _),) = reactor.unixClients
        self.assertEqual((address, timeout), ("/run/w/worker-1.sock", 2.0))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertNoResult(answer)
        reactor.advance(2.0)
        self.assertIsNone(self.successResultOf(answer))

    def test_an_answer(self) -> None:
        reactor = MemoryReactorClock()
        answer = stats.ask(reactor, "/run/w/worker-1.sock", b"metrics", 2.0)
        factory = reactor.unixClients[0][1]
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"numbers")
        protocol.connectionLost(Failure(UnexpectedDisconnect("closed")))
        self.assertEqual(self.successResultOf(answer), b"numbers")
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_gather_asks_the_others_and_makes_its_own(self) -> None:
        reactor = MemoryReactorClock()
        gathered = stats.gather(reactor, "/run/w", 2, 1, b"debug", lambda: b"mine", 2.0)
        ((address, factory, _, _),) = reactor.unixClients
        self.assertEqual(address, "/run/w/worker-0.sock")
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(self.successResultOf(gathered), {0: None, 1: b"mine"})


class MetricsResourceTests(SynchronousTestCase):
    def _render(self, args: dict[bytes, list[bytes]]) -> DummyRequest:
        resource = stats.WorkersMetrics(
            MemoryReactorClock(),
            "/run/w",
            {"id": 0, "pid": 1, "count": 1},
            lambda: _exposition(0, 3),
        )
        request = DummyRequest([b""])
        request.args = args
        body = resource.render_GET(request)
        if isinstance(body, bytes):
            request.write(body)
            request.finish()
        return request

    def test_the_union_says_which_worker_answered(self) -> None:
        request = self._render({})
        self.assertEqual(request.responseHeaders.getRawHeaders(b"x-geerpc-worker"), [b"0"])
        samples = _samples(b"".join(request.written))
        self.assertEqual(samples[stats.ANSWERED], {"0": 1.0})
        self.assertEqual(samples["txgeerpc_server_started_total"], {"0": 3.0})

    def test_workers_self_is_its_own(self) -> None:
        request = self._render({b"workers": [b"self"]})
        self.assertEqual(b"".join(request.written), _exposition(0, 3))
        self.assertEqual(self._render({b"workers": [b"some"]}).responseCode, 400)


class ReadinessTests(SynchronousTestCase):
    def test_the_gate_opens_once_for_waiters_before_and_after(self) -> None:
        gate = workers.Gate()
        before = gate.wait()
        self.assertNoResult(before)
        gate.open()
        self.successResultOf(before)
        self.successResultOf(gate.wait())

    def test_the_parent_serves_once_every_worker_said_so(self) -> None:
        gate = workers.Gate()
        supervisor = workers.Supervisor(MemoryReactorClock(), [], [], 2, 1.0, serving=gate)
        first, second = (workers._Worker(supervisor, worker, 0.0) for worker in (0, 1))
        supervisor.workers = {0: first, 1: second}
        opened = gate.wait()
        first.childDataReceived(1, workers.READY + b"\nlog line\n")
        self.assertNoResult(opened)
        # A worker saying it twice (or a restarted one) is still one worker.
        first.childDataReceived(1, workers.READY + b"\n")
        self.assertNoResult(opened)
        second.childDataReceived(1, workers.READY + b"\n")
        self.successResultOf(opened)

    def test_no_log_line_of_a_worker_is_the_ready_line(self) -> None:
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        workers._log_lines({"log_format": "{x}", "x": "a\n" + workers.READY.decode()})
        self.assertNotIn(workers.READY.decode(), out.getvalue())
        self.assertIn("\\x00txgeerpc-worker-ready", out.getvalue())
