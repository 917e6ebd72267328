"""
Where servers live in etcd: one key per server, ``PREFIX + proto@addr``,
attached to a lease.  The registry store (:mod:`._store`), direct
registration (:mod:`._registration`) and discovery (:mod:`._discovery`) all
use these keys, so a server registered either way is listed by both.

The value is JSON: ``{"address": ..., "heartbeat": unix time}`` from a
registry (rewritten at every heartbeat), ``{"address": ..., "registered":
unix time, "ttl": seconds}`` from a server registered directly (written once:
its lease renewals write nothing).  The key is what counts (a value written
by hand, or empty, is fine).
"""

from __future__ import annotations

import json

from ..registry import InvalidServerAddress, validate_address

DEFAULT_PREFIX = "/geerpc/servers/"


def check_prefix(prefix: str) -> str:
    """``prefix`` if usable as one.

    :raises ValueError: it is empty.
    """
    if not prefix:
        raise ValueError("the etcd key prefix must not be empty")
    return prefix


def server_key(prefix: str, address: str) -> bytes:
    return (prefix + address).encode("utf-8")


def address_of(prefix: bytes, key: bytes) -> str | None:
    """The server address a key under ``prefix`` names; None if it names
    none (a key put there by hand)."""
    if not key.startswith(prefix):
        return None
    try:
        return validate_address(key[len(prefix) :].decode("utf-8"))
    except (UnicodeDecodeError, InvalidServerAddress):
        return None


def entry_value(address: str, heartbeat: float) -> bytes:
    return json.dumps({"address": address, "heartbeat": heartbeat}).encode()


def registration_value(address: str, registered: float, ttl: int) -> bytes:
    return json.dumps({"address": address, "registered": registered, "ttl": ttl}).encode()


def heartbeat_of(value: bytes) -> float | None:
    """When the entry was last written, if its value says."""
    try:
        found = json.loads(value)
    except ValueError:
        return None
    heartbeat = found.get("heartbeat") if isinstance(found, dict) else None
    return float(heartbeat) if isinstance(heartbeat, int | float) else None
