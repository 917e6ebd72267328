"""
Choosing a server for a call: pure functions of the server list and the
selector's own state, testable with a seeded random source.

- :class:`RandomSelect` and :class:`RoundRobinSelect` have the reference's
  semantics (round robin starts at a random index, then steps by one over
  whatever list it is given);
- :class:`WeightedRoundRobin` is smooth weighted round robin (nginx's:
  weights 5, 1, 1 give ``a a b a c a a``);
- :class:`ConsistentHash` maps a caller-given key to the same server while
  the list does not change, and moves only the keys of a server that leaves;
- :class:`PowerOfTwoChoices` picks the less busy of two random servers.

Each provides :class:`~txgeerpc.interfaces.ISelector` (and
:class:`PowerOfTwoChoices` :class:`~txgeerpc.interfaces.ILoadAwareSelector`);
every ``select`` raises :class:`~txgeerpc.errors.NoServers` on an empty list.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Callable, Mapping, Sequence

from zope.interface import implementer

from .errors import NoServers
from .interfaces import ILoadAwareSelector, ISelector

__all__ = [
    "ConsistentHash",
    "PowerOfTwoChoices",
    "RandomSelect",
    "RoundRobinSelect",
    "WeightedRoundRobin",
]


@implementer(ISelector)
class RandomSelect:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def select(self, servers: Sequence[str], key: str | None = None) -> str:
        if not servers:
            raise NoServers()
        return servers[self._rng.randrange(len(servers))]


@implementer(ISelector)
class RoundRobinSelect:
    def __init__(self, rng: random.Random | None = None) -> None:
        # As the reference: a random start, so that clients do not all begin
        # with the same server.
        self._index = (rng or random.Random()).randrange(2**31 - 1)

    def select(self, servers: Sequence[str], key: str | None = None) -> str:
        if not servers:
            raise NoServers()
        chosen = servers[self._index % len(servers)]
        self._index = (self._index + 1) % len(servers)
        return chosen


@implementer(ISelector)
class WeightedRoundRobin:
    """Smooth weighted round robin; servers without a weight weigh 1."""

    def __init__(self, weights: Mapping[str, int]) -> None:
        if any(weight < 0 for weight in weights.values()):
            raise ValueError("weights must not be negative")
        self._weights = dict(weights)
        self._current: dict[str, int] = {}

    def select(self, servers: Sequence[str], key: str | None = None) -> str:
        if not servers:
            raise NoServers()
        total = 0
        best: str | None = None
        for server in servers:
            weight = self._weights.get(server, 1)
            total += weight
            current = self._current.get(server, 0) + weight
            self._current[server] = current
            if best is None or current > self._current[best]:
                best = server
        assert best is not None
        self._current[best] -= total
        for gone in set(self._current) - set(servers):
            del self._current[gone]
        return best


@implementer(ISelector)
class ConsistentHash:
    """A hash ring with ``replicas`` points per server."""

    def __init__(self, replicas: int = 160) -> None:
        self._replicas = replicas
        self._ring_for: tuple[str, ...] = ()
        self._points: list[int] = []
        self._owners: list[str] = []

    @staticmethod
    def _hash(text: str) -> int:
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")

    def _ring(self, servers: Sequence[str]) -> None:
        wanted = tuple(sorted(servers))
        if wanted == self._ring_for:
            return
        points = sorted(
            (self._hash(f"{server}#{replica}"), server)
            for server in wanted
            for replica in range(self._replicas)
        )
        self._points = [point for point, _ in points]
        self._owners = [owner for _, owner in points]
        self._ring_for = wanted

    def select(self, servers: Sequence[str], key: str | None = None) -> str:
        if not servers:
            raise NoServers()
        if key is None:
            raise ValueError("ConsistentHash needs a key to hash")
        self._ring(servers)
        index = bisect.bisect(self._points, self._hash(key)) % len(self._points)
        return self._owners[index]


@implementer(ILoadAwareSelector)
class PowerOfTwoChoices:
    """Of two servers picked at random, the one with fewer calls in flight.

    :param in_flight: calls running on an address; an :class:`XClient` given
        this selector without one supplies its own count.
    """

    def __init__(
        self, in_flight: Callable[[str], int] | None = None, rng: random.Random | None = None
    ) -> None:
        self.in_flight = in_flight
        self._rng = rng or random.Random()

    def select(self, servers: Sequence[str], key: str | None = None) -> str:
        if not servers:
            raise NoServers()
        if len(servers) == 1:
            return servers[0]
        first, second = self._rng.sample(range(len(servers)), 2)
        a, b = servers[first], servers[second]
        if self.in_flight is None:
            raise TypeError("PowerOfTwoChoices needs in_flight (or an XClient to supply it)")
        return a if self.in_flight(a) <= self.in_flight(b) else b
