"""
Prometheus metrics of a :class:`~txgeerpc.Server`, read from the numbers the
debug page shows (one source for both).

Every :class:`~txgeerpc.Server` made with ``metrics=True`` (the default) has
its own :class:`prometheus_client.CollectorRegistry` (:attr:`Server.metrics
<txgeerpc.Server.metrics>`; not the process-wide one, so several servers in
one process do not collide) holding a :class:`ServerCollector`.  The collector
counts nothing itself: the dispatcher keeps plain counters and a latency
histogram per method (:class:`~txgeerpc.MethodStats`) whatever happens, and a
scrape turns them into metric families.  So the per-call cost is that of the
debug page's statistics, and a scrape costs what the method table's size does.

``twistd geerpc`` and ``twistd geerpc-registry`` serve it at ``/metrics``
(``--metrics-path``) with :mod:`prometheus_client`'s Twisted resource; any
``twisted.web`` site can mount ``prometheus_client.twisted.MetricsResource(
server.metrics)``.

Label values are bounded: ``service`` and ``method`` name registered methods
only (a request for any other name counts once, under
:data:`UNKNOWN`), ``outcome`` and ``kind`` are fixed lists
(docs/observability.md has the table).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ._service import LATENCY_BUCKETS, OUTCOMES

if TYPE_CHECKING:
    from .server import Server

__all__ = [
    "LATENCY_BUCKETS",
    "OUTCOMES",
    "TRANSPORTS",
    "UNKNOWN",
    "RegistryCollector",
    "ServerCollector",
    "registry_metrics",
    "server_metrics",
]

UNKNOWN = "(unknown)"
"""The ``service`` and ``method`` of requests for no registered method
(outcome ``unknown_method``): one label value, whatever names clients send."""

TRANSPORTS = ("raw", "connect", "http")
"""The ``transport`` label of ``txgeerpc_server_connections``."""

_LE = (*(floatToGoString(bound) for bound in LATENCY_BUCKETS), "+Inf")


class ServerCollector(Collector):
    """The metric families of one :class:`~txgeerpc.Server`, read from it
    at each scrape.  Safe to call from another thread (prometheus_client's
    Twisted resource scrapes in the reactor's thread pool): it copies each
    table it reads in one step before walking it."""

    def __init__(self, server: Server) -> None:
        self._server = server

    def collect(self) -> Iterable[Metric]:
        """Every family (``txgeerpc_server_*``)."""
        server = self._server
        labels = ["service", "method"]
        started = CounterMetricFamily(
            "txgeerpc_server_started",
            "Calls started (each request run, whatever its outcome).",
            labels=labels,
        )
        handled = CounterMetricFamily(
            "txgeerpc_server_handled",
            "Calls finished or refused, by outcome.",
            labels=[*labels, "outcome"],
        )
        seconds = HistogramMetricFamily(
            "txgeerpc_server_handling_seconds",
            "Time from a request's dispatch to its end (reply, error or cancel).",
            labels=labels,
        )
        in_flight = GaugeMetricFamily(
            "txgeerpc_server_in_flight", "Calls running now.", labels=labels
        )
        for service_name, service in sorted(list(server.services.items())):
            for method_name, method in sorted(list(service.methods.items())):
                stats = method.stats
                key = [service_name, method_name]
                started.add_metric(key, stats.calls)
                in_flight.add_metric(key, stats.in_flight)
                outcomes = dict(stats.outcomes)
                for outcome in OUTCOMES:
                    if outcome in outcomes:
                        handled.add_metric([*key, outcome], outcomes[outcome])
                seconds.add_metric(
                    key, list(_cumulative(list(stats.buckets))), sum_value=stats.total_seconds
                )
        counters = server.counters
        handled.add_metric([UNKNOWN, UNKNOWN, "unknown_method"], counters.unknown_methods)
        yield from (started, handled, seconds, in_flight)

        connections = GaugeMetricFamily(
            "txgeerpc_server_connections", "Connections open, by transport.", labels=["transport"]
        )
        by_transport = server.connections_by_transport()
        for transport in TRANSPORTS:
            connections.add_metric([transport], by_transport.get(transport, 0))
        yield connections
        yield CounterMetricFamily(
            "txgeerpc_server_received_bytes",
            "Bytes read on RPC streams.",
            value=counters.bytes_in,
        )
        yield CounterMetricFamily(
            "txgeerpc_server_sent_bytes",
            "Bytes of replies written on RPC streams.",
            value=counters.bytes_out,
        )
        yield _by_kind(
            "txgeerpc_server_handshake_failures",
            "Connections closed before they were served, by kind.",
            {"timeout": server.limit_counts["handshake_timeout"], **counters.handshake_failures},
        )
        yield _by_kind(
            "txgeerpc_server_protocol_errors",
            "Streams closed for a protocol error after the Option, by kind.",
            counters.protocol_errors,
        )
        yield _by_kind(
            "txgeerpc_server_limit_events",
            "Connections refused or closed by a limit, by kind (the debug page's limits).",
            server.limit_counts,
        )


class RegistryCollector(Collector):
    """The metric families of a registry store (``txgeerpc_registry_*``):
    what :attr:`~txgeerpc.registry.MemoryStore.counts` holds, read at each
    scrape.

    :param store: any object with a ``counts`` mapping (``entries``,
        ``joins``, ``leaves``, ``expiries``, ``refused``).
    """

    def __init__(self, store: Any) -> None:
        self._store = store

    def collect(self) -> Iterable[Metric]:
        """``txgeerpc_registry_entries`` and the event counters."""
        counts = dict(getattr(self._store, "counts", {}))
        yield GaugeMetricFamily(
            "txgeerpc_registry_entries", "Servers listed now.", value=counts.get("entries", 0)
        )
        for name, text in (
            ("joins", "Heartbeats that added a server."),
            ("leaves", "Servers removed by a DELETE."),
            ("expiries", "Servers dropped after their timeout without a heartbeat."),
            ("refused", "Heartbeats refused (the registry was full)."),
        ):
            yield CounterMetricFamily(f"txgeerpc_registry_{name}", text, value=counts.get(name, 0))


def server_metrics(server: Server) -> CollectorRegistry:
    """A new registry holding a :class:`ServerCollector` of ``server``."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ServerCollector(server))
    return registry


def registry_metrics(store: Any) -> CollectorRegistry:
    """A new registry holding a :class:`RegistryCollector` of ``store``."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RegistryCollector(store))
    return registry


def _cumulative(buckets: list[int]) -> Iterator[tuple[str, int]]:
    total = 0
    for le, count in zip(_LE, buckets, strict=True):
        total += count
        yield le, total


def _by_kind(name: str, documentation: str, counts: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=["kind"])
    for kind, count in sorted(dict(counts).items()):
        family.add_metric([kind], count)
    return family
