"""
Where servers live in ZooKeeper: one node per server, named by its address,
under the prefix (``/geerpc/servers/``: ``/geerpc/servers/tcp@10.0.0.5:7001``).
A ``/`` (``unix@/run/x.sock``) or ``%`` in an address is percent-encoded in
the node's name.  The registry store (:mod:`._store`), direct registration
(:mod:`._registration`) and discovery (:mod:`._discovery`) all use these
nodes, so a server registered either way is listed by all.

The value is JSON: ``{"address": ..., "heartbeat": unix time}`` from a
registry (a persistent node, rewritten at every heartbeat, deleted by the
registries' purge when its heartbeats stop), ``{"address": ..., "registered":
unix time}`` from a server registered directly (an ephemeral node of its
session, written once).  The name is what counts.
"""

from __future__ import annotations

import json
from urllib.parse import quote, unquote

from ..registry import InvalidServerAddress, validate_address

DEFAULT_PREFIX = "/geerpc/servers/"


def check_prefix(prefix: str) -> str:
    """``prefix`` with one trailing ``/``, if usable.

    :raises ValueError: it is not an absolute ZooKeeper path.
    """
    if not prefix.startswith("/") or prefix.strip("/") == "" or "//" in prefix:
        raise ValueError(
            f"the ZooKeeper prefix must be a path like /geerpc/servers/, not {prefix!r}"
        )
    return prefix.rstrip("/") + "/"


def parent_of(prefix: str) -> str:
    """The node whose children the entries are."""
    return prefix.rstrip("/")


def node_name(address: str) -> str:
    return quote(address, safe="@:[].-_")


def server_path(prefix: str, address: str) -> str:
    return prefix + node_name(address)


def address_of(name: str) -> str | None:
    """The server address a node name names; None if it names none."""
    try:
        return validate_address(unquote(name, errors="strict"))
    except (UnicodeDecodeError, InvalidServerAddress):
        return None


def entry_value(address: str, heartbeat: float) -> bytes:
    return json.dumps({"address": address, "heartbeat": heartbeat}).encode()


def registration_value(address: str, registered: float) -> bytes:
    return json.dumps({"address": address, "registered": registered}).encode()


def heartbeat_of(value: bytes) -> float | None:
    """When the entry was last written by a registry, if its value says."""
    try:
        found = json.loads(value)
    except ValueError:
        return None
    heartbeat = found.get("heartbeat") if isinstance(found, dict) else None
    return float(heartbeat) if isinstance(heartbeat, int | float) else None
