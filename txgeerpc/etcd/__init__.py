"""
etcd (v3) for txgeerpc: a small Twisted client for etcd's JSON gateway
(:class:`EtcdClient`), and what txgeerpc builds on it.

The interface the rest of txgeerpc uses is
:class:`~txgeerpc.interfaces.IEtcd` (also exported here as ``Etcd``, and its
watches' as ``Watch``); :class:`~txgeerpc.testing.FakeEtcd` is an in-memory
one for tests.
"""

from ..interfaces import IEtcd, IEtcdWatch
from ._api import EventsListener, KeyValue, Range, WatchEvent

# Not public API (not in __all__): what txgeerpc's twistd plugins, CLI and
# test kit use of the package.
from ._client import DEFAULT_REQUEST_TIMEOUT as DEFAULT_REQUEST_TIMEOUT
from ._client import EtcdClient, EtcdTLS, normalize_endpoints
from ._discovery import EtcdDiscovery
from ._fake import FakeEtcd as FakeEtcd
from ._keys import DEFAULT_PREFIX as DEFAULT_PREFIX
from ._keys import address_of as address_of
from ._keys import heartbeat_of as heartbeat_of
from ._registration import DEFAULT_TTL as DEFAULT_TTL
from ._registration import EtcdRegistration
from ._store import EtcdStore

Etcd = IEtcd
"""The name :class:`~txgeerpc.interfaces.IEtcd` had here (a ``Protocol`` then)."""
Watch = IEtcdWatch
"""The name :class:`~txgeerpc.interfaces.IEtcdWatch` had here."""

__all__ = [
    "Etcd",
    "EtcdClient",
    "EtcdDiscovery",
    "EtcdRegistration",
    "EtcdStore",
    "EtcdTLS",
    "EventsListener",
    "KeyValue",
    "Range",
    "Watch",
    "WatchEvent",
    "normalize_endpoints",
]
