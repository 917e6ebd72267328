"""
A ``--service`` for ``twistd geerpc --otel`` in the three-process trace test:
the example ``Ctx`` (its next hops traced), in a process whose OpenTelemetry
tracer provider keeps finished spans in memory, and ``Ctx.Spans`` to read
them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from txgeerpc import examples
from txgeerpc.otel import client_interceptor

EXPORTER = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(_provider)


@dataclass
class SpanRecord:
    Name: str = ""
    Kind: str = ""
    TraceId: str = ""
    SpanId: str = ""
    ParentId: str = ""
    Status: str = ""
    Attributes: dict[str, str] = field(default_factory=dict)


class Ctx(examples.Ctx):
    """``Ctx.Info`` whose next hops are traced, and ``Ctx.Spans``."""

    def __init__(self, clock: Any) -> None:
        super().__init__(clock, examples.Foo(clock), [client_interceptor()])

    def Spans(self) -> list[SpanRecord]:
        """The spans finished in this process so far."""
        records = []
        for span in EXPORTER.get_finished_spans():
            assert span.context is not None
            records.append(
                SpanRecord(
                    Name=span.name,
                    Kind=span.kind.name,
                    TraceId=f"{span.context.trace_id:032x}",
                    SpanId=f"{span.context.span_id:016x}",
                    ParentId=f"{span.parent.span_id:016x}" if span.parent else "",
                    Status=span.status.status_code.name,
                    Attributes={key: str(value) for key, value in (span.attributes or {}).items()},
                )
            )
        return records
