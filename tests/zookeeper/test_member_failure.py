"""
Losing ZooKeeper, on a real 3-member ensemble (shared by this module's
scenario, run in order):

1. **The member in use killed**: two ``twistd geerpc --zookeeper M0,M1,M2
   --advertise ...`` servers; a :class:`~txgeerpc.zookeeper.ZooKeeperDiscovery`
   whose client tries member 0 first (``randomize_hosts=False``) feeding an
   XClient.  Once both servers are listed and the discovery's session is on
   member 0, member 0 is SIGKILLed.  For 3 session timeouts calls keep going;
   halfway a fake server (``tcp@127.0.0.1:1``) is created through the
   survivors, then deleted: the discovery must see both changes.  Then: its
   reports were exactly both + the fake, both (no live server ever left);
   every call succeeded; both servers' nodes are still there, of the session
   they registered with (kazoo moved the sessions to the survivors); the
   discovery's session moved off member 0.
2. **ZooKeeper unreachable**: member 0 restarted; a second discovery whose
   client knows member 1 only lists both servers, then member 1 is frozen
   (SIGSTOP) for longer than the session timeout, and a fake server is
   registered through the others meanwhile: the discovery keeps its last
   list all along (its listings fail, it says so once).  Member 1 thawed:
   its session expired, kazoo starts a new one, the discovery lists again
   and catches up (the fake is listed).

Servers get SIGTERM by PID (and delete their nodes); every client is closed
(kazoo's threads stopped) and the reactor is left as it was found.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater

from tests._processes import STARTUP_DEADLINE
from tests._zookeeper import ZooKeeperEnsemble
from tests.etcd.test_member_failure import ARGUMENT, METHOD, Load
from tests.integration.test_cluster import Listing, Processes, ReactorBaseline, registered
from tests.zookeeper.test_direct_zookeeper import SESSION, spawn_servers
from txgeerpc import connect
from txgeerpc.selection import RoundRobinSelect
from txgeerpc.xclient import FailMode, XClient
from txgeerpc.zookeeper import ZooKeeperClient, ZooKeeperDiscovery

LOSS_WINDOW = 3 * SESSION
FAKE = "tcp@127.0.0.1:1"
SEEN_WITHIN = 5.0
PREFIX = "/failure/servers/"
_REGISTERED = rb"zookeeper: (tcp@127\.0\.0\.1:\d+) registered as \S+ \(session ([0-9a-f]+)\)"


def _now() -> float:
    return reactor.seconds()  # type: ignore[attr-defined,no-any-return]


def _pause(seconds: float) -> Deferred[None]:
    return deferLater(reactor, max(0.0, seconds), lambda: None)


async def _until(condition: Any, what: str, timeout: float) -> float:
    start = _now()
    while not condition():
        assert _now() - start < timeout, f"not within {timeout}s: {what}"
        await _pause(0.01)
    return _now()


async def member_lost(ensemble: ZooKeeperEnsemble, workdir: str) -> dict[str, Any]:
    baseline = ReactorBaseline()
    processes = Processes(workdir)
    victim = ensemble.servers[0]
    zookeeper = ZooKeeperClient(
        reactor, ensemble.hosts, session_timeout=SESSION, request_timeout=1, randomize_hosts=False
    )
    survivors = ZooKeeperClient(
        reactor, [s.address for s in ensemble.servers[1:]], session_timeout=SESSION
    )
    discovery = ZooKeeperDiscovery(zookeeper, reactor, prefix=PREFIX)
    listing = Listing(discovery)  # type: ignore[arg-type]
    second: ZooKeeperClient | None = None
    second_discovery: ZooKeeperDiscovery | None = None
    frozen = None
    xclient: XClient | None = None
    load: Load | None = None
    try:
        spawned = spawn_servers(processes, ensemble.hosts, prefix=PREFIX)
        servers = await registered(spawned, _REGISTERED)
        addresses = sorted(servers)

        # 1. Both listed, the discovery's session on member 0; kill member 0.
        discovery.startService()
        await discovery.ready()
        await listing.until(lambda listed: listed == addresses, STARTUP_DEADLINE, "both listed")
        assert zookeeper.server == victim.address, (zookeeper.server, victim)
        xclient = XClient(
            discovery,
            lambda address: connect(reactor, address, connect_timeout=2),
            reactor,
            selector=RoundRobinSelect(),
            mode=FailMode.FAIL_OVER,
            idempotent={METHOD},
        )
        for _ in range(4):
            assert await xclient.call(METHOD, ARGUMENT, timeout=3) == 42
        changes_before = len(listing.changes)
        was_leader = victim.mode() == "leader"
        lost_at = _now()
        victim.kill()
        load = Load(xclient, lost_at + LOSS_WINDOW)
        load.start()

        await _pause(lost_at + LOSS_WINDOW / 2 - _now())
        fake = PREFIX + FAKE
        assert await survivors.create(fake, b"", ephemeral=True)
        put_at = _now()
        seen_at = await listing.until(lambda listed: FAKE in listed, SEEN_WITHIN, "fake listed")
        assert await survivors.delete(fake)
        deleted_at = _now()
        gone_at = await listing.until(lambda listed: FAKE not in listed, SEEN_WITHIN, "fake gone")

        assert load.running is not None
        await load.running
        changes = listing.changes[changes_before:]
        timeline = [(round(at - lost_at, 3), listed) for at, listed in changes]
        assert [listed for _, listed in changes] == [sorted([*addresses, FAKE]), addresses], (
            timeline
        )
        assert load.errors == [], load.errors
        assert load.answers > 0
        assert zookeeper.server not in (None, victim.address), zookeeper.server
        for address, server in servers.items():
            sessions = [
                int(match.group(2), 16)
                for match in re.finditer(_REGISTERED, server.output)
                if match.group(1).decode() == address
            ]
            found = await survivors.get(PREFIX + address)
            assert found is not None, f"{address}: node gone\n{server.log()}"
            assert found[1].ephemeral_owner == sessions[-1], (found, sessions, server.log())
        killed = {
            "member_0_was_leader": was_leader,
            "calls": load.answers,
            "fake_listed_after_create": round(seen_at - put_at, 3),
            "fake_dropped_after_delete": round(gone_at - deleted_at, 3),
            "reports_after_loss": timeline,
        }

        # 2. ZooKeeper unreachable: a discovery on member 1 only, member 1 frozen.
        victim.restart()
        ensemble.wait_ready()
        member = ensemble.servers[1]
        second = ZooKeeperClient(
            reactor, member.address, session_timeout=SESSION, request_timeout=1
        )
        second_discovery = ZooKeeperDiscovery(second, reactor, prefix=PREFIX, max_retry=1)
        second_listing = Listing(second_discovery)  # type: ignore[arg-type]
        second_discovery.startService()
        await second_discovery.ready()
        assert second_discovery.servers() == addresses
        sessions_before = second.sessions
        member.freeze()
        frozen = member
        frozen_at = _now()
        others = ZooKeeperClient(
            reactor, [ensemble.servers[0].address, ensemble.servers[2].address], request_timeout=5
        )
        try:
            assert await others.create(fake, b"")
        finally:
            await others.close()
        await _until(lambda: second_discovery.failures >= 1, "a failed listing", 10)
        await _pause(frozen_at + SESSION + 1 - _now())
        assert second_discovery.servers() == addresses  # the last list, kept
        assert second_listing.changes[-1][1] == addresses
        member.thaw()
        frozen = None
        thawed_at = _now()
        await second_listing.until(
            lambda listed: listed == sorted([*addresses, FAKE]), 20, "catching up"
        )
        caught_up = _now() - thawed_at
        assert second.sessions > sessions_before, second.sessions  # a new session
        assert await survivors.delete(fake)

        # Clean stops: each server deletes its node, the discovery sees both go.
        for server in servers.values():
            os.kill(server.pid, signal.SIGTERM)
        for address, server in servers.items():
            await server.wait_for(rb"zookeeper: " + address.encode() + rb" deregistered", 10)
        await listing.until(lambda listed: listed == [], 10, "both servers gone")
        await gatherResults([server.ended for server in servers.values()])
        return {
            **killed,
            "unreachable_for": round(thawed_at - frozen_at, 3),
            "caught_up_after_thaw": round(caught_up, 3),
        }
    finally:
        if frozen is not None:
            frozen.thaw()
        if load is not None:
            await load.stop()
        if xclient is not None:
            await xclient.close()
        await processes.close()
        discovery.stopService()
        if second_discovery is not None:
            second_discovery.stopService()
        await zookeeper.close()
        await survivors.close()
        if second is not None:
            await second.close()
        await baseline.settled()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_member_in_use_killed_then_zookeeper_unreachable(
    ensemble: ZooKeeperEnsemble, tmp_path: Path
) -> None:
    workdir = tmp_path / "servers"
    workdir.mkdir()
    print("zookeeper member lost:", await member_lost(ensemble, str(workdir)))
