"""
The GeeRPC registry (docs/protocol.md section 10) and its clients.

- :class:`RegistryResource`: the registry, a ``twisted.web`` resource over
  an :class:`~txgeerpc.interfaces.IRegistryStore` (:class:`MemoryStore`, or
  :class:`~txgeerpc.etcd.EtcdStore`), with :class:`RegistryPurge` dropping
  expired entries on a timer;
- :class:`Heartbeat`: a server keeping itself registered (an
  :class:`~txgeerpc.interfaces.IRegistration`);
- :class:`RegistryDiscovery`: the servers a registry lists, polled (an
  :class:`~txgeerpc.interfaces.IDiscovery`);
- :func:`agent_request`: the HTTP requests they make (a :data:`Request`).

Given several registries that share one list, the heartbeat and the
discovery ask the one that answered last and fail over to the next ones.
"""

from ._discovery import DEFAULT_KEEP_ON_EMPTY, DEFAULT_REFRESH, RegistryDiscovery
from ._heartbeat import DEFAULT_PERIOD, MAX_PERIOD, MIN_PERIOD, Heartbeat
from ._http import MAX_ANSWER_BODY, agent_request
from ._resource import RegistryResource
from ._store import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_TIMEOUT,
    Entry,
    MemoryStore,
    RegistryPurge,
    purge_interval,
)
from ._wire import (
    MAX_LISTING_HEADER,
    SERVER_HEADER,
    SERVERS_HEADER,
    TIMEOUT_HEADER,
    Answer,
    InvalidServerAddress,
    Request,
    fails_over,
    listed_servers,
    registry_listing,
    registry_urls,
    validate_address,
)

__all__ = [
    "DEFAULT_KEEP_ON_EMPTY",
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_PERIOD",
    "DEFAULT_REFRESH",
    "DEFAULT_TIMEOUT",
    "MAX_ANSWER_BODY",
    "MAX_LISTING_HEADER",
    "MAX_PERIOD",
    "MIN_PERIOD",
    "SERVERS_HEADER",
    "SERVER_HEADER",
    "TIMEOUT_HEADER",
    "Answer",
    "Entry",
    "Heartbeat",
    "InvalidServerAddress",
    "MemoryStore",
    "RegistryDiscovery",
    "RegistryPurge",
    "RegistryResource",
    "Request",
    "agent_request",
    "fails_over",
    "listed_servers",
    "purge_interval",
    "registry_listing",
    "registry_urls",
    "validate_address",
]
