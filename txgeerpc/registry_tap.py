"""
``twistd geerpc-registry``: a standalone GeeRPC registry (the twisted.web
resource of :mod:`txgeerpc.registry`), wire-compatible with Go's.  Entries
live in memory, or with ``--etcd`` in etcd (:class:`~txgeerpc.etcd._store.EtcdStore`),
where any number of registry processes share them.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from . import _twistd_etcd as _options
from . import _twistd_security as _security
from . import _twistd_zookeeper as _zookeeper_options
from ._services import StopInOrder
from ._twistd import (
    Built,
    Listener,
    ServeOptions,
    make_service,
    metrics_resource,
    non_negative_seconds,
    positive_int,
)
from ._web import QuietSite, mount
from ._wire import DEFAULT_REGISTRY_PATH
from .etcd import Etcd, EtcdStore
from .interfaces import IRegistryStore
from .metrics import EtcdCollector, registry_metrics
from .registry import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_TIMEOUT,
    MemoryStore,
    RegistryPurge,
    RegistryResource,
    purge_interval,
)
from .zookeeper import ZooKeeperClient, ZooKeeperStore

__all__ = ["Options", "RegistryServer", "build", "makeService"]

DEFAULT_LISTEN = "tcp:9999:interface=127.0.0.1"


class Options(ServeOptions):
    tapname = "geerpc-registry"
    default_listen = DEFAULT_LISTEN
    synopsis = "[options]"
    longdesc = (
        "Serve a GeeRPC registry: servers POST heartbeats with X-Geerpc-Server, clients GET "
        "X-Geerpc-Servers (Go GeeRPC's registry protocol).  Entries live in memory, or with "
        "--etcd in etcd, where any number of registry processes share them.  Try: curl -si "
        "http://127.0.0.1:9999/_geerpc_/registry"
    )
    optParameters = [
        [
            "timeout",
            None,
            DEFAULT_TIMEOUT,
            "Seconds an entry lives after its last heartbeat (0: forever).",
            non_negative_seconds,
        ],
        ["path", None, DEFAULT_REGISTRY_PATH, "HTTP path of the registry."],
        [
            "max-entries",
            None,
            DEFAULT_MAX_ENTRIES,
            "Servers the registry holds at most; a heartbeat from a new one when full "
            "is answered 503 (refreshing a listed one always works).",
            positive_int,
        ],
        *_options.PARAMETERS,
        *_zookeeper_options.PARAMETERS,
        # TLS on its port, who may write, per-source limits (docs/security.md).
        *_security.REGISTRY_PARAMETERS,
    ]
    optFlags = [
        [
            "tls-require-client-cert",
            None,
            "Refuse TLS clients without a certificate from --tls-ca (during the handshake).",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["trust-network"] = []

    def opt_trust_network(self, spec: str) -> None:
        """NETWORK=IDENTITY: writes from NETWORK are IDENTITY's, with
        --registry-access authenticated (how Go servers, which send no token,
        are let in); repeatable, e.g. 10.0.0.0/8=go-servers."""
        _security.opt_trust_network(self, spec)

    def opt_listen(self, endpoint: str) -> None:
        """Twisted server endpoint string to listen on (repeatable).
        Default: tcp:9999:interface=127.0.0.1"""
        super().opt_listen(endpoint)

    def postOptions(self) -> None:
        super().postOptions()
        if not self["path"].startswith("/"):
            raise usage.UsageError(f"--path must start with /, got {self['path']!r}")
        _options.check(self)
        _zookeeper_options.check(self)
        _security.check_registry(self)


class _StoreService(Service):
    """Says at start which store the registry uses.  At stop (once the
    listeners have stopped: it is stopped last) it waits for the etcd
    store's operations under way, ``drain`` seconds at most, then closes
    the etcd client."""

    _log = Logger()

    def __init__(
        self,
        description: str,
        etcd: Etcd | ZooKeeperClient | None = None,
        *,
        store: EtcdStore | ZooKeeperStore | None = None,
        clock: IReactorTime | None = None,
        drain: float = 0.0,
    ) -> None:
        self.description = description
        self.etcd = etcd
        self._store = store
        self._clock = clock
        self._drain = drain

    def startService(self) -> None:
        super().startService()
        self._log.info("registry store: {store}", store=self.description)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        etcd = self.etcd
        if etcd is None:
            return None
        store = self._store
        if store is None or self._clock is None or not store.under_way:
            return etcd.close()
        idle = store.idle()
        idle.addTimeout(self._drain, self._clock)

        def drained(result: object) -> Deferred[None]:
            if isinstance(result, Failure):
                self._log.info(
                    "registry: closing the etcd client with {count} store operations"
                    " still under way after {drain}s",
                    count=store.under_way,
                    drain=f"{self._drain:g}",
                )
            return etcd.close()

        return idle.addBoth(drained)


@attrs.frozen
class RegistryServer(Built):
    """What ``twistd geerpc-registry``'s options build (:func:`build`).

    :ivar service: the service tree twistd runs.
    :ivar listeners: one per ``--listen``, in order.
    :ivar store: where the entries live.
    """

    store: IRegistryStore


def build(config: Options, reactor: Any) -> RegistryServer:
    """The registry service tree, listening on nothing yet: the store, a
    purge timer and one listener per --listen (stopped in reverse order: the
    store's etcd client closed once the listeners have stopped and the
    requests under way have ended, or --etcd-timeout passed).

    :raises StartupError: a ``--listen`` that cannot be used.
    """
    store: IRegistryStore
    etcd = None
    if config["zookeeper"]:
        zookeeper = _zookeeper_options.client(config, reactor)
        store = zookeeper_store = ZooKeeperStore(
            zookeeper,
            timeout=config["timeout"],
            prefix=config["zookeeper-prefix"],
            max_entries=config["max-entries"],
        )
        described = _StoreService(
            f"ZooKeeper at {config['zookeeper']}, prefix {config['zookeeper-prefix']!r}"
            f" (timeout {config['timeout']:g}s, at most {config['max-entries']} entries)",
            zookeeper,
            store=zookeeper_store,
            clock=reactor,
            drain=config["zookeeper-timeout"],
        )
    elif config["etcd"]:
        etcd = _options.client(config, reactor)
        store = etcd_store = EtcdStore(
            etcd,
            timeout=config["timeout"],
            prefix=config["etcd-prefix"],
            max_entries=config["max-entries"],
        )
        described = _StoreService(
            f"etcd at {config['etcd']}, prefix {config['etcd-prefix']!r}"
            f" (timeout {config['timeout']:g}s, at most {config['max-entries']} entries)",
            etcd,
            store=etcd_store,
            clock=reactor,
            drain=config["etcd-timeout"],
        )
    else:
        store = MemoryStore(config["timeout"], max_entries=config["max-entries"])
        described = _StoreService(
            f"memory (timeout {config['timeout']:g}s, at most {config['max-entries']} entries)"
        )
    security = _security.build_registry(config)
    limits = _security.source_limits(config, reactor, config["timeout"])
    root = Resource()
    registry = RegistryResource(store, reactor, limits=limits)
    mount(root, config["path"], registry)
    _security.guard_path(
        root,
        config["path"],
        security.access["registry"],
        security.web_guard,
        "registry",
        methods=(b"POST", b"DELETE", b"PUT"),
    )
    if config["metrics-path"].lower() != "none":
        metrics = registry_metrics(store)
        if etcd is not None:
            metrics.register(EtcdCollector(etcd))  # request latencies, fail-overs
        mount(root, config["metrics-path"], metrics_resource(metrics))
    site = QuietSite(root, reactor=reactor)
    site.quiet_paths.add(config["path"].encode())
    served: Any = site
    rest = MultiService()
    if security.tls is not None:
        # https only: the registry's port does not sniff (one protocol).
        served = TLSMemoryBIOFactory(security.tls, False, site)
    if security.tls is not None or security.tokens is not None:
        _security.ReloadOnHangup(reactor, security).setServiceParent(rest)
    RegistryPurge(store, reactor, purge_interval(config["timeout"])).setServiceParent(rest)
    listeners = tuple(Listener(reactor, description, served) for description in config["listen"])
    for listener in listeners:
        listener.setServiceParent(rest)
    parent = StopInOrder()
    described.setServiceParent(parent)
    rest.setServiceParent(parent)
    return RegistryServer(service=parent, listeners=listeners, store=store)


def makeService(config: Options, reactor: Any = None) -> IService:
    """twistd's entry point: :func:`build`, listening at once (see
    :func:`txgeerpc._twistd.make_service`)."""
    return make_service(Options.tapname, build, config, reactor)
