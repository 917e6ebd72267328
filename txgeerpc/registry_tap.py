"""
``twistd geerpc-registry``: a standalone GeeRPC registry (the twisted.web
resource of :mod:`txgeerpc.registry`), wire-compatible with Go's.  Entries
live in memory, or with ``--etcd`` in etcd (:class:`~txgeerpc.etcd._store.EtcdStore`),
where any number of registry processes share them.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from ._services import StopInOrder
from ._web import QuietSite, mount
from ._wire import DEFAULT_REGISTRY_PATH
from .etcd import Etcd, _options
from .etcd._store import EtcdStore
from .registry import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_TIMEOUT,
    IRegistryStore,
    MemoryStore,
    RegistryPurge,
    RegistryResource,
    purge_interval,
)
from .tap import _positive_int, non_negative_float

DEFAULT_LISTEN = "tcp:9999:interface=127.0.0.1"


class Options(usage.Options):
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
            non_negative_float,
        ],
        ["path", None, DEFAULT_REGISTRY_PATH, "HTTP path of the registry."],
        [
            "max-entries",
            None,
            DEFAULT_MAX_ENTRIES,
            "Servers the registry holds at most; a heartbeat from a new one when full "
            "is answered 503 (refreshing a listed one always works).",
            _positive_int,
        ],
        *_options.PARAMETERS,
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Twisted server endpoint string to listen on (repeatable).
        Default: tcp:9999:interface=127.0.0.1"""
        self["listen"].append(endpoint)

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if not self["path"].startswith("/"):
            raise usage.UsageError(f"--path must start with /, got {self['path']!r}")
        _options.check(self)


class _StoreService(Service):
    """Says at start which store the registry uses.  At stop (once the
    listeners have stopped: it is stopped last) it waits for the etcd
    store's operations under way, ``drain`` seconds at most, then closes
    the etcd client."""

    _log = Logger()

    def __init__(
        self,
        description: str,
        etcd: Etcd | None = None,
        *,
        store: EtcdStore | None = None,
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


def makeService(config: Options, reactor: Any = None) -> IService:
    """The registry service tree: the store, a purge timer and one listener
    per --listen (stopped in reverse order: the store's etcd client closed
    once the listeners have stopped and the requests under way have ended,
    or --etcd-timeout passed)."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    store: IRegistryStore
    if config["etcd"]:
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
    root = Resource()
    mount(root, config["path"], RegistryResource(store, reactor))
    site = QuietSite(root, reactor=reactor)
    site.quiet_paths.add(config["path"].encode())
    rest = MultiService()
    RegistryPurge(store, reactor, purge_interval(config["timeout"])).setServiceParent(rest)
    for description in config["listen"]:
        StreamServerEndpointService(serverFromString(reactor, description), site).setServiceParent(
            rest
        )
    parent = StopInOrder()
    described.setServiceParent(parent)
    rest.setServiceParent(parent)
    parent.store = store  # type: ignore[attr-defined]
    return parent
