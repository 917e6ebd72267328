"""
txgeerpc.otel: client and server spans, W3C trace context in the call
metadata, one trace across a chain of servers (in memory; the three real
processes are in tests/integration/test_otel_processes.py).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Server, connect
from txgeerpc.context import CallContext
from txgeerpc.errors import RemoteError
from txgeerpc.examples import Args, Chain, ContextInfo, register_examples
from txgeerpc.otel import SPAN_KEY, client_interceptor, outcome_of, server_interceptor
from txgeerpc.testing import MemoryNetwork

from ._processes import environment


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


class _Parked:
    """A handler whose calls wait until the test releases them: the span
    must be found through the context, not through a context variable
    (there is none by the time the Deferred's callbacks run)."""

    def __init__(self, reactor: Any, interceptors: list[Any]) -> None:
        self._reactor = reactor
        self._interceptors = interceptors
        self.waiting: list[Deferred[None]] = []
        self.next_hop = ""

    def Forward(self, number: int, *, context: CallContext) -> Deferred[int]:
        waiting: Deferred[None] = Deferred()
        self.waiting.append(waiting)

        def call(_: None) -> Deferred[int]:
            d = connect(self._reactor, self.next_hop, interceptors=self._interceptors)
            return d.addCallback(
                lambda client: client.call("Arith.Multiply", Args(number, 2), context=context)
            )

        return waiting.addCallback(call)


class TracingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.network = MemoryNetwork()
        self.addCleanup(self.network.close)
        self.provider, self.exporter = _provider()
        self.addCleanup(self.provider.shutdown)

    def _server(self) -> tuple[Server, str]:
        server = Server(self.network.reactor, interceptors=[server_interceptor(self.provider)])
        register_examples(server, [client_interceptor(self.provider)])
        port = self.network.listen(server.port_factory())
        return server, f"tcp@{port.address}"

    def _client(self, address: str) -> Any:
        d = connect(self.network.reactor, address, interceptors=[client_interceptor(self.provider)])
        self.network.flush()
        client = self.successResultOf(d)
        self.addCleanup(client.close)
        return client

    def _spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def test_a_call_makes_a_client_span_and_its_server_span_a_child(self) -> None:
        _, address = self._server()
        client = self._client(address)
        d = client.call("Arith.Multiply", Args(6, 7))
        self.network.flush()
        self.assertEqual(self.successResultOf(d), 42)
        by_kind = {span.kind: span for span in self._spans()}
        self.assertEqual(set(by_kind), {SpanKind.CLIENT, SpanKind.SERVER})
        caller, callee = by_kind[SpanKind.CLIENT], by_kind[SpanKind.SERVER]
        assert caller.context is not None and callee.context is not None
        self.assertEqual(callee.context.trace_id, caller.context.trace_id)
        assert callee.parent is not None
        self.assertEqual(callee.parent.span_id, caller.context.span_id)
        self.assertTrue(callee.parent.is_remote)
        self.assertEqual(caller.name, "Arith/Multiply")
        self.assertEqual(callee.name, "Arith/Multiply")
        host, port = address.removeprefix("tcp@").split(":")
        self.assertEqual(
            dict(caller.attributes or {}),
            {
                "rpc.system": "geerpc",
                "rpc.service": "Arith",
                "rpc.method": "Multiply",
                "server.address": host,
                "server.port": int(port),
                "rpc.geerpc.status": "ok",
            },
        )
        attributes = dict(callee.attributes or {})
        self.assertEqual(attributes["rpc.system"], "geerpc")
        self.assertEqual(attributes["rpc.method"], "Multiply")
        self.assertEqual(attributes["client.address"], "127.0.0.1")
        self.assertEqual(attributes["rpc.geerpc.status"], "ok")
        self.assertEqual(callee.status.status_code, StatusCode.UNSET)

    def test_a_failed_call_is_an_error_on_both_sides(self) -> None:
        _, address = self._server()
        client = self._client(address)
        d = client.call("Arith.Divide", Args(1, 0))
        self.network.flush()
        self.failureResultOf(d, RemoteError)
        spans = self._spans()
        self.assertEqual(len(spans), 2)
        for span in spans:
            self.assertEqual(span.status.status_code, StatusCode.ERROR)
            self.assertEqual(span.status.description, "divide by zero")
            self.assertEqual((span.attributes or {})["rpc.geerpc.status"], "error")
        types = {span.kind: (span.attributes or {})["error.type"] for span in spans}
        self.assertEqual(
            types, {SpanKind.CLIENT: "RemoteError", SpanKind.SERVER: "ZeroDivisionError"}
        )

    def test_a_chain_of_three_servers_is_one_trace(self) -> None:
        servers = [self._server()[1] for _ in range(3)]
        client = self._client(servers[0])
        d = client.call("Ctx.Info", Chain(Hops=servers[1:]), result_type=ContextInfo)
        self.network.flush()
        info = self.successResultOf(d)
        self.assertEqual((info.Error, info.Next.Error, info.Next.Next.Error), ("", "", ""))
        # The handler saw the trace context (the next hop's, not the caller's).
        self.assertIn("traceparent", info.Metadata)
        self.assertNotEqual(info.Metadata["traceparent"], info.Next.Metadata["traceparent"])
        spans = self._spans()
        self.assertEqual(len(spans), 6)  # the test's client span, then 2 per hop but the last
        self.assertEqual(len({span.context.trace_id for span in spans if span.context}), 1)
        by_id = {span.context.span_id: span for span in spans if span.context}
        roots = [span for span in spans if span.parent is None]
        self.assertEqual([span.kind for span in roots], [SpanKind.CLIENT])
        # Walk down: client -> server A -> client A -> server B -> client B -> server C.
        chain = [roots[0]]
        while len(chain) < 6:
            (child,) = [
                span
                for span in spans
                if span.parent is not None
                and chain[-1].context is not None
                and span.parent.span_id == chain[-1].context.span_id
            ]
            chain.append(child)
        self.assertEqual(
            [span.kind for span in chain],
            [SpanKind.CLIENT, SpanKind.SERVER] * 3,
        )
        self.assertEqual(len(by_id), 6)

    def test_the_parent_is_found_through_the_context_after_the_handler_returned(
        self,
    ) -> None:
        _, downstream = self._server()
        server = Server(self.network.reactor, interceptors=[server_interceptor(self.provider)])
        parked = _Parked(self.network.reactor, [client_interceptor(self.provider)])
        parked.next_hop = downstream
        server.register(parked, "Parked")
        address = f"tcp@{self.network.listen(server.port_factory()).address}"
        client = self._client(address)
        d = client.call("Parked.Forward", 5)
        self.network.flush()
        self.assertEqual(trace.get_current_span(), trace.INVALID_SPAN)  # nothing current now
        parked.waiting[0].callback(None)
        self.network.flush()
        self.assertEqual(self.successResultOf(d), 10)
        spans = {span.name: span for span in self._spans() if span.kind is SpanKind.SERVER}
        forward, multiply = spans["Parked/Forward"], spans["Arith/Multiply"]
        downstream_client = [
            span
            for span in self._spans()
            if span.kind is SpanKind.CLIENT and span.name == "Arith/Multiply"
        ]
        (hop,) = downstream_client
        assert hop.parent is not None and forward.context is not None
        self.assertEqual(hop.parent.span_id, forward.context.span_id)
        assert multiply.parent is not None and hop.context is not None
        self.assertEqual(multiply.parent.span_id, hop.context.span_id)

    def test_the_span_is_kept_on_the_context(self) -> None:
        seen: list[Any] = []

        def look(context: CallContext, argument: Any, proceed: Any) -> Any:
            seen.append(context.values.get(SPAN_KEY))
            return proceed(argument)

        server = Server(
            self.network.reactor, interceptors=[server_interceptor(self.provider), look]
        )
        register_examples(server)
        address = f"tcp@{self.network.listen(server.port_factory()).address}"
        client = self._client(address)
        d = client.call("Arith.Multiply", Args(2, 3))
        self.network.flush()
        self.assertEqual(self.successResultOf(d), 6)
        (span,) = seen
        (server_span,) = [s for s in self._spans() if s.kind is SpanKind.SERVER]
        self.assertEqual(span.get_span_context(), server_span.context)

    def test_outcomes(self) -> None:
        from twisted.internet.defer import CancelledError
        from twisted.python.failure import Failure

        from txgeerpc.errors import CallTimeout, ConnectionShutdown, DeadlineExceeded

        self.assertEqual(outcome_of(3), "ok")
        self.assertEqual(outcome_of(Failure(RemoteError("x"))), "error")
        self.assertEqual(outcome_of(Failure(DeadlineExceeded("x"))), "deadline_exceeded")
        self.assertEqual(outcome_of(Failure(CallTimeout("A.B", 1.0))), "deadline_exceeded")
        self.assertEqual(outcome_of(Failure(CancelledError())), "cancelled")
        self.assertEqual(outcome_of(Failure(ConnectionShutdown())), "connection_lost")


class NothingImportedTests(SynchronousTestCase):
    def test_a_server_without_otel_imports_no_opentelemetry(self) -> None:
        """Importing txgeerpc, building ``twistd geerpc``'s service and
        answering a call leaves OpenTelemetry unimported."""
        program = "\n".join(
            [
                "import sys",
                "from twisted.internet.task import Clock",
                "import txgeerpc",
                "from txgeerpc import connect, tap",
                "from txgeerpc.testing import MemoryNetwork",
                "from txgeerpc.examples import Args",
                "options = tap.Options()",
                "options.parseOptions([])",
                "network = MemoryNetwork()",
                "server = tap.build_server(options, network.reactor)",
                "port = network.listen(server.port_factory())",
                "d = connect(network.reactor, f'tcp@{port.address}')",
                "network.flush()",
                "results = []",
                "d.addCallback(lambda c: c.call('Arith.Multiply', Args(6, 7)))",
                "d.addCallback(results.append)",
                "network.flush()",
                "assert results == [42], results",
                "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))",
            ]
        )
        result = subprocess.run(
            [sys.executable, "-c", program],
            env=environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "[]\n")
