"""
Admission control shared by every connection of a server: how many
connections it takes (in all, and from one peer), what happens when it is
full, the memory budget for requests being received, and the counts of
connections refused or closed by a limit (what the debug page shows).

Transport-free: connections are any objects with the small surface
:class:`Admission` and :class:`ReceiveBudget` call (``idle()``, ``fresh()``,
``evict()``; ``budget_granted()``); the protocols that use them are in
``_one_port`` and ``_server_protocol``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

DEFAULT_RECEIVE_BUDGET = 64 * 1024 * 1024
"""Bytes of partially received requests all connections may hold together
(beyond :data:`FREE_PARTIAL` each), unless the largest message is bigger."""

FREE_PARTIAL = 64 * 1024
"""Bytes of a partially received request a connection holds outside the
shared budget: a small request never waits for it."""

_FALLBACK_DESCRIPTORS = 1024

# What the counters are called (the debug page's JSON keys).
REFUSED_TOTAL = "refused_max_connections"
REFUSED_PER_PEER = "refused_per_peer"
EVICTED_IDLE = "evicted_idle"
HANDSHAKE_TIMEOUT = "handshake_timeout"
IDLE_TIMEOUT = "idle_timeout"
MESSAGE_TIMEOUT = "message_timeout"
HTTP_IDLE_TIMEOUT = "http_idle_timeout"
BUDGET_WAITS = "receive_budget_waits"

COUNTERS = (
    REFUSED_TOTAL,
    REFUSED_PER_PEER,
    EVICTED_IDLE,
    HANDSHAKE_TIMEOUT,
    IDLE_TIMEOUT,
    MESSAGE_TIMEOUT,
    HTTP_IDLE_TIMEOUT,
    BUDGET_WAITS,
)
"""Every counter, in the order the debug page lists them."""


def descriptor_limit() -> int:
    """The process's soft limit on open files (``RLIMIT_NOFILE``); 1024 where
    it cannot be read, or is unlimited."""
    try:
        import resource
    except ImportError:  # not POSIX
        return _FALLBACK_DESCRIPTORS
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return _FALLBACK_DESCRIPTORS
    return int(soft)


def default_max_connections(descriptors: int | None = None) -> int:
    """Connections a server takes by default: the descriptor limit less a
    reserve for everything else the process opens (listening ports, log files,
    registry and etcd clients, the connection being accepted): an eighth of
    the limit, and at least 64.  At least 8."""
    if descriptors is None:
        descriptors = descriptor_limit()
    return max(8, descriptors - max(64, descriptors // 8))


def default_max_per_peer(max_connections: int) -> int:
    """Connections one peer (IP address) may hold by default: half the total,
    so one peer can never take them all."""
    return max(1, max_connections // 2)


class Counters:
    """Connections refused or closed by a limit, by :data:`COUNTERS` name;
    and the server's other counts the metrics export (plain attributes)."""

    def __init__(self) -> None:
        self._counts = dict.fromkeys(COUNTERS, 0)
        self.bytes_in = 0
        """Bytes read on RPC streams (after the sniffer: CONNECT heads excluded)."""
        self.bytes_out = 0
        """Bytes of replies written on RPC streams."""
        self.unknown_methods = 0
        """Requests naming no registered ``Service.Method``."""
        self.handshake_failures: dict[str, int] = {}
        """Connections closed before they were served, by kind
        (``bad_option``, ``unsupported_codec``, ``unrecognised_protocol``,
        ``bad_connect``, ``tls_not_served``, ``tls_inside_tls``,
        ``plaintext_on_tls_only``; timeouts are :data:`HANDSHAKE_TIMEOUT`)."""
        self.protocol_errors: dict[str, int] = {}
        """Streams closed for a protocol error after the Option, by kind
        (``message_too_large``, ``bad_frame``, ``bad_header``)."""

    def failed(self, counts: dict[str, int], kind: str) -> None:
        """Count one more ``kind`` in ``counts`` (:attr:`handshake_failures`
        or :attr:`protocol_errors`)."""
        counts[kind] = counts.get(kind, 0) + 1

    def add(self, name: str) -> None:
        """Count one more ``name``."""
        self._counts[name] += 1

    def __getitem__(self, name: str) -> int:
        return self._counts[name]

    def as_dict(self) -> dict[str, int]:
        """Every count, in :data:`COUNTERS` order."""
        return dict(self._counts)


class Admission:
    """The connections of a server's ports, least recently active first.

    A new connection is refused (and counted) when its peer already holds
    ``max_per_peer``.  When ``max_connections`` are open, the least recently
    active *idle* connection is closed to make room (one that never completed
    a request first, then any), so idle connections can never lock new
    clients out; only when none is idle is the new connection refused.

    Connections are objects with ``idle() -> bool`` (nothing in flight, no
    request half received), ``fresh() -> bool`` (no request completed yet)
    and ``evict()`` (close at once).

    :param max_connections: connections open at once, at most.
    :param max_per_peer: connections from one IP address, at most.
    :param counters: where refusals and evictions are counted.
    """

    def __init__(self, max_connections: int, max_per_peer: int, counters: Counters) -> None:
        if max_connections < 1 or max_per_peer < 1:
            raise ValueError("connection limits must be positive")
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.counters = counters
        self._open: OrderedDict[Any, str | None] = OrderedDict()
        self._per_peer: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, connection: Any, peer: str | None) -> bool:
        """Take ``connection`` from ``peer`` (an IP address; ``None`` for a
        peer with none, such as a UNIX socket's, never limited per peer).
        False when it is refused (counted): the caller closes it."""
        if peer is not None and self._per_peer.get(peer, 0) >= self.max_per_peer:
            self.counters.add(REFUSED_PER_PEER)
            return False
        if len(self._open) >= self.max_connections:
            victim = self._idle_victim()
            if victim is None:
                self.counters.add(REFUSED_TOTAL)
                return False
            self.counters.add(EVICTED_IDLE)
            self.release(victim)
            victim.evict()
        self._open[connection] = peer
        if peer is not None:
            self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        return True

    def _idle_victim(self) -> Any:
        fallback = None
        for candidate in self._open:
            if candidate.idle():
                if candidate.fresh():
                    return candidate
                if fallback is None:
                    fallback = candidate
        return fallback

    def touch(self, connection: Any) -> None:
        """``connection`` was active: it is evicted last."""
        if connection in self._open:
            self._open.move_to_end(connection)

    def release(self, connection: Any) -> None:
        """``connection`` is gone (or going); again is harmless."""
        if connection not in self._open:
            return
        peer = self._open.pop(connection)
        if peer is not None:
            left = self._per_peer[peer] - 1
            if left:
                self._per_peer[peer] = left
            else:
                del self._per_peer[peer]


class ReceiveBudget:
    """Memory for requests being received, shared by every connection.

    A connection whose partially received request passes
    :data:`FREE_PARTIAL` bytes reserves ``reservation`` bytes (the largest
    message) of ``budget`` until it is back under that (the request is
    complete).  When the budget is spent, the connection waits, unread, until
    a reservation is given back; waiters are served in order and told with
    ``budget_granted()``.

    :param budget: bytes that may be reserved at once.
    :param reservation: bytes one large request reserves.
    :param counters: where waits are counted.
    """

    def __init__(self, budget: int, reservation: int, counters: Counters) -> None:
        if budget < reservation:
            raise ValueError(
                f"the receive budget ({budget} bytes) must hold at least one message "
                f"of the largest size ({reservation} bytes)"
            )
        self.budget = budget
        self.reservation = reservation
        self.counters = counters
        self._holders: set[Any] = set()
        self._waiting: deque[Any] = deque()

    @property
    def reserved(self) -> int:
        """Bytes reserved now."""
        return len(self._holders) * self.reservation

    def charge(self, connection: Any) -> bool:
        """``connection`` holds a large partial request: True if it holds (or
        now got) a reservation; False if it must wait (it is queued)."""
        if connection in self._holders:
            return True
        if self.reserved + self.reservation <= self.budget and not self._waiting:
            self._holders.add(connection)
            return True
        if connection not in self._waiting:
            self._waiting.append(connection)
            self.counters.add(BUDGET_WAITS)
        return False

    def release(self, connection: Any) -> None:
        """``connection`` no longer holds a large partial request (or is
        gone): its reservation goes to the next waiter."""
        if connection in self._holders:
            self._holders.discard(connection)
            self._grant()
        elif connection in self._waiting:
            self._waiting.remove(connection)

    def _grant(self) -> None:
        while self._waiting and self.reserved + self.reservation <= self.budget:
            waiter = self._waiting.popleft()
            self._holders.add(waiter)
            waiter.budget_granted()


__all__: list[str] = []  # private: used by the protocols, the server and the debug page
