"""
``twistd geerpc-registry``: a standalone GeeRPC registry (the twisted.web
resource of :mod:`txgeerpc.registry`), wire-compatible with Go's.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.python import usage
from twisted.web.resource import Resource

from ._one_port import QuietSite, mount
from ._wire import DEFAULT_REGISTRY_PATH
from .registry import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_TIMEOUT,
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
        "X-Geerpc-Servers (Go GeeRPC's registry protocol).  Try: curl -si "
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


def makeService(config: Options, reactor: Any = None) -> IService:
    """The registry service tree: a purge timer and one listener per --listen."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    store = MemoryStore(config["timeout"], max_entries=config["max-entries"])
    root = Resource()
    mount(root, config["path"], RegistryResource(store, reactor))
    site = QuietSite(root, reactor=reactor)
    site.quiet_paths.add(config["path"].encode())
    parent = MultiService()
    RegistryPurge(store, reactor, purge_interval(config["timeout"])).setServiceParent(parent)
    for description in config["listen"]:
        StreamServerEndpointService(serverFromString(reactor, description), site).setServiceParent(
            parent
        )
    parent.store = store  # type: ignore[attr-defined]
    return parent
