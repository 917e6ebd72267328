"""
The GeeRPC registry (docs/protocol.md section 10) and its clients.

- :class:`RegistryResource`: the registry, a ``twisted.web`` resource over
  an :class:`~txgeerpc.interfaces.IRegistryStore` (:class:`MemoryStore`, or
  :class:`~txgeerpc.etcd.EtcdStore`), with :class:`RegistryPurge` dropping
  expired entries on a timer and :class:`SourceLimits` limiting each
  source's writes;
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
from ._limits import (
    DEFAULT_BURST,
    DEFAULT_ENTRIES_PER_SOURCE,
    DEFAULT_MAX_SOURCES,
    DEFAULT_RATE,
    IDENTITY_ATTRIBUTE,
    Refusal,
    SourceLimits,
    source_of,
)
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
    "DEFAULT_BURST",
    "DEFAULT_ENTRIES_PER_SOURCE",
    "DEFAULT_KEEP_ON_EMPTY",
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MAX_SOURCES",
    "DEFAULT_PERIOD",
    "DEFAULT_RATE",
    "DEFAULT_REFRESH",
    "DEFAULT_TIMEOUT",
    "IDENTITY_ATTRIBUTE",
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
    "Refusal",
    "RegistryDiscovery",
    "RegistryPurge",
    "RegistryResource",
    "Request",
    "SourceLimits",
    "agent_request",
    "fails_over",
    "listed_servers",
    "purge_interval",
    "registry_listing",
    "registry_urls",
    "source_of",
    "validate_address",
]
