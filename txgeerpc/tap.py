"""
``twistd geerpc``: serve GeeRPC services on one or more endpoints.

Only this module (and the CLI) touches the global reactor.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from collections.abc import Sequence
from os import cpu_count as _cpu_count
from typing import Any
from urllib.parse import urlsplit

import attrs
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger, jsonFileLogObserver
from twisted.python import usage
from twisted.python.reflect import namedAny

from . import _handover as handover
from . import _twistd_etcd as etcd_options
from . import _twistd_security as security_options
from . import _twistd_zookeeper as zookeeper_options
from . import _worker_stats as worker_stats
from ._admission import DEFAULT_RECEIVE_BUDGET
from ._framed import DEFAULT_COMPRESS_THRESHOLD, available_compressions, check_compressions
from ._server_protocol import (
    DEFAULT_GRACE,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MESSAGE_TIMEOUT,
)
from ._services import CloseOnStop, StopInOrder
from ._twistd import (
    Built,
    Listener,
    ServeOptions,
    StartupError,
    cwd_on_path,
    make_service,
    metrics_resource,
    non_negative_seconds,
    positive_int,
    positive_seconds,
)
from ._web import DEFAULT_HTTP_IDLE_TIMEOUT, mount
from ._wire import DEFAULT_DEBUG_PATH, DEFAULT_REGISTRY_PATH, DEFAULT_RPC_PATH
from ._workers import Gate, Supervisor, WorkerLabelled, shareable
from .context import Interceptor
from .errors import GeeRPCError
from .etcd import DEFAULT_TTL, Etcd, EtcdRegistration
from .examples import register_examples
from .interfaces import IRegistration
from .metrics import EtcdCollector, RegistrationCollector, RegistryCollector
from .registry import DEFAULT_MAX_ENTRIES as DEFAULT_REGISTRY_MAX_ENTRIES
from .registry import DEFAULT_TIMEOUT as DEFAULT_REGISTRY_TIMEOUT
from .registry import (
    MIN_PERIOD,
    Heartbeat,
    InvalidServerAddress,
    MemoryStore,
    RegistryPurge,
    RegistryResource,
    purge_interval,
    validate_address,
)
from .server import Server

__all__ = [
    "Geerpc",
    "Options",
    "build",
    "build_server",
    "geerpc_address",
    "load_service",
    "makeService",
    "with_backlog",
]

DEFAULT_LISTEN = "tcp:7001:interface=127.0.0.1"
DEFAULT_BACKLOG = 1024


def _cpus() -> int:
    """The CPUs (``--workers auto``)."""
    return _cpu_count() or 1


def _heartbeat_period(text: str) -> float:
    value = positive_seconds(text)
    if not value >= MIN_PERIOD:
        raise ValueError(f"must be {MIN_PERIOD:g} seconds or more")
    return value


_heartbeat_period.coerceDoc = f"Seconds, {MIN_PERIOD:g} or more."  # type: ignore[attr-defined]


def _workers(text: str) -> int:
    """``--workers``: a whole number, 1 or more, or ``auto`` (the CPUs)."""
    if text.strip().lower() == "auto":
        return _cpus()
    return positive_int(text)


_workers.coerceDoc = "A whole number, >= 1, or auto (the CPU count)."  # type: ignore[attr-defined]


def _compressions(text: str) -> tuple[str, ...]:
    """``--compression``: a comma-separated list (``none``: accept none)."""
    try:
        return check_compressions(text.split(","))
    except (ValueError, GeeRPCError) as error:
        raise usage.UsageError(f"--compression: {error}") from None


class Options(ServeOptions):
    tapname = "geerpc"
    default_listen = DEFAULT_LISTEN
    synopsis = "[options]"
    longdesc = (
        "Serve GeeRPC services.  With no --service, serves the example services "
        "Foo (Sum, Sleep), Arith (Multiply, Divide, Echo, Fail) and Records (Echo, "
        "Keys), so `twistd -n geerpc` is a working demo.  Clients choose the codec "
        "(gob, as Go GeeRPC; or txgeerpc's JSON extension).  Call it with:  "
        "python -m txgeerpc "
        'call tcp@127.0.0.1:7001 Arith.Multiply \'{"Num1":6,"Num2":7}\''
    )
    optParameters = [
        [
            "handle-timeout",
            None,
            None,
            "Server-side maximum seconds a request may run (the client's "
            "HandleTimeout applies when smaller).",
            positive_seconds,
        ],
        [
            "max-message-size",
            None,
            DEFAULT_MAX_MESSAGE_SIZE,
            "Largest request header or body, in bytes.",
            positive_int,
        ],
        [
            "max-in-flight",
            None,
            DEFAULT_MAX_IN_FLIGHT,
            "Requests one connection may have running before reading from it pauses.",
            positive_int,
        ],
        [
            "handshake-timeout",
            None,
            DEFAULT_HANDSHAKE_TIMEOUT,
            "Seconds a new connection has to send its Option (or HTTP request).",
            positive_seconds,
        ],
        [
            "grace",
            None,
            DEFAULT_GRACE,
            "On SIGTERM, seconds running requests get to finish (after the registry "
            "entry is removed and the ports closed) before they are answered with an "
            "error and the process exits.",
            non_negative_seconds,
        ],
        [
            "idle-timeout",
            None,
            DEFAULT_IDLE_TIMEOUT,
            "Seconds a connection may wait after its Option with no request begun, "
            "until its first request is complete (0: no limit).",
            non_negative_seconds,
        ],
        [
            "served-idle-timeout",
            None,
            0.0,
            "The same once a request was completed (0, the default: no limit; "
            "Go clients do not redial a connection the server closed).",
            non_negative_seconds,
        ],
        [
            "message-timeout",
            None,
            DEFAULT_MESSAGE_TIMEOUT,
            "Seconds from a request's first byte to its last.",
            positive_seconds,
        ],
        [
            "http-idle-timeout",
            None,
            DEFAULT_HTTP_IDLE_TIMEOUT,
            "Seconds an HTTP connection may wait between requests (0: twisted.web's 12 hours).",
            non_negative_seconds,
        ],
        [
            "max-connections",
            None,
            None,
            "Connections held at once; when full, the least recently active idle one "
            "is closed for a new one (default: the descriptor limit less an eighth of it, "
            "or less 64 if that is more).",
            positive_int,
        ],
        [
            "max-connections-per-peer",
            None,
            None,
            "Connections one IP address may hold; more are refused "
            "(default: half of --max-connections).",
            positive_int,
        ],
        [
            "receive-budget",
            None,
            None,
            f"Bytes all connections share for requests being received: one past 64 KiB "
            f"reserves --max-message-size or waits, unread (default {DEFAULT_RECEIVE_BUDGET} "
            f"or --max-message-size if larger).",
            positive_int,
        ],
        [
            "compression",
            None,
            None,
            "Compressions accepted in framed mode, comma separated: gzip, zstd, lz4, or none "
            f"(default: {','.join(available_compressions())}, those installed).",
            _compressions,
        ],
        [
            "compress-threshold",
            None,
            DEFAULT_COMPRESS_THRESHOLD,
            "Framed replies with a body of this many bytes or more are compressed (in the "
            "compression the client asked for).",
            positive_int,
        ],
        [
            "workers",
            None,
            1,
            "Processes serving the --listen ports (auto: one per CPU): the parent opens "
            "each socket once and hands it to every worker, restarts a worker that dies "
            "and registers once (docs/operations.md, Workers).",
            _workers,
        ],
        [
            "workers-timeout",
            None,
            worker_stats.DEFAULT_TIMEOUT,
            "With --workers: seconds the worker answering /metrics (or the debug page's "
            "?workers=all) waits for each other worker's numbers; one that does not answer "
            "is left out (txgeerpc_workers_answered 0).",
            positive_seconds,
        ],
        [
            "handover",
            None,
            None,
            "UNIX socket path for zero-downtime restarts: a new twistd geerpc started with "
            "the same --handover takes the listening sockets from the one running, which "
            "then stops gracefully; with none running it listens itself.",
        ],
        [
            "backlog",
            None,
            DEFAULT_BACKLOG,
            "Listen backlog added to tcp:, tcp6:, ssl: and unix: --listen strings that set none.",
            positive_int,
        ],
        [
            "rpc-path",
            None,
            DEFAULT_RPC_PATH,
            "HTTP path of GeeRPC over CONNECT (Go clients use /_geeprc_).",
        ],
        [
            "debug-path",
            None,
            DEFAULT_DEBUG_PATH,
            'HTTP path of the debug page ("none": no debug page).',
        ],
        [
            "access-log",
            None,
            None,
            "File to append one JSON line per call to (peer, method, seq, duration, "
            "outcome, reply bytes); default: no access log.",
        ],
        [
            "registry",
            None,
            None,
            "URL of a GeeRPC registry to heartbeat to "
            "(e.g. http://127.0.0.1:9999/_geerpc_/registry), or several, comma-separated, "
            "of registries sharing one list (on etcd): beats go to the one that answered "
            "last and move on to the next when it fails; needs --advertise.",
        ],
        [
            "advertise",
            None,
            None,
            "The address to register (at --registry, or in --etcd): proto@host:port "
            "(port 0: the port the first TCP --listen gets).",
        ],
        [
            "ttl",
            None,
            None,
            f"With --etcd: seconds the registration outlives this server (its etcd lease; "
            f"renewed every third of it; default {DEFAULT_TTL}).",
            positive_int,
        ],
        [
            "heartbeat",
            None,
            None,
            "Seconds between heartbeats (default: a third of the registry's TTL, or 60).",
            _heartbeat_period,
        ],
        [
            "registry-path",
            None,
            DEFAULT_REGISTRY_PATH,
            'HTTP path of the embedded registry ("none": no registry).',
        ],
        [
            "registry-timeout",
            None,
            DEFAULT_REGISTRY_TIMEOUT,
            "Seconds a registry entry lives after its last heartbeat (0: forever).",
            non_negative_seconds,
        ],
        [
            "registry-max-entries",
            None,
            DEFAULT_REGISTRY_MAX_ENTRIES,
            "Servers the embedded registry holds at most; a heartbeat from a new one when "
            "full is answered 503 (refreshing a listed one always works).",
            positive_int,
        ],
        # Direct registration on etcd (instead of --registry), with --advertise.
        *etcd_options.PARAMETERS,
        # TLS, authentication, authorization, HTTP endpoints' access (docs/security.md).
        *security_options.PARAMETERS,
        # Direct registration on ZooKeeper (instead of --registry), with --advertise.
        *zookeeper_options.PARAMETERS,
    ]
    optFlags = [
        *security_options.FLAGS,
        ["no-framed", None, "Refuse framed mode (txgeerpc clients then keep the plain stream)."],
        ["tcp-nodelay", None, "Set TCP_NODELAY on accepted TCP connections (Nagle off)."],
        [
            "no-tcp-nodelay",
            None,
            "Clear TCP_NODELAY on accepted TCP connections (Nagle on, the default: "
            "docs/operations.md has the measurements).",
        ],
        [
            "otel",
            None,
            "Trace every call with OpenTelemetry (pip install txgeerpc[otel]): a server "
            "span per call, W3C trace context read from and sent in the call metadata; "
            "spans go to the process's tracer provider (opentelemetry-instrument, or a "
            "--service module that sets one).",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["service"] = []
        self["trust-network"] = []
        self.arguments: list[str] = []
        """The command line parsed (a worker of ``--workers`` gets it)."""

    def parseOptions(self, options: list[str] | None = None) -> None:
        self.arguments = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def opt_trust_network(self, spec: str) -> None:
        """NETWORK=IDENTITY: callers from NETWORK are IDENTITY (for Go
        clients, which cannot send a token); repeatable, e.g. 10.0.0.0/8=ops."""
        security_options.opt_trust_network(self, spec)

    def opt_listen(self, endpoint: str) -> None:
        """Twisted server endpoint string to listen on (repeatable).
        Default: tcp:7001:interface=127.0.0.1"""
        super().opt_listen(endpoint)

    def opt_service(self, spec: str) -> None:
        """MODULE:ATTR of a class or instance to register (repeatable).
        A class is instantiated with no arguments, or with clock=reactor if
        its constructor takes a `clock` parameter."""
        if ":" not in spec:
            raise usage.UsageError(f"--service wants MODULE:ATTR, got {spec!r}")
        self["service"].append(spec)

    def postOptions(self) -> None:
        super().postOptions()
        if self["registry"] and self["etcd"]:
            raise usage.UsageError(
                "--registry and --etcd: register at one of them (a registry on the same "
                "etcd lists the servers registered in it directly)"
            )
        if self["registry"] and self["zookeeper"]:
            raise usage.UsageError(
                "--registry and --zookeeper: register at one of them (a registry on the same "
                "ZooKeeper lists the servers registered in it directly)"
            )
        if self["zookeeper"] and not self["advertise"]:
            raise usage.UsageError("--zookeeper needs --advertise (the address to register)")
        if self["zookeeper"] and self["heartbeat"] is not None:
            raise usage.UsageError(
                "--heartbeat is for --registry; with --zookeeper the session keeps the entry"
            )
        if self["etcd"]:
            if not self["advertise"]:
                raise usage.UsageError("--etcd needs --advertise (the address to register)")
        elif not self["zookeeper"] and bool(self["registry"]) != bool(self["advertise"]):
            raise usage.UsageError(
                "--registry and --advertise go together"
                if self["registry"]
                else "--advertise needs --registry or --etcd or --zookeeper (where to register)"
            )
        if self["ttl"] is not None and not self["etcd"]:
            raise usage.UsageError("--ttl needs --etcd")
        if self["heartbeat"] is not None and self["etcd"]:
            raise usage.UsageError(
                "--heartbeat is for --registry; with --etcd the lease is renewed every "
                "third of --ttl"
            )
        if self["ttl"] is None:
            self["ttl"] = DEFAULT_TTL
        etcd_options.check(self)
        security_options.check(self)
        zookeeper_options.check(self)
        if self["advertise"]:
            try:
                # Port 0: the port the first TCP --listen gets.
                validate_address(_with_port(self["advertise"], 1, only_if=0))
            except InvalidServerAddress as error:
                raise usage.UsageError(f"--advertise {self['advertise']!r}: {error}") from None
            if _port_of(self["advertise"]) == 0 and not any(map(_has_port, self["listen"])):
                raise usage.UsageError(
                    f"--advertise {self['advertise']!r}: port 0 takes the port of the first "
                    "TCP --listen (tcp:, tcp6:, ssl:), and there is none; give the port"
                )
        if self["registry"]:
            self["registry"] = _registry_urls(self["registry"])
        for name in ("rpc-path", "debug-path", "registry-path"):
            if self[name].lower() != "none" and not self[name].startswith("/"):
                raise usage.UsageError(f"--{name} must start with /, got {self[name]!r}")
        if self["rpc-path"].lower() == "none":
            raise usage.UsageError("--rpc-path cannot be none (Go clients CONNECT to it)")
        budget = self["receive-budget"]
        if budget is not None and budget < self["max-message-size"]:
            raise usage.UsageError(
                f"--receive-budget {budget} must hold one message of --max-message-size "
                f"({self['max-message-size']})"
            )
        if self["tcp-nodelay"] and self["no-tcp-nodelay"]:
            raise usage.UsageError("--tcp-nodelay and --no-tcp-nodelay: choose one")
        self["nodelay"] = True if self["tcp-nodelay"] else False if self["no-tcp-nodelay"] else None
        for option in ("workers", "handover"):
            if not self[option] or (option == "workers" and self["workers"] == 1):
                continue
            for description in self["listen"]:
                if not shareable(description):
                    raise usage.UsageError(
                        f"--{option} shares listening sockets: --listen {description} is "
                        "not one (tcp: or tcp6:)"
                    )
        total, per_peer = self["max-connections"], self["max-connections-per-peer"]
        if total is not None and per_peer is not None and per_peer > total:
            raise usage.UsageError(
                f"--max-connections-per-peer {per_peer} is more than --max-connections {total}"
            )


def with_backlog(description: str, backlog: int) -> str:
    """``description`` (a server endpoint string) with ``:backlog=N`` added,
    for the kinds that take one (tcp, tcp6, ssl, unix) and set none."""
    kind, _, arguments = description.partition(":")
    if kind.strip().lower() not in ("tcp", "tcp6", "ssl", "unix"):
        return description
    if re.search(r"(?:^|(?<!\\):)backlog=", arguments):
        return description
    return f"{description}:backlog={backlog}"


def _registry_urls(given: str | list[str]) -> list[str]:
    """The URLs of ``--registry URL[,URL...]`` (or a list of them, as
    parsed already), each checked, in order and without repeats.

    :raises usage.UsageError: one is not an http(s) URL, or none is given.
    """
    urls: list[str] = []
    for text in given.split(",") if isinstance(given, str) else given:
        url = text.strip()
        if not url:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise usage.UsageError(f"--registry wants an http:// or https:// URL, got {url!r}")
        if url not in urls:
            urls.append(url)
    if not urls:
        raise usage.UsageError(f"--registry wants an http:// or https:// URL, got {given!r}")
    return urls


def load_service(spec: str, clock: Any) -> Any:
    """Resolve ``MODULE:ATTR``; instantiate a class (passing ``clock`` when its
    constructor has such a parameter).  Modules are looked for in the current
    directory too, as ``python -m`` does.

    :raises StartupError: it cannot be imported or built.
    """
    module, _, attribute = spec.partition(":")
    cwd_on_path()
    try:
        target = namedAny(f"{module}.{attribute}")
    except Exception as error:  # not found, or the module itself failed to import
        raise StartupError(f"--service {spec}: cannot import it ({_describe(error)})") from error
    if isinstance(target, type):
        try:
            parameters = inspect.signature(target).parameters
        except (TypeError, ValueError):
            parameters = {}  # type: ignore[assignment]
        try:
            return target(clock=clock) if "clock" in parameters else target()
        except Exception as error:
            raise StartupError(
                f"--service {spec}: cannot instantiate it ({_describe(error)})"
            ) from error
    return target


def _describe(error: BaseException) -> str:
    """An exception as a short phrase, with where it happened for a syntax error."""
    if isinstance(error, SyntaxError) and error.filename:
        return f"SyntaxError: {error.msg} ({error.filename}, line {error.lineno})"
    text = str(error).strip()
    name = type(error).__name__
    if name in ("ModuleNotFound", "ObjectNotFound", "InvalidName"):  # twisted's own
        return text
    return f"{name}: {text}" if text else name


class _Announcer:
    """Logs where one listener serves, with a ready-to-paste call, once the
    reactor runs (signal handlers installed, so whoever waits for the line
    can also stop the server with SIGTERM)."""

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        description: str,
        server: Server,
        debug_path: str | None,
        registry_path: str | None,
        gate: Gate | None = None,
    ) -> None:
        self._reactor = reactor
        self._description = description
        self._server = server
        self._debug_path = debug_path
        self._registry_path = registry_path
        self._gate = gate

    def __call__(self, port: IListeningPort) -> None:
        gate = self._gate
        if gate is None:
            self._reactor.callWhenRunning(self._announce, port)
        else:  # --workers: once they serve
            gate.wait().addCallback(lambda _: self._announce(port))

    def _announce(self, port: IListeningPort) -> None:
        address = geerpc_address(port.getHost())
        self._server.addresses.append(address)  # the debug page shows them
        example = _example_call(self._server)
        extra = ""
        if address.startswith("tcp@"):
            hostport = address[len("tcp@") :]
            extra = f"; over HTTP: http@{hostport}"
            if self._debug_path is not None:
                extra += f"; debug page: http://{hostport}{self._debug_path}"
            if self._registry_path is not None:
                extra += f"; registry: http://{hostport}{self._registry_path}"
        self._log.info(
            "txgeerpc: serving {services} on {address}{extra} (from {description}). Try: "
            "python -m txgeerpc call {address} {example}",
            services=", ".join(sorted(self._server.services)),
            address=address,
            extra=extra,
            description=self._description,
            example=example,
        )


def geerpc_address(host: Any) -> str:
    """The ``protocol@address`` a client uses to reach a listening address."""
    if hasattr(host, "port"):
        ip = host.host
        if ip in ("0.0.0.0", "::", ""):
            ip = "127.0.0.1"
        if ":" in ip:
            ip = f"[{ip}]"
        return f"tcp@{ip}:{host.port}"
    name = getattr(host, "name", "")
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return f"unix@{name}"


def _example_call(server: Server) -> str:
    if "Arith" in server.services and "Multiply" in server.services["Arith"].methods:
        argument = json.dumps({"Num1": 6, "Num2": 7}, separators=(",", ":"))
        return f"Arith.Multiply '{argument}'"
    name, service = sorted(server.services.items())[0]
    method = sorted(service.methods)[0]
    return f"{name}.{method} 'null'"


def build_server(
    config: Options, clock: Any, access_log: Any = None, *, interceptors: Any = ()
) -> Server:
    """The :class:`Server` a parsed configuration describes.

    :param access_log: the observer of ``--access-log``, if any.
    :param interceptors: server interceptors (the security options' guard),
        inside the tracing one (``--otel``).
    :raises StartupError: a ``--service`` cannot be loaded or registered.
    """
    server_interceptors, client_interceptors = _tracing(config)
    server = Server(
        clock,
        interceptors=[*server_interceptors, *interceptors],
        handle_timeout=config["handle-timeout"],
        max_message_size=config["max-message-size"],
        max_in_flight=config["max-in-flight"],
        handshake_timeout=config["handshake-timeout"],
        grace=config["grace"],
        idle_timeout=config["idle-timeout"] or None,
        served_idle_timeout=config["served-idle-timeout"] or None,
        message_timeout=config["message-timeout"],
        http_idle_timeout=config["http-idle-timeout"] or None,
        max_connections=config["max-connections"],
        max_connections_per_peer=config["max-connections-per-peer"],
        receive_budget=config["receive-budget"],
        metrics=config["metrics-path"].lower() != "none",
        access_log=access_log,
        framed=not config["no-framed"],
        compressions=config["compression"],
        compress_threshold=config["compress-threshold"],
    )
    if config["service"]:
        for spec in config["service"]:
            try:
                server.register(load_service(spec, clock))
            except GeeRPCError as error:
                raise StartupError(f"--service {spec}: {error}") from error
    else:
        register_examples(server, client_interceptors)
    return server


def _tracing(config: Options) -> tuple[list[Interceptor], list[Interceptor]]:
    """The server's and the examples' clients' interceptors for ``--otel``.

    :raises StartupError: the ``otel`` extra is not installed.
    """
    if not config["otel"]:
        return [], []
    try:
        from . import otel  # only with --otel: without it nothing imports OpenTelemetry
    except ImportError as error:
        raise StartupError(f"--otel: {error}") from error
    return [otel.server_interceptor()], [otel.client_interceptor()]


@attrs.frozen
class Geerpc(Built):
    """What ``twistd geerpc``'s options build (:func:`build`).

    :ivar service: the service tree twistd runs.
    :ivar listeners: one per ``--listen``, in order.
    :ivar server: the :class:`Server` every listener serves.
    :ivar registry: the embedded registry, unless ``--registry-path none``.
    :ivar registration: the heartbeat (``--registry``) or etcd registration
        (``--etcd``), if any.
    """

    server: Server
    registry: RegistryResource | None
    registration: IRegistration | None


def build(
    config: Options,
    reactor: Any,
    *,
    etcd: Etcd | None = None,
    adopt: Sequence[int] | None = None,
    worker: dict[str, int] | None = None,
    stats_directory: str | None = None,
    announce_after: Gate | None = None,
) -> Geerpc:
    """Build the ``twistd geerpc`` service tree, listening on nothing yet.

    :param etcd: with ``--etcd``, the cluster to register in (by default an
        :class:`~txgeerpc.etcd.EtcdClient` the options describe); it is
        closed on stop, after the lease is revoked.
    :param adopt: listening sockets (descriptors) to serve on instead of
        listening, one per ``--listen`` (inherited by a worker, handed over).
    :param worker: which worker of ``--workers`` this is (``{"id", "pid",
        "count"}``): the debug page's JSON says so, the metrics are labelled.
    :param stats_directory: with ``worker``, the parent's run directory where
        the workers answer each other (:mod:`txgeerpc._worker_stats`): the
        metrics and ``?workers=all`` of the debug page show every worker.
    :param announce_after: the "serving" lines are logged once it opened
        (the workers serve), not as soon as the reactor runs.
    :raises StartupError: a ``--service`` or ``--listen`` that cannot be used.
    """
    parent = MultiService()
    access_log = None
    if config["access-log"]:
        try:
            access_file = open(config["access-log"], "a", encoding="utf-8")
        except OSError as error:
            raise StartupError(f"--access-log {config['access-log']}: {error.strerror}") from error
        access_log = jsonFileLogObserver(access_file, recordSeparator="")

        def close_access_log() -> Deferred[None]:
            access_file.close()
            return succeed(None)

        CloseOnStop(close_access_log).setServiceParent(parent)
    security = security_options.build(config)
    guards = [security.guard] if security.guard is not None else []
    server = build_server(config, reactor, access_log, interceptors=guards)
    debug_path = None if config["debug-path"].lower() == "none" else config["debug-path"]
    # One factory for every port: they share the site and the statistics.
    factory = server.port_factory(rpc_path=config["rpc-path"], debug_path=debug_path)
    factory.tcp_nodelay = config["nodelay"]
    server.worker = worker
    if server.metrics is not None:
        exposed = server.metrics if worker is None else WorkerLabelled(server.metrics, worker["id"])
        mount(factory.site.resource, config["metrics-path"], metrics_resource(exposed))
    if worker is not None and stats_directory is not None:
        # /metrics and ?workers=all of the debug page show every worker.
        for stats in worker_stats.mount_across(
            reactor,
            factory.site.resource,
            server,
            worker,
            stats_directory,
            config["metrics-path"] if server.metrics is not None else None,
            debug_path,
            config["workers-timeout"],
        ):
            stats.setServiceParent(parent)
    if security.tls is not None:
        factory.serve_tls(security.tls, only=security.tls_only)
    if security.tls is not None or security.tokens is not None:
        security_options.ReloadOnHangup(reactor, security).setServiceParent(parent)
    if debug_path is not None:
        mount(
            factory.site.resource,
            debug_path.rstrip("/") + "-auth",
            security_options.AuthStats(security, factory),
        )
    registry_path = None if config["registry-path"].lower() == "none" else config["registry-path"]
    registry = None
    if registry_path is not None:
        # An embedded registry on the same port, so the demo has one.
        store = MemoryStore(config["registry-timeout"], max_entries=config["registry-max-entries"])
        limits = security_options.source_limits(config, reactor, config["registry-timeout"])
        registry = RegistryResource(store, reactor, limits=limits)
        server.registry = registry  # the debug page lists its entries
        mount(factory.site.resource, registry_path, registry)
        factory.site.quiet_paths.add(registry_path.encode())
        if server.metrics is not None:
            server.metrics.register(RegistryCollector(store))
        interval = purge_interval(config["registry-timeout"])
        RegistryPurge(store, reactor, interval).setServiceParent(parent)
    root = factory.site.resource
    web_guard = security.web_guard
    if debug_path is not None:
        for path in (debug_path, debug_path.rstrip("/") + "-auth"):
            security_options.guard_path(root, path, security.access["debug"], web_guard, "debug")
    security_options.guard_path(root, "/healthz", security.access["health"], web_guard, "health")
    if server.metrics is not None:
        metrics_path = config["metrics-path"]
        security_options.guard_path(
            root, metrics_path, security.access["metrics"], web_guard, "metrics"
        )
    if registry_path is not None:
        security_options.guard_path(
            root,
            registry_path,
            security.access["registry"],
            web_guard,
            "registry",
            methods=(b"POST", b"DELETE", b"PUT"),
        )
    # Stopped after the listeners (a MultiService stops the last added first):
    # the ports are closed, then the connections drain (--grace).
    CloseOnStop(server.drain).setServiceParent(parent)
    listeners = []
    for index, description in enumerate(config["listen"]):
        announce = _Announcer(
            reactor, description, server, debug_path, registry_path, announce_after
        )
        listening = Listener(
            reactor,
            description,
            factory,
            announce,
            endpoint=with_backlog(description, config["backlog"]),
            adopt=adopt[index] if adopt is not None else None,
        )
        listening.setServiceParent(parent)
        listeners.append(listening)
    registration: IRegistration | None = None
    if config["registry"]:
        registration = Heartbeat(
            reactor,
            security_options.heartbeat_request(config, reactor),
            config["registry"],
            config["advertise"],
            period=config["heartbeat"],
        )
    elif config["etcd"]:
        if etcd is None:
            etcd = etcd_options.client(config, reactor)
        registration = EtcdRegistration(
            etcd,
            config["advertise"],
            reactor,
            ttl=config["ttl"],
            prefix=config["etcd-prefix"],
            stop_timeout=config["etcd-timeout"],
        )
    elif config["zookeeper"]:
        from .zookeeper import ZooKeeperRegistration

        zookeeper = zookeeper_options.client(config, reactor)
        registration = ZooKeeperRegistration(
            zookeeper,
            config["advertise"],
            reactor,
            prefix=config["zookeeper-prefix"],
            stop_timeout=config["zookeeper-timeout"],
        )
    if registration is not None and server.metrics is not None:
        server.metrics.register(RegistrationCollector(registration))
        if config["etcd"] and etcd is not None:
            server.metrics.register(EtcdCollector(etcd))
    if registration is not None:
        if _port_of(config["advertise"]) == 0:
            _AdvertiseBoundPort(registration, listeners).setServiceParent(parent)
        # Stopped first: the server leaves the registry (its DELETE answered,
        # or its lease revoked) while it still serves; then the rest; then
        # the etcd client is closed.
        ordered = StopInOrder()
        if config["etcd"] and etcd is not None:
            CloseOnStop(etcd.close).setServiceParent(ordered)
        if config["zookeeper"]:
            CloseOnStop(zookeeper.close).setServiceParent(ordered)
        parent.setServiceParent(ordered)
        registration.setServiceParent(ordered)
        parent = ordered
    return Geerpc(
        service=parent,
        listeners=tuple(listeners),
        server=server,
        registry=registry,
        registration=registration,
    )


def makeService(config: Options, reactor: Any = None) -> IService:
    """twistd's entry point: :func:`build`, listening at once (see
    :func:`txgeerpc._twistd.make_service`); with ``--handover``, on the
    sockets a running server hands over, if one does; with ``--workers N``
    (more than 1), the workers serve and this process supervises them."""
    if not config["handover"] and config["workers"] == 1:
        return make_service(Options.tapname, build, config, reactor)
    return make_service(Options.tapname, _build_shared, config, reactor)


def _build_shared(config: Options, reactor: Any) -> Built:
    """:func:`build` for ``--handover`` and ``--workers``.

    :raises StartupError: the hand-over failed.
    """
    inherited = None
    if config["handover"]:
        inherited = handover.receive(config["handover"], len(config["listen"]))
    # With workers, this process serves once they all do: only then does it
    # say so ("serving" lines) and tell a process handing over "ready".
    serving = Gate() if config["workers"] > 1 else None
    built = build(
        config,
        reactor,
        adopt=inherited.fds if inherited is not None else None,
        announce_after=serving,
    )
    # Added where the listeners are: started after them, stopped with them.
    tree = built.listeners[0].parent
    if serving is not None:
        Supervisor(
            reactor,
            config.arguments,
            built.listeners,
            config["workers"],
            config["grace"],
            serving=serving,
            forward_hangup=any(
                isinstance(service, security_options.ReloadOnHangup) for service in tree or ()
            ),
        ).setServiceParent(tree)
    if config["handover"]:
        handover.HandoverService(
            reactor, config["handover"], built.listeners, reactor.stop, inherited, serving
        ).setServiceParent(tree)
    return built


def _has_port(description: str) -> bool:
    """Whether listening on the endpoint string ``description`` gets a TCP port."""
    kind, _, arguments = description.partition(":")
    kind = kind.strip().lower()
    if kind == "haproxy":  # PROXY protocol wrapped around another endpoint
        return _has_port(arguments)
    if kind == "systemd":
        return re.search(r"(?:^|:)domain=INET6?(?::|$)", arguments) is not None
    return kind in ("tcp", "tcp6", "ssl")


def _port_of(address: str) -> int | None:
    _, _, port = address.rpartition(":")
    return int(port) if port.isdigit() else None


def _with_port(address: str, port: int, *, only_if: int | None = None) -> str:
    """``address`` with its port replaced (only when it is ``only_if``, if given)."""
    if only_if is not None and _port_of(address) != only_if:
        return address
    return f"{address.rpartition(':')[0]}:{port}"


class _AdvertiseBoundPort(Service):
    """Started after the listeners, before the registration (heartbeat or
    etcd): ``--advertise HOST:0`` becomes HOST and the port the first TCP
    listener got.  (:class:`Options` refuses it with no TCP ``--listen``;
    this is a guard.)"""

    def __init__(self, registration: IRegistration, listeners: list[Listener]) -> None:
        self._registration = registration
        self._listeners = listeners

    def startService(self) -> None:
        super().startService()
        for listening in self._listeners:
            host = listening.port.getHost() if listening.port is not None else None
            bound = getattr(host, "port", None)
            if isinstance(bound, int):
                registration = self._registration
                registration.advertise = _with_port(registration.advertise, bound)
                return
        raise StartupError(
            "--advertise with port 0 needs a TCP --listen to take the port from, and "
            + ", ".join(listening.description for listening in self._listeners)
            + " has none"
        )
