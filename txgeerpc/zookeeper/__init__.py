"""
ZooKeeper for txgeerpc: registration and discovery on a ZooKeeper ensemble,
through `kazoo <https://kazoo.readthedocs.io>`_ (``pip install
txgeerpc[zookeeper]``) running on its own threads, its answers handed to the
reactor (:class:`ZooKeeperClient`).

- :class:`ZooKeeperRegistration`: a server as an ephemeral node of its
  session (``twistd geerpc --zookeeper HOST:PORT,... --advertise ...``).
- :class:`ZooKeeperDiscovery`: the servers under the prefix, followed with
  watches (an :class:`~txgeerpc.xclient.XClient` takes it).
- :class:`ZooKeeperStore`: a registry's entries in ZooKeeper, shared by any
  number of registries (``twistd geerpc-registry --zookeeper ...``).
"""

from ._client import (
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SESSION_TIMEOUT,
    SessionState,
    Stat,
    ZooKeeperClient,
    ZooKeeperTLS,
    digest_acl,
    normalize_hosts,
)
from ._discovery import ZooKeeperDiscovery
from ._keys import DEFAULT_PREFIX
from ._keys import address_of as address_of
from ._keys import check_prefix as check_prefix
from ._keys import heartbeat_of as heartbeat_of
from ._keys import parent_of as parent_of
from ._registration import ZooKeeperRegistration
from ._store import ZooKeeperStore

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_SESSION_TIMEOUT",
    "SessionState",
    "Stat",
    "ZooKeeperClient",
    "ZooKeeperDiscovery",
    "ZooKeeperRegistration",
    "ZooKeeperStore",
    "ZooKeeperTLS",
    "digest_acl",
    "normalize_hosts",
]
