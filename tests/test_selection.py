"""Server selection: deterministic with a seeded random source."""

from __future__ import annotations

import collections
import random

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import txgeerpc.selection
from txgeerpc.errors import NoServers
from txgeerpc.interfaces import ILoadAwareSelector, ISelector
from txgeerpc.selection import (
    ConsistentHash,
    PowerOfTwoChoices,
    RandomSelect,
    RoundRobinSelect,
    WeightedRoundRobin,
)

SERVERS = ["tcp@a:1", "tcp@b:1", "tcp@c:1"]


class SelectionTests(SynchronousTestCase):
    def test_every_selector_provides_iselector(self) -> None:
        for selector in [
            RandomSelect(),
            RoundRobinSelect(),
            WeightedRoundRobin({}),
            ConsistentHash(),
            PowerOfTwoChoices(),
        ]:
            self.assertTrue(verifyObject(ISelector, selector), selector)
        self.assertTrue(verifyObject(ILoadAwareSelector, PowerOfTwoChoices()))
        self.assertFalse(ILoadAwareSelector.providedBy(RoundRobinSelect()))

    def test_exports(self) -> None:
        self.assertEqual(
            sorted(txgeerpc.selection.__all__),
            [
                "ConsistentHash",
                "PowerOfTwoChoices",
                "RandomSelect",
                "RoundRobinSelect",
                "WeightedRoundRobin",
            ],
        )
        for name in txgeerpc.selection.__all__:
            self.assertTrue(hasattr(txgeerpc.selection, name), name)

    def test_every_selector_refuses_an_empty_list(self) -> None:
        for selector in [
            RandomSelect(random.Random(1)),
            RoundRobinSelect(random.Random(1)),
            WeightedRoundRobin({}),
            ConsistentHash(),
            PowerOfTwoChoices(lambda server: 0, random.Random(1)),
        ]:
            with self.assertRaises(NoServers):
                selector.select([], key="k")

    def test_random_is_seeded_and_covers_every_server(self) -> None:
        first, second = RandomSelect(random.Random(7)), RandomSelect(random.Random(7))
        self.assertEqual(
            [first.select(SERVERS) for _ in range(20)], [second.select(SERVERS) for _ in range(20)]
        )
        selector = RandomSelect(random.Random(7))
        counts = collections.Counter(selector.select(SERVERS) for _ in range(3000))
        self.assertEqual(set(counts), set(SERVERS))
        self.assertTrue(all(800 < count < 1200 for count in counts.values()), counts)

    def test_round_robin_starts_at_random_then_steps_by_one(self) -> None:
        start = random.Random(3).randrange(2**31 - 1) % 3
        selector = RoundRobinSelect(random.Random(3))
        picks = [selector.select(SERVERS) for _ in range(6)]
        self.assertEqual(picks, [SERVERS[(start + i) % 3] for i in range(6)])
        # The list may change between calls: the index wraps over the new one.
        self.assertIn(selector.select(SERVERS[:2]), SERVERS[:2])

    def test_smooth_weighted_round_robin(self) -> None:
        selector = WeightedRoundRobin({"a": 5, "b": 1, "c": 1})
        self.assertEqual("".join(selector.select(["a", "b", "c"]) for _ in range(7)), "aabacaa")
        counts = collections.Counter(selector.select(["a", "b", "c"]) for _ in range(700))
        self.assertEqual(counts, {"a": 500, "b": 100, "c": 100})

    def test_consistent_hash_is_stable_and_moves_only_a_leaving_servers_keys(self) -> None:
        selector = ConsistentHash()
        keys = [f"user-{n}" for n in range(2000)]
        before = {key: selector.select(SERVERS, key=key) for key in keys}
        self.assertEqual(before, {key: selector.select(SERVERS, key=key) for key in keys})
        self.assertEqual(set(before.values()), set(SERVERS))
        after = {key: selector.select(SERVERS[:2], key=key) for key in keys}
        moved = [key for key in keys if before[key] != after[key]]
        self.assertEqual({before[key] for key in moved}, {"tcp@c:1"})
        with self.assertRaises(ValueError):
            selector.select(SERVERS)

    def test_power_of_two_choices_prefers_the_less_busy(self) -> None:
        load = {"tcp@a:1": 10, "tcp@b:1": 0, "tcp@c:1": 10}
        selector = PowerOfTwoChoices(load.__getitem__, random.Random(5))
        picks = collections.Counter(selector.select(SERVERS) for _ in range(300))
        # b wins whenever it is one of the two drawn (2 of the 3 pairs).
        self.assertTrue(180 < picks["tcp@b:1"] < 220, picks)
        self.assertEqual(PowerOfTwoChoices(load.__getitem__).select(["x"]), "x")
