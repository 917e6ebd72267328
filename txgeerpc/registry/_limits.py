"""
Per-source limits on a registry's writes (``POST``, ``DELETE``), so that one
client cannot fill the registry or take other servers' entries.

A *source* is the client's IP address (an IPv6 one's ``/64``), prefixed with
its identity when the write was authenticated (``alice@10.0.0.7``: one
credential from one address).  :class:`SourceLimits` gives each source:

- a **rate**: a token bucket of ``burst`` writes refilled at ``rate`` per
  second; past it, ``429`` with ``Retry-After``;
- an **entry limit**: a source lists at most ``entries_per_source`` servers;
  a heartbeat for one more is ``429`` (refreshing one it lists always works,
  rate permitting);
- **ownership**: a live entry belongs to the source that listed it; a
  ``POST`` or ``DELETE`` for it from another source is ``403`` (a stolen
  credential of one service cannot delete another's entry).  Once it expires
  (no heartbeat for the store's ``timeout``) anyone may list the address.

What it keeps is bounded: ``max_sources`` buckets (the least recently used
is forgotten past that: it gets a fresh bucket, as any new source would) and
one owner per address written (expired owners are dropped when the source
writes again, and all of them once there are ``128 * entries_per_source``).  The limits are
this process's: registries sharing an etcd store each keep their own.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime

DEFAULT_RATE = 10.0
"""Writes per second a source gets (a heartbeat every 100 s per server: a
thousand servers behind one address)."""
DEFAULT_BURST = 100
"""Writes a source may send at once (a host's servers starting together)."""
DEFAULT_ENTRIES_PER_SOURCE = 100
"""Servers one source may list at once."""
DEFAULT_MAX_SOURCES = 10_000
"""Sources whose buckets are remembered at once."""

IDENTITY_ATTRIBUTE = "txgeerpc_identity"
"""The attribute of a ``twisted.web`` request that holds the identity its
credentials proved (set by the access rule that authenticated it)."""


@attrs.frozen
class Refusal:
    """Why a write is refused: the HTTP status, a one-line text, and (``429``)
    the seconds to wait."""

    status: int
    text: str
    retry_after: float | None = None


def source_of(host: str | None, identity: str | None = None) -> str:
    """The source of a write from ``host`` (``None``: a UNIX socket) by
    ``identity``: ``identity@host``, or ``host``; an IPv6 host's ``/64``."""
    where = host or "unix"
    if host is not None and ":" in host:
        try:
            where = str(ipaddress.ip_network(f"{host}/64", strict=False))
        except ValueError:
            pass
    return f"{identity}@{where}" if identity else where


class SourceLimits:
    """The rate, entry limit and ownership of each source (see the module).

    :param clock: where time comes from.
    :param timeout: seconds an entry lives after its last heartbeat (the
        store's; 0: forever).
    :param rate: writes per second per source (``inf``: no rate limit).
    :param burst: writes a source may send at once.
    :param entries_per_source: servers a source may list at once.
    :param max_sources: buckets remembered at once.
    :raises ValueError: a limit that is not positive.
    :ivar counts: refusals so far: ``rate`` (too fast), ``entries`` (the
        source lists its most already), ``owner`` (another source's entry).
    """

    def __init__(
        self,
        clock: IReactorTime,
        timeout: float,
        *,
        rate: float = DEFAULT_RATE,
        burst: int = DEFAULT_BURST,
        entries_per_source: int = DEFAULT_ENTRIES_PER_SOURCE,
        max_sources: int = DEFAULT_MAX_SOURCES,
    ) -> None:
        for name, value in (
            ("rate", rate),
            ("burst", burst),
            ("entries_per_source", entries_per_source),
            ("max_sources", max_sources),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be more than 0, got {value}")
        self.clock = clock
        self.timeout = timeout
        self.rate = rate
        self.burst = burst
        self.entries_per_source = entries_per_source
        self.max_sources = max_sources
        self.counts = {"rate": 0, "entries": 0, "owner": 0}
        # source -> (tokens, when they were counted)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        # address -> (source, last write); source -> its addresses
        self._owners: dict[str, tuple[str, float]] = {}
        self._owned: dict[str, set[str]] = {}
        self._prune_above = 2 * entries_per_source * 64

    def check(self, source: str, method: bytes, address: str) -> Refusal | None:
        """Whether ``source`` may write (``method``) ``address`` now; a write
        let through is taken from its bucket (call :meth:`listed` or
        :meth:`left` once the store has done it)."""
        now = self.clock.seconds()
        owner = self._owner(address, now)
        if owner is not None and owner != source:
            self.counts["owner"] += 1
            return Refusal(403, f"{address} is listed by another source")
        if method == b"POST" and owner is None:
            held = self._live_owned(source, now)
            if held >= self.entries_per_source:
                self.counts["entries"] += 1
                return Refusal(
                    429,
                    f"this source lists {held} servers already, the most it may",
                    retry_after=self.timeout or None,
                )
        wait = self._take(source, now)
        if wait is not None:
            self.counts["rate"] += 1
            return Refusal(
                429, f"too many registry writes from this source (at most {self.rate:g}/s)", wait
            )
        return None

    def listed(self, source: str, address: str) -> None:
        """``source`` listed (or refreshed) ``address``."""
        now = self.clock.seconds()
        previous = self._owners.get(address)
        if previous is not None and previous[0] != source:
            self._disown(address, previous[0])
        self._owners[address] = (source, now)
        self._owned.setdefault(source, set()).add(address)
        if len(self._owners) > self._prune_above:
            self._prune(now)

    def left(self, address: str) -> None:
        """``address`` was deregistered."""
        previous = self._owners.pop(address, None)
        if previous is not None:
            self._disown(address, previous[0])

    def owned(self, source: str) -> int:
        """Live entries ``source`` lists now."""
        return self._live_owned(source, self.clock.seconds())

    @property
    def sources(self) -> int:
        """Buckets remembered now."""
        return len(self._buckets)

    def _alive(self, last: float, now: float) -> bool:
        return self.timeout <= 0 or last + self.timeout > now

    def _owner(self, address: str, now: float) -> str | None:
        found = self._owners.get(address)
        if found is None or not self._alive(found[1], now):
            return None
        return found[0]

    def _live_owned(self, source: str, now: float) -> int:
        addresses = self._owned.get(source)
        if not addresses:
            return 0
        for address in [a for a in addresses if not self._alive(self._owners[a][1], now)]:
            self.left(address)
        return len(self._owned.get(source, ()))

    def _disown(self, address: str, source: str) -> None:
        addresses = self._owned.get(source)
        if addresses is not None:
            addresses.discard(address)
            if not addresses:
                del self._owned[source]

    def _prune(self, now: float) -> None:
        for address in [a for a, (_, last) in self._owners.items() if not self._alive(last, now)]:
            self.left(address)

    def _take(self, source: str, now: float) -> float | None:
        """Take a write from ``source``'s bucket: ``None``, or the seconds
        until it may write again."""
        if math.isinf(self.rate):
            return None
        buckets = self._buckets
        tokens, then = buckets.pop(source, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens < 1.0:
            buckets[source] = (tokens, now)
            return (1.0 - tokens) / self.rate
        buckets[source] = (tokens - 1.0, now)
        while len(buckets) > self.max_sources:
            buckets.popitem(last=False)  # the least recently used
        return None

    def describe(self) -> dict[str, Any]:
        """The limits and the refusals, for a JSON page."""
        return {
            "rate": self.rate,
            "burst": self.burst,
            "entries_per_source": self.entries_per_source,
            "sources": len(self._buckets),
            "refused": dict(self.counts),
        }
