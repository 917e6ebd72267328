"""
etcd (v3) for txgeerpc: a small Twisted client for etcd's JSON gateway
(:class:`EtcdClient`), and what txgeerpc builds on it.

The interface the rest of txgeerpc uses is :class:`Etcd`;
:class:`~txgeerpc.testing.FakeEtcd` is an in-memory one for tests.
"""

from ._api import Etcd, EventsListener, KeyValue, Range, Watch, WatchEvent
from ._client import EtcdClient, EtcdTLS, normalize_endpoints
from ._discovery import EtcdDiscovery
from ._registration import EtcdRegistration
from ._store import EtcdStore

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
