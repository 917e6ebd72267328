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

The other collectors read the same way: :class:`XClientCollector` an
:class:`~txgeerpc.xclient.XClient`'s counters (``txgeerpc_client_*``; its
``server`` label names the servers its discovery lists now, no others),
:class:`RegistrationCollector` a server's heartbeat or etcd registration,
:class:`EtcdCollector` an etcd client's request latencies and fail-overs,
:class:`RegistryCollector` a registry store.
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
    "EtcdCollector",
    "RegistrationCollector",
    "RegistryCollector",
    "ServerCollector",
    "XClientCollector",
    "registry_metrics",
    "server_metrics",
    "xclient_metrics",
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


class XClientCollector(Collector):
    """The metric families of one :class:`~txgeerpc.xclient.XClient`
    (``txgeerpc_client_*``), read from its counters at each scrape.

    Per-server families are labelled ``server`` with the addresses the
    XClient's discovery lists at the scrape, and only those: a server that
    left the list leaves the exposition (its counts stay in the totals).

    :param xclient: the XClient (read through its public counters:
        ``calls``, ``broadcasts``, ``retries``, ``hedges_sent``,
        ``hedges_won``, ``hedges_cancelled``, ``calls_sent``, ``failures``,
        ``dial_failures``, ``cooldowns``, ``servers``, ``cooling``,
        :meth:`~txgeerpc.xclient.XClient.in_flight` and ``retry_budget``).
    """

    def __init__(self, xclient: Any) -> None:
        self._xclient = xclient

    def describe(self) -> Iterable[Metric]:
        """What :meth:`collect` yields (so that a registry refuses a second
        XClient's families)."""
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        """Every ``txgeerpc_client_*`` family."""
        xclient = self._xclient
        for name, text, value in (
            ("calls", "Calls made (each counted once, whatever its attempts).", xclient.calls),
            ("broadcasts", "Broadcasts made (each counted once).", xclient.broadcasts),
            ("retries", "Attempts sent again after one failed.", xclient.retries),
            ("hedges", "Extra copies of calls sent (hedges).", xclient.hedges_sent),
            ("hedges_won", "Hedged calls a later copy answered first.", xclient.hedges_won),
            (
                "hedges_cancelled",
                "Copies cancelled because another answered first.",
                xclient.hedges_cancelled,
            ),
            ("attempts", "Attempts sent to any server.", sum(dict(xclient.calls_sent).values())),
        ):
            yield CounterMetricFamily(f"txgeerpc_client_{name}", text, value=value)
        servers = sorted(set(xclient.servers))
        yield GaugeMetricFamily("txgeerpc_client_servers", "Servers listed now.", len(servers))
        yield GaugeMetricFamily(
            "txgeerpc_client_retry_tokens",
            "Tokens left in the retry budget (retries and hedges stop at half).",
            xclient.retry_budget.tokens,
        )
        per_server = (
            ("attempts", "Attempts sent to each server listed now.", dict(xclient.calls_sent)),
            (
                "failures",
                "Attempts that failed without a reply (timeout, connection lost, going away).",
                dict(xclient.failures),
            ),
            ("dial_failures", "Connections that could not be made.", dict(xclient.dial_failures)),
            (
                "cooldowns",
                "Cooldowns begun (after a failed dial or a go-away).",
                dict(xclient.cooldowns),
            ),
        )
        for name, text, counts in per_server:
            family = CounterMetricFamily(f"txgeerpc_client_server_{name}", text, labels=["server"])
            for server in servers:
                family.add_metric([server], counts.get(server, 0))
            yield family
        cooling = set(xclient.cooling)
        for name, text, value in (
            ("cooling", "1 while the server is cooling down (passed over).", cooling.__contains__),
            ("in_flight", "Calls of this XClient running on the server.", xclient.in_flight),
        ):
            gauge = GaugeMetricFamily(f"txgeerpc_client_server_{name}", text, labels=["server"])
            for server in servers:
                gauge.add_metric([server], int(value(server)))
            yield gauge


class RegistrationCollector(Collector):
    """A server's registration (a :class:`~txgeerpc.registry.Heartbeat`,
    an :class:`~txgeerpc.etcd.EtcdRegistration` or a
    :class:`~txgeerpc.zookeeper.ZooKeeperRegistration`): its ``counts``
    (``heartbeats``, ``heartbeat_failures``) at each scrape."""

    def __init__(self, registration: Any) -> None:
        self._registration = registration

    def collect(self) -> Iterable[Metric]:
        """``txgeerpc_registry_heartbeats_total`` and
        ``txgeerpc_registry_heartbeat_failures_total``."""
        counts = dict(self._registration.counts)
        yield CounterMetricFamily(
            "txgeerpc_registry_heartbeats",
            "Heartbeats (or etcd lease renewals and registrations) that succeeded.",
            value=counts.get("heartbeats", 0),
        )
        yield CounterMetricFamily(
            "txgeerpc_registry_heartbeat_failures",
            "Heartbeats (or etcd lease renewals and registrations) that failed.",
            value=counts.get("heartbeat_failures", 0),
        )


class EtcdCollector(Collector):
    """An etcd client's requests (``txgeerpc_etcd_*``): a latency
    histogram and failures per operation, fail-overs and watch
    reconnections, from its ``stats`` at each scrape (an
    :class:`~txgeerpc.etcd.EtcdClient`'s: ``operations``, a
    :class:`~txgeerpc.MethodStats` per operation, ``failovers`` and
    ``watch_reconnections``)."""

    def __init__(self, etcd: Any) -> None:
        self._etcd = etcd

    def collect(self) -> Iterable[Metric]:
        """Every ``txgeerpc_etcd_*`` family (none for an etcd without
        ``stats``: :class:`~txgeerpc.testing.FakeEtcd`)."""
        stats = getattr(self._etcd, "stats", None)
        if stats is None:
            return
        seconds = HistogramMetricFamily(
            "txgeerpc_etcd_request_seconds",
            "Time etcd requests took, fail-overs to other members included, by operation.",
            labels=["operation"],
        )
        failures = CounterMetricFamily(
            "txgeerpc_etcd_request_failures",
            "Requests that failed (no member answered, or one refused), by operation.",
            labels=["operation"],
        )
        for operation, method_stats in sorted(dict(stats.operations).items()):
            seconds.add_metric(
                [operation],
                list(_cumulative(list(method_stats.buckets))),
                sum_value=method_stats.total_seconds,
            )
            failures.add_metric([operation], method_stats.outcomes.get("error", 0))
        yield seconds
        yield failures
        yield CounterMetricFamily(
            "txgeerpc_etcd_failovers",
            "Requests sent on to another member after one did not answer.",
            value=stats.failovers,
        )
        yield CounterMetricFamily(
            "txgeerpc_etcd_watch_reconnections",
            "Watches resumed on a member after theirs was lost.",
            value=stats.watch_reconnections,
        )


def xclient_metrics(xclient: Any, registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """``registry`` (by default a new one) holding an :class:`XClientCollector`
    of ``xclient``.

    :raises ValueError: ``registry`` has ``txgeerpc_client_*`` families
        already (another XClient's: give each its own registry).
    """
    if registry is None:
        registry = CollectorRegistry(auto_describe=True)
    registry.register(XClientCollector(xclient))
    return registry


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
