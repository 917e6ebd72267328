"""
Direct registration and discovery on a real etcd, with real processes: two
``twistd geerpc --etcd URL --advertise tcp@127.0.0.1:0 --ttl 2`` servers, and
an :class:`~txgeerpc.etcd.EtcdDiscovery` over an
:class:`~txgeerpc.etcd.EtcdClient` feeding an XClient on the test's reactor.

1. Discovery lists both servers, and calls reach both.
2. One server is SIGKILLed (by PID): its lease is no longer renewed, etcd
   expires it, and the watch tells discovery, which drops the server within
   TTL + 1 s of the kill (measured and printed).  Calls made all the while
   keep succeeding through the other server (fail-over; ``Arith.Multiply``
   is declared idempotent, so even a call in flight on the victim is retried).
3. The other server gets SIGTERM: it revokes its lease on the way out, so it
   leaves the list at once, well under the TTL.

Processes are spawned on the reactor (``tests/integration/test_cluster.py``'s
``Processes``) and killed by PID in a ``finally``; every client is closed and
the reactor is left as it was found.  Runs under pytest (pytest-twisted) and
under trial (the ``TestCase`` pytest does not collect).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests._etcd import EtcdCluster
from tests._processes import STARTUP_DEADLINE
from tests.integration.test_cluster import (
    Listing,
    Processes,
    ReactorBaseline,
    Twistd,
    registered,
)
from txgeerpc import connect
from txgeerpc.errors import GeeRPCError
from txgeerpc.etcd import EtcdClient, EtcdDiscovery
from txgeerpc.selection import RoundRobinSelect
from txgeerpc.xclient import FailMode, XClient

TTL = 2
"""The servers' --ttl: seconds their key outlives their last lease renewal."""
PERIOD = TTL / 3
"""How often the servers renew their leases."""
SLACK = 1.0
"""What TTL + SLACK allows beyond the TTL: etcd checks for expired leases
every 500 ms, then the delete travels the watch."""
METHOD = "Arith.Multiply"
ARGUMENT = {"Num1": 6, "Num2": 7}
CALL_GAP = 0.02
"""Seconds between two calls of the load."""


def _now() -> float:
    return reactor.seconds()  # type: ignore[attr-defined,no-any-return]


class Load:
    """Calls one after another until :meth:`stop`; records every outcome."""

    def __init__(self, xclient: XClient) -> None:
        self._xclient = xclient
        self.answers = 0
        self.errors: list[GeeRPCError] = []
        self._stopping = False
        self._running: Deferred[None] | None = None

    def start(self) -> None:
        self._running = Deferred.fromCoroutine(self._work())

    async def _work(self) -> None:
        while not self._stopping:
            try:
                answer = await self._xclient.call(METHOD, ARGUMENT, timeout=3)
            except GeeRPCError as error:
                self.errors.append(error)
            else:
                assert answer == 42, answer
                self.answers += 1
            await deferLater(reactor, CALL_GAP, lambda: None)

    async def stop(self) -> None:
        self._stopping = True
        if self._running is not None:
            running, self._running = self._running, None
            await running


REGISTERED = rb"etcd: (tcp@127\.0\.0\.1:\d+) registered as"
"""What a ``twistd geerpc --etcd`` server logs once registered; group 1: its address."""


def spawn_servers(
    processes: Processes, endpoints: list[str], ttl: int, *args: str, count: int = 2
) -> list[Twistd]:
    """``count`` ``twistd geerpc`` servers registering themselves in etcd,
    each on a port of its own choosing (``args``: more options)."""
    return [
        processes.spawn(
            f"server {number}",
            "geerpc",
            *("--listen", "tcp:0:interface=127.0.0.1", "--registry-path", "none"),
            *("--etcd", ",".join(endpoints)),
            *("--advertise", "tcp@127.0.0.1:0", "--ttl", str(ttl)),
            *args,
        )
        for number in range(1, count + 1)
    ]


async def direct_scenario(cluster: EtcdCluster, workdir: str) -> dict[str, Any]:
    baseline = ReactorBaseline()
    processes = Processes(workdir)
    etcd = EtcdClient(reactor, cluster.endpoints, request_timeout=2)
    discovery = EtcdDiscovery(etcd, reactor)
    listing = Listing(discovery)  # type: ignore[arg-type]
    xclient: XClient | None = None
    load: Load | None = None
    try:
        spawned = spawn_servers(processes, cluster.endpoints, TTL)
        servers = await registered(spawned, REGISTERED)
        addresses = sorted(servers)
        victim, survivor = addresses

        # 1. Both listed (pushed by the watch), both called.
        discovery.startService()
        await discovery.ready()
        await listing.until(lambda listed: listed == addresses, STARTUP_DEADLINE, "both listed")
        xclient = XClient(
            discovery,
            lambda address: connect(reactor, address, connect_timeout=2),
            reactor,
            selector=RoundRobinSelect(),
            mode=FailMode.FAIL_OVER,
            idempotent={METHOD},
        )
        for _ in range(10):
            assert await xclient.call(METHOD, ARGUMENT, timeout=3) == 42
        assert dict(xclient.calls_sent) == {victim: 5, survivor: 5}, xclient.calls_sent

        # 2. SIGKILL one, with calls going on; measure until discovery drops it.
        load = Load(xclient)
        load.start()
        await deferLater(reactor, 0.2, lambda: None)  # the load is under way
        before = dict(xclient.calls_sent)
        killed_at = _now()
        servers[victim].kill()
        dropped_at = await listing.until(
            lambda listed: victim not in listed, TTL + SLACK + 10, f"dropping {victim}"
        )
        drop = dropped_at - killed_at
        await deferLater(reactor, 0.2, lambda: None)  # calls after the drop, too
        await load.stop()
        assert discovery.servers() == [survivor], discovery.servers()
        assert load.errors == [], load.errors
        assert load.answers > 0
        sent = {
            address: xclient.calls_sent[address] - before.get(address, 0) for address in addresses
        }
        assert sent[survivor] >= load.answers // 2, (sent, load.answers)
        assert TTL - PERIOD - 0.25 <= drop <= TTL + SLACK, (drop, TTL + SLACK)

        # 3. SIGTERM the other: its lease is revoked, it leaves at once.
        termed_at = _now()
        os.kill(servers[survivor].pid, signal.SIGTERM)
        left_at = await listing.until(
            lambda listed: survivor not in listed, TTL + SLACK + 10, f"dropping {survivor}"
        )
        leave = left_at - termed_at
        await servers[survivor].wait_for(rb"etcd: " + survivor.encode() + rb" deregistered", 5)
        await servers[survivor].ended
        assert leave < TTL / 2, (leave, TTL)
        assert discovery.servers() == []
        return {
            "ttl": TTL,
            "sigkill_drop": round(drop, 3),
            "bound": TTL + SLACK,
            "sigterm_drop": round(leave, 3),
            "calls_during_kill": load.answers,
        }
    finally:
        if load is not None:
            await load.stop()
        if xclient is not None:
            await xclient.close()
        discovery.stopService()
        await etcd.close()
        await processes.close()
        await baseline.settled()


def _run(cluster: EtcdCluster, workdir: str) -> Deferred[Any]:
    # On the next reactor turn, once trial has set its own timeout call: the
    # scenario's baseline then includes it.
    d = deferLater(reactor, 0, lambda: None)
    d.addCallback(lambda _: ensureDeferred(direct_scenario(cluster, workdir)))
    return d.addCallback(lambda measured: print("direct etcd:", measured))


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_sigkilled_server_leaves_discovery_within_ttl(tmp_path: Path) -> None:
    workdir = tmp_path / "servers"
    workdir.mkdir()
    with EtcdCluster.start(tmp_path) as cluster:
        measured = await direct_scenario(cluster, str(workdir))
    print("direct etcd:", measured)


class DirectEtcdTrialTests(TestCase):
    """The same scenario for ``python -m twisted.trial``; pytest skips this
    class (trial's reactor-spinning TestCase does not mix with pytest-twisted)."""

    __test__ = False

    def test_sigkilled_server_leaves_discovery_within_ttl(self) -> Deferred[Any]:
        cluster = EtcdCluster.start(members=1)
        self.addCleanup(cluster.stop)
        workdir = self.mktemp()
        os.makedirs(workdir)
        return _run(cluster, workdir)
