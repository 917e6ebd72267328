"""
The GeeRPC server: a table of services, the factory that serves them, and the
web site that shares their port (the debug page, ``405`` on the RPC path).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any
from weakref import WeakSet

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver, Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from ._admission import HTTP_IDLE_TIMEOUT, Counters
from ._framed import DEFAULT_COMPRESS_THRESHOLD, available_compressions, check_compressions
from ._introspect import SERVICE, Introspection
from ._live import IndexResource
from ._one_port import OnePortFactory
from ._server_protocol import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_GRACE,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MESSAGE_TIMEOUT,
    ServerFactory,
    ServerSettings,
)
from ._service import Service, build_service
from ._web import DEFAULT_HTTP_IDLE_TIMEOUT, QuietSite, mount
from ._wire import (
    DEFAULT_DEBUG_PATH,
    DEFAULT_HEALTH_PATH,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_REGISTRY_PATH,
    DEFAULT_RPC_PATH,
)
from .codec import CodecRegistry, default_registry
from .context import Interceptor
from .debug import DebugResource
from .errors import ServiceAlreadyDefined
from .metrics import server_metrics

__all__ = ["Server"]


class _MustConnect(Resource):
    """The RPC path answers anything but CONNECT as the reference does:
    ``405`` with ``405 must CONNECT\\n`` (vector 08)."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setResponseCode(405)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"405 must CONNECT\n"


class _Healthz(Resource):
    """``/healthz`` for load balancers and orchestrators: ``200 serving``, or
    ``503 draining`` once the server stops."""

    isLeaf = True

    def __init__(self, server: Server) -> None:
        super().__init__()
        self._server = server

    def render_GET(self, request: Request) -> bytes:
        status = self._server.status
        request.setResponseCode(200 if status == "serving" else 503)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return f"{status}\n".encode()

    render_HEAD = render_GET


class Server:
    """Serves registered Python objects over GeeRPC.

    :param clock: times handle timeouts and handshake deadlines (usually the
        reactor; a :class:`twisted.internet.task.Clock` in tests).
    :param handle_timeout: server-side cap, in seconds, on each request's run
        time; a client's smaller HandleTimeout still applies.  ``None``: only
        the client's applies.
    :param max_message_size: largest request header or body, in bytes.
    :param max_in_flight: requests one connection may have running at once;
        reading from it pauses at this number.
    :param handshake_timeout: seconds a connection has to send its Option.
    :param drain_timeout: after a protocol error, seconds running requests
        get before the connection is closed.
    :param grace: on :meth:`drain` (a graceful stop), seconds running
        requests get to finish before they are answered with an error.
    :param idle_timeout: seconds a connection may wait after its Option with
        nothing begun and nothing running, until it completes its first
        request (``None``: no limit).
    :param served_idle_timeout: the same once a request was completed
        (``None``, the default: no limit; a Go client does not redial a
        connection the server closed, so this is for fleets of clients that
        do, such as the XClient).
    :param message_timeout: seconds from a request's first byte to its last.
    :param http_idle_timeout: seconds an HTTP connection on the port may
        wait between requests (``None``: twisted.web's 12 hours).
    :param max_connections: connections the port factories hold at once;
        when full, the least recently active idle one is closed for a new
        one, or the new one is refused if none is idle.  Default: the
        descriptor limit (``RLIMIT_NOFILE``) less an eighth (at least 64).
    :param max_connections_per_peer: connections from one IP address;
        more are refused.  Default: half of ``max_connections``.
    :param receive_budget: bytes every connection shares for requests being
        received: each one past 64 KiB reserves ``max_message_size`` of it
        or waits, unread, until there is room.  Default: 64 MiB, or
        ``max_message_size`` if larger.
    :param framed: whether txgeerpc clients that ask for framed mode get it
        (docs/protocol.md 13.11; Go clients never see it).
    :param compressions: compressions accepted in framed mode, from ``gzip``,
        ``zstd``, ``lz4`` (default: each one whose package is installed; ``()``
        for none).
    :param compress_threshold: framed replies whose body has at least this
        many bytes are compressed, in the compression the client asked for.
    :param codecs: the codecs this server accepts.
    :param interceptors: callables ``(context, argument, proceed)`` that see
        every call, outermost first (:mod:`txgeerpc.context`); none by default.
    :param introspection: answer ``_txgeerpc.Describe`` with the Go types of
        every method (what ``python -m txgeerpc call`` uses to build gob
        arguments from JSON).  The service is not listed in :attr:`services`.
    :param metrics: keep a Prometheus registry of this server's metrics
        (:attr:`metrics`, :mod:`txgeerpc.metrics`).
    :param access_log: a ``twisted.logger`` observer given one event per
        call (namespace ``txgeerpc.access``: peer, method, seq, duration,
        outcome, reply bytes), e.g. a ``jsonFileLogObserver``; ``None``
        (the default): no access log.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        handle_timeout: float | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        grace: float = DEFAULT_GRACE,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        served_idle_timeout: float | None = None,
        message_timeout: float = DEFAULT_MESSAGE_TIMEOUT,
        http_idle_timeout: float | None = DEFAULT_HTTP_IDLE_TIMEOUT,
        max_connections: int | None = None,
        max_connections_per_peer: int | None = None,
        receive_budget: int | None = None,
        codecs: CodecRegistry = default_registry,
        introspection: bool = True,
        interceptors: Sequence[Interceptor] = (),
        metrics: bool = True,
        access_log: ILogObserver | None = None,
        framed: bool = True,
        compressions: Sequence[str] | None = None,
        compress_threshold: int = DEFAULT_COMPRESS_THRESHOLD,
    ) -> None:
        if max_message_size < 1 or max_in_flight < 1:
            raise ValueError("max_message_size and max_in_flight must be positive")
        if not grace >= 0:
            raise ValueError(f"grace must be 0 or more seconds, got {grace!r}")
        limits: dict[str, Any] = {}
        if max_connections is not None:
            limits["max_connections"] = max_connections
        if max_connections_per_peer is not None:
            limits["max_connections_per_peer"] = max_connections_per_peer
        if receive_budget is not None:
            limits["receive_budget"] = receive_budget
        self.http_idle_timeout = http_idle_timeout
        self.clock = clock
        self.started_at = clock.seconds()
        """When the server was made, on its clock (the debug page's uptime)."""
        self.codecs = codecs
        self.settings = ServerSettings(
            max_message_size=max_message_size,
            max_in_flight=max_in_flight,
            handshake_timeout=handshake_timeout,
            max_handle_timeout=handle_timeout,
            drain_timeout=drain_timeout,
            grace=grace,
            idle_timeout=idle_timeout,
            served_idle_timeout=served_idle_timeout,
            message_timeout=message_timeout,
            interceptors=tuple(interceptors),
            access_log=access_log,
            framed=framed,
            compressions=(
                available_compressions()
                if compressions is None
                else check_compressions(compressions)
            ),
            compress_threshold=compress_threshold,
            **limits,
        )
        self._services: dict[str, Service] = {}
        # What connections dispatch to: the services plus the reserved ones.
        self._table: dict[str, Service] = {}
        if introspection:
            self._table[SERVICE] = build_service(
                Introspection(self._services, lambda: self.status), SERVICE
            )
        self._factory = ServerFactory(self._table, codecs, clock, self.settings)
        self._port_factories: WeakSet[OnePortFactory] = WeakSet()
        self.metrics = server_metrics(self) if metrics else None
        """This server's Prometheus registry (``None`` with ``metrics=False``):
        serve it with ``prometheus_client.twisted.MetricsResource(server.metrics)``."""
        self.addresses: list[str] = []
        """Where the server listens (``tcp@host:port``), for its debug page:
        ``twistd geerpc`` notes each listener's; a program may add its own."""
        self.worker: dict[str, int] | None = None
        """Which worker of ``twistd geerpc --workers N`` this is (``{"id",
        "pid", "count"}``; the debug page's JSON carries it), else ``None``."""
        self.registry: Any = None
        """The embedded registry (a
        :class:`~txgeerpc.registry.RegistryResource`) whose entries the debug
        page lists, if one is mounted on the server's site."""

    def register(
        self, obj: Any, name: str | None = None, methods: Iterable[str] | None = None
    ) -> Service:
        """Expose an object's methods as ``Name.Method``.

        Public methods (not starting with ``_``) taking at most one argument
        are exposed; methods marked with :func:`txgeerpc.expose` narrow that,
        and ``methods`` picks them by name.  Arguments are converted to each
        method's annotated type (dataclasses and attrs classes for structs,
        builtins, ``list[...]``, ``dict[...]``, ``Optional[...]``).  Handlers
        may return a value, a Deferred or a coroutine.

        :param obj: an instance, or a class to instantiate with no arguments.
        :param name: the service name; the class name by default.
        :raises ServiceAlreadyDefined: the name is taken.
        :raises RegistrationError: nothing to expose, or a requested method
            cannot be called remotely.
        """
        service = build_service(obj, name, methods)
        if service.name in self._services or service.name == SERVICE:
            raise ServiceAlreadyDefined(service.name)
        self._services[service.name] = service
        self._table[service.name] = service
        for method in sorted(service.methods):
            self._log.debug(
                "rpc server: register {service}.{method}", service=service.name, method=method
            )
        return service

    @property
    def services(self) -> Mapping[str, Service]:
        """The registered services by name (read-only)."""
        return MappingProxyType(self._services)

    def factory(self) -> ServerFactory:
        """The factory of raw GeeRPC streams only (the same one on every call,
        so every endpoint shares connections and statistics).  To listen,
        :meth:`port_factory` serves this and HTTP on one port."""
        return self._factory

    def port_factory(
        self,
        *,
        rpc_path: str = DEFAULT_RPC_PATH,
        debug_path: str | None = DEFAULT_DEBUG_PATH,
        health_path: str | None = DEFAULT_HEALTH_PATH,
        go_netrpc: bool = True,
    ) -> OnePortFactory:
        """The factory to listen with: one port serves raw GeeRPC streams,
        ``CONNECT rpc_path`` (GeeRPC over HTTP, as Go's ``DialHTTP`` does)
        and plain HTTP (the debug page at ``debug_path`` and the health check
        at ``health_path``, ``None`` for none; ``405 must CONNECT`` on
        ``rpc_path``), told apart by the first bytes.
        More ``twisted.web`` resources can be mounted on its ``site``.
        With ``go_netrpc`` (the default) it also serves Go's standard
        ``net/rpc`` clients — gob with no Option, ``CONNECT /_goRPC_`` — and
        JSON-RPC 1.0 (``net/rpc/jsonrpc``) ones (docs/protocol.md 14)."""
        factory = OnePortFactory(
            self._factory,
            self.site(rpc_path=rpc_path, debug_path=debug_path, health_path=health_path),
            self.clock,
            rpc_path=rpc_path,
            handshake_timeout=self.settings.handshake_timeout,
            go_netrpc=go_netrpc,
        )
        self._port_factories.add(factory)
        return factory

    def site(
        self,
        *,
        rpc_path: str = DEFAULT_RPC_PATH,
        debug_path: str | None = DEFAULT_DEBUG_PATH,
        health_path: str | None = DEFAULT_HEALTH_PATH,
    ) -> QuietSite:
        """A new web site for this server's port: ``405 must CONNECT`` on
        ``rpc_path``, the debug page at ``debug_path`` and the health check
        (``200 serving``, ``503 draining``) at ``health_path`` (``None`` for
        none); no tracebacks in answers, and a
        :class:`~txgeerpc._web.QuietSite`'s body limit."""
        root = Resource()
        mount(root, rpc_path, _MustConnect())
        if debug_path is not None:
            mount(root, debug_path, DebugResource(self))
        titles = {"/metrics": "Prometheus metrics", DEFAULT_REGISTRY_PATH: "Registry"}
        if debug_path is not None:
            titles["/" + debug_path.strip("/")] = "Debug page (live)"
        if health_path is not None:
            titles["/" + health_path.strip("/")] = "Health check"
        root.putChild(b"", IndexResource(root, titles, hidden=[rpc_path]))
        site = QuietSite(root, reactor=self.clock, timeout=self.http_idle_timeout)
        if health_path is not None:
            mount(root, health_path, _Healthz(self))
            site.quiet_paths.add(health_path.encode())  # probes stay out of the access log
        site.displayTracebacks = False
        site.noisy = False
        site.on_timeout = self._http_timed_out
        return site

    def _http_timed_out(self) -> None:
        self._factory.counters.add(HTTP_IDLE_TIMEOUT)

    @property
    def limit_counts(self) -> dict[str, int]:
        """Connections refused or closed by a limit since the server was
        made, by kind: ``refused_max_connections``, ``refused_per_peer``,
        ``evicted_idle``, ``handshake_timeout``, ``idle_timeout``,
        ``message_timeout``, ``http_idle_timeout`` and
        ``receive_budget_waits`` (requests that waited for the budget)."""
        return self._factory.counters.as_dict()

    @property
    def counters(self) -> Counters:
        """The server's counts besides its methods' (bytes, unknown methods,
        handshake failures and protocol errors by kind, :attr:`limit_counts`)."""
        return self._factory.counters

    def connections_by_transport(self) -> dict[str, int]:
        """Connections open now by transport: ``raw`` and ``connect`` RPC
        streams, ``http`` connections to the port's web site."""
        counts = {"raw": 0, "connect": 0, "http": 0}
        for protocol in list(self._factory.connections):
            counts[protocol.transport_kind] += 1
        for factory in list(self._port_factories):
            counts["http"] += factory.http_connections()
        return counts

    @property
    def connections(self) -> int:
        """Connections currently open."""
        return len(self._factory.connections)

    @property
    def status(self) -> str:
        """``"serving"``, or ``"draining"`` once :meth:`drain` was called."""
        return "serving" if self._factory.grace is None else "draining"

    def drain(self, grace: float | None = None) -> Deferred[None]:
        """Stop gracefully (call it once the ports stopped listening; ``twistd
        geerpc`` does on SIGTERM): no new request is taken, running ones get
        ``grace`` seconds (default: the server's) to finish and have their
        replies written, then what is left is answered with a
        ``rpc server: shutting down`` error and every connection closes.
        txgeerpc clients are told (the go-away message, docs/protocol.md
        13.8), send new calls elsewhere, and are read until they half-close;
        Go clients get their replies, then EOF.  Connections accepted later
        drain too.  Health checks answer "draining" from now on.

        :returns: a Deferred that fires with ``None`` once every connection
            open now is closed (at most ``grace`` plus half a second later);
            it never fails.
        """
        grace = self.settings.grace if grace is None else grace
        factory = self._factory
        running = sum(protocol.in_flight for protocol in factory.connections)
        self._log.info(
            "txgeerpc: stopping: {connections} connection(s), {running} request(s) running; "
            "grace {grace:g}s",
            connections=len(factory.connections),
            running=running,
            grace=grace,
        )
        started = self.clock.seconds()

        def stopped(_: object) -> None:
            self._log.info(
                "txgeerpc: every connection closed after {seconds:.3f}s",
                seconds=self.clock.seconds() - started,
            )

        return factory.drain(grace).addCallback(stopped)
