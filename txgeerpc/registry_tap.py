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
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.resource import Resource

from ._one_port import QuietSite, mount
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
    """Says at start which store the registry uses; closes its etcd client
    (if any) at stop, once the listeners have been told to stop."""

    _log = Logger()

    def __init__(self, description: str, etcd: Etcd | None = None) -> None:
        self.description = description
        self.etcd = etcd

    def startService(self) -> None:
        super().startService()
        self._log.info("registry store: {store}", store=self.description)

    def stopService(self) -> Any:
        super().stopService()
        return self.etcd.close() if self.etcd is not None else None


def makeService(config: Options, reactor: Any = None) -> IService:
    """The registry service tree: the store, a purge timer and one listener
    per --listen (stopped in reverse order: the store's etcd client last)."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    store: IRegistryStore
    if config["etcd"]:
        etcd = _options.client(config, reactor)
        store = EtcdStore(
            etcd,
            timeout=config["timeout"],
            prefix=config["etcd-prefix"],
            max_entries=config["max-entries"],
        )
        described = _StoreService(
            f"etcd at {config['etcd']}, prefix {config['etcd-prefix']!r}"
            f" (timeout {config['timeout']:g}s, at most {config['max-entries']} entries)",
            etcd,
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
    parent = MultiService()
    described.setServiceParent(parent)
    RegistryPurge(store, reactor, purge_interval(config["timeout"])).setServiceParent(parent)
    for description in config["listen"]:
        StreamServerEndpointService(serverFromString(reactor, description), site).setServiceParent(
            parent
        )
    parent.store = store  # type: ignore[attr-defined]
    return parent
