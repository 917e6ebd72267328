"""
The registry's HTTP protocol (docs/protocol.md section 10) without I/O: its header
names, what a valid server address is, what an answer is and what it lists,
and which answers send a client on to another registry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

from twisted.internet.defer import Deferred

from ..errors import InvalidServerAddress as InvalidServerAddress

SERVER_HEADER = b"X-Geerpc-Server"
SERVERS_HEADER = b"X-Geerpc-Servers"
TIMEOUT_HEADER = b"X-Geerpc-Timeout"
"""Sent with every heartbeat answer: the TTL, so servers can beat in time
(a txgeerpc extension; Go servers ignore it)."""
MAX_LISTING_HEADER = 8192
"""A JSON answer carries ``X-Geerpc-Servers`` too while it is at most this
long: HTTP clients limit header lines (Twisted's to 16 KiB); the body has
no such limit."""

_PROTOCOLS = ("tcp", "tcp4", "tcp6", "http", "unix")
# An empty host is the local system (Go dials ":port" so); IPv6 literals may
# carry a zone ("[fe80::1%eth0]").
_HOST_PORT = re.compile(
    r"(\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9.\-_]+)?\]|[A-Za-z0-9.\-_]*):([0-9]{1,5})\Z"
)
_MAX_ADDRESS = 512


def validate_address(address: str) -> str:
    """``address`` if it is a ``proto@addr`` a client can dial.

    :raises InvalidServerAddress: with the reason.
    """
    if len(address) > _MAX_ADDRESS:
        raise InvalidServerAddress(f"longer than {_MAX_ADDRESS} characters")
    if "," in address or any(char.isspace() for char in address):
        raise InvalidServerAddress("commas and whitespace are not allowed")
    protocol, at, rest = address.partition("@")
    if "@" in rest:
        raise InvalidServerAddress("one @ only (Go clients split on every @)")
    if not at or protocol not in _PROTOCOLS:
        raise InvalidServerAddress(f"expected one of {', '.join(_PROTOCOLS)} then @")
    if protocol == "unix":
        if not rest.startswith("/"):
            raise InvalidServerAddress("a unix address is an absolute path")
        return address
    match = _HOST_PORT.match(rest)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise InvalidServerAddress("expected host:port")
    return address


class Answer(NamedTuple):
    """What a registry answered."""

    status: int
    headers: dict[bytes, bytes]
    """Response headers, names in lower case (the first value of each)."""
    body: bytes = b""


Request = Callable[[bytes, str, dict[bytes, bytes], float], "Deferred[Answer]"]
"""``(method, url, headers, timeout) -> Deferred[Answer]``."""


def registry_urls(registry_url: str | Sequence[str]) -> tuple[str, ...]:
    """One registry URL or several, as a tuple.

    :raises ValueError: no URL at all.
    """
    urls = (registry_url,) if isinstance(registry_url, str) else tuple(registry_url)
    if not urls:
        raise ValueError("no registry URL given")
    return urls


def fails_over(status: int) -> bool:
    """Whether a registry that answered ``status`` to a heartbeat (or a
    refresh) should be passed over for another one: yes for 5xx (unavailable,
    full, a broken proxy) and the 4xx that are about that server (404 and 405:
    not a registry there; 408, 429); no for the other 4xx, which are about the
    request (a bad address), so any registry would answer the same."""
    return not 400 <= status < 500 or status in (404, 405, 408, 429)


def refusal(status: int, body: bytes) -> str:
    """What a registry's error answer says: its status and the first line of
    its body ("registry full: ..."), if any."""
    said = body.decode("utf-8", "replace").strip().split("\n", 1)[0][:200]
    return f"the registry answered {status}: {said}" if said else f"the registry answered {status}"


def listed_servers(answer: Answer) -> list[str]:
    """The servers a registry's ``GET`` answer lists, sorted: from its JSON
    body when it sent one, else from ``X-Geerpc-Servers``.

    :raises ValueError: a JSON body that is not a registry listing.
    """
    return sorted(registry_listing(answer))


def registry_listing(answer: Answer) -> dict[str, float | None]:
    """Each server a registry's ``GET`` answer lists, with the seconds since
    its last heartbeat when the registry says (a txgeerpc registry's JSON).

    :raises ValueError: a JSON body that is not a registry listing.
    """
    content_type = answer.headers.get(b"content-type", b"")
    if not content_type.startswith(b"application/json"):
        raw = answer.headers.get(SERVERS_HEADER.lower(), b"").decode("latin-1").split(",")
        return {server.strip(): None for server in raw if server.strip()}
    try:
        entries = [
            (entry["address"], entry.get("age_seconds"))
            for entry in json.loads(answer.body)["servers"]
        ]
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ValueError(f"the registry sent a JSON body that lists no servers ({error})") from None
    if not all(isinstance(address, str) for address, _ in entries):
        raise ValueError("the registry sent a JSON listing with addresses that are not strings")
    return {
        address.strip(): float(age) if isinstance(age, (int, float)) else None
        for address, age in entries
        if address.strip()
    }
