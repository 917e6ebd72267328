"""
OpenTelemetry tracing of calls (the ``otel`` extra: ``pip install txgeerpc[otel]``).

Two interceptors (:mod:`txgeerpc.context`): :func:`server_interceptor` makes
a server span for every call a :class:`~txgeerpc.Server` runs, and
:func:`client_interceptor` a client span for every call a client makes.  The
W3C trace context (``traceparent``, ``tracestate``) travels in the call's
metadata, written and read by OpenTelemetry's own propagator (the global
one: W3C trace context and baggage unless the process chose another), so a
call from A to B and B's calls to C make one trace::

    from txgeerpc import Server, connect
    from txgeerpc.otel import client_interceptor, server_interceptor

    server = Server(reactor, interceptors=[server_interceptor()])
    client = await connect(reactor, "tcp@127.0.0.1:7001",
                           interceptors=[client_interceptor()])

A handler's calls join its trace when it passes its context on
(``client.call(..., context=context)``): the client span's parent is then
the handler's server span, kept on the handler's
:class:`~txgeerpc.context.CallContext` (under :data:`SPAN_KEY`).  This needs
no context variable, so it holds in a coroutine, a Deferred callback or a
thread alike; without ``context=``, the parent is OpenTelemetry's current
span (the server span is current while a handler runs, and through the
whole of a coroutine handler: Twisted runs each coroutine in a copy of the
context it started in).

Spans follow OpenTelemetry's RPC semantic conventions: named
``Service/Method``, kind ``CLIENT`` or ``SERVER``, with ``rpc.system`` =
``geerpc``, ``rpc.service``, ``rpc.method``, ``server.address`` and
``server.port`` (client spans), ``client.address`` and ``client.port``
(server spans), ``rpc.geerpc.status`` (one of :data:`OUTCOMES`) and, on a
failure, ``error.type`` and the span status ``ERROR`` with the error's text.

Spans go to the tracer provider given, else to OpenTelemetry's global one
(set by the program, by ``opentelemetry-instrument``, or by a ``--service``
module of ``twistd geerpc --otel``); with none set they cost next to
nothing.  Nothing in txgeerpc imports this module unless asked to.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from ._version import __version__
from .context import CallContext, Interceptor
from .errors import (
    CallTimeout,
    ConnectionShutdown,
    DeadlineExceeded,
    RemoteError,
    UnexpectedDisconnect,
)

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as error:  # pragma: no cover - the extra is installed in CI
    raise ImportError("txgeerpc.otel needs OpenTelemetry: pip install txgeerpc[otel]") from error

__all__ = [
    "OUTCOMES",
    "RPC_SYSTEM",
    "SPAN_KEY",
    "TRACE_KEYS",
    "client_interceptor",
    "outcome_of",
    "server_interceptor",
]

RPC_SYSTEM = "geerpc"
"""The ``rpc.system`` attribute of every span."""

SPAN_KEY = "txgeerpc.otel.span"
"""Where a call's span is kept in its :attr:`CallContext.values
<txgeerpc.context.CallContext.values>`."""

TRACE_KEYS = ("traceparent", "tracestate")
"""The W3C trace context's metadata keys (a client span replaces any it is given)."""

OUTCOMES = ("ok", "error", "deadline_exceeded", "cancelled", "connection_lost")
"""The values of ``rpc.geerpc.status``."""

_INSTRUMENTATION = "txgeerpc"


def outcome_of(result: Any) -> str:
    """One of :data:`OUTCOMES` for a call's outcome (a value, or a Failure)."""
    if not isinstance(result, Failure):
        return "ok"
    if result.check(DeadlineExceeded, CallTimeout):
        return "deadline_exceeded"
    if result.check(CancelledError):
        return "cancelled"
    if result.check(ConnectionShutdown, UnexpectedDisconnect):
        return "connection_lost"
    return "error"


def _names(service_method: str) -> tuple[str, str]:
    service, _, method = service_method.rpartition(".")
    return service, method


def _address(peer: str, prefix: str) -> dict[str, Any]:
    host, colon, port = peer.rpartition(":")
    if not colon or not port.isdigit():
        return {f"{prefix}.address": peer} if peer else {}
    return {f"{prefix}.address": host.strip("[]"), f"{prefix}.port": int(port)}


def _end(result: Any, span: Any) -> Any:
    """End ``span`` with the call's outcome; pass the outcome on."""
    outcome = outcome_of(result)
    span.set_attribute("rpc.geerpc.status", outcome)
    if isinstance(result, Failure):
        error = result.value
        span.set_attribute("error.type", type(error).__name__)
        text = error.message if isinstance(error, RemoteError) else str(error)
        span.set_status(Status(StatusCode.ERROR, text or type(error).__name__))
    span.end()
    return result


def server_interceptor(tracer_provider: Any = None) -> Interceptor:
    """An interceptor for :class:`~txgeerpc.Server`: a ``SERVER`` span per
    call, a child of the trace context the call's metadata carries (a root
    span when it carries none, or one the propagator cannot read).

    :param tracer_provider: where spans go; OpenTelemetry's global provider
        by default (looked up when each span starts, so it may be set later).
    """
    tracer = trace.get_tracer(_INSTRUMENTATION, __version__, tracer_provider)

    def trace_server(context: CallContext, argument: Any, proceed: Any) -> Deferred[Any]:
        service, method = _names(context.service_method)
        attributes: dict[str, Any] = {
            "rpc.system": RPC_SYSTEM,
            "rpc.service": service,
            "rpc.method": method,
            **_address(context.peer, "client"),
        }
        span = tracer.start_span(
            context.service_method.replace(".", "/", 1) if service else context.service_method,
            context=propagate.extract(context.metadata),
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
        context.values[SPAN_KEY] = span
        with trace.use_span(
            span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        ):
            d: Deferred[Any] = proceed(argument)
        return d.addBoth(_end, span)

    return trace_server


def client_interceptor(tracer_provider: Any = None) -> Interceptor:
    """An interceptor for :func:`~txgeerpc.connect` (or an
    :class:`~txgeerpc.xclient.XClient`): a ``CLIENT`` span per call, whose
    context goes out in the call's metadata.  Its parent is the span of the
    handler whose context the call was given (``context=``), else
    OpenTelemetry's current span.

    :param tracer_provider: where spans go; OpenTelemetry's global provider
        by default.
    """
    tracer = trace.get_tracer(_INSTRUMENTATION, __version__, tracer_provider)

    def trace_client(context: CallContext, argument: Any, proceed: Any) -> Deferred[Any]:
        service, method = _names(context.service_method)
        parent = None
        caller = context.parent
        if caller is not None:
            caller_span = caller.values.get(SPAN_KEY)
            if caller_span is not None:
                parent = trace.set_span_in_context(caller_span)
        attributes: dict[str, Any] = {
            "rpc.system": RPC_SYSTEM,
            "rpc.service": service,
            "rpc.method": method,
            **_address(context.peer, "server"),
        }
        span = tracer.start_span(
            context.service_method.replace(".", "/", 1) if service else context.service_method,
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        context.values[SPAN_KEY] = span
        metadata = context.metadata
        for key in TRACE_KEYS:  # forwarded from upstream: this span is the parent now
            metadata.pop(key, None)
        propagate.inject(metadata, context=trace.set_span_in_context(span))
        try:
            d: Deferred[Any] = proceed(argument)
        except BaseException:
            _end(Failure(), span)
            raise
        return d.addBoth(_end, span)

    return trace_client
